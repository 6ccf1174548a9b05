"""`mj.serve(...)`: a model server in a background process, from a notebook or a script.

    with mj.serve("classifier@production", workers=2) as srv:
        srv.predict(x)          # numpy array in, numpy array out (the model's dtype)
        srv.url                 # http://127.0.0.1:PORT

The server is `mlops-jupyter serve` in a child process on the same store; it is stopped by
`srv.stop()`, at the end of a `with` block, or when the interpreter exits.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import MlopsJupyterError

_LISTEN = re.compile(r"listening on (http://\S+)")
_live: set = set()  # strong references: a server nobody holds still stops at exit


class ServeError(MlopsJupyterError):
    """The server did not start, is not ready, or refused a request."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.body = status, body


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request: (status, headers, body)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path or "/", body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _json_inputs(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_inputs(v) for k, v in x.items()}
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).tolist() if not isinstance(x, list) else x


def decode(obj: dict[str, Any]) -> Any:
    """The predictions of a JSON answer as numpy arrays of the model's dtype."""

    def one(p: Any, dt: Any) -> Any:
        if isinstance(dt, dict):
            return {k: one(p[k], dt[k]) for k in dt}
        if isinstance(dt, list):
            return tuple(one(a, d) for a, d in zip(p, dt))
        return np.asarray(p, dtype=None if dt == "string" else dt)

    return one(obj["predictions"], obj.get("dtype"))


class Server:
    """A running model server (see module doc)."""

    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path) -> None:
        self.proc, self.url, self.log_path = proc, url, log_path
        self.last_request_id: str | None = None
        _live.add(self)

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"<mlops-jupyter model server {self.url} ({state})>"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def ready(self) -> dict[str, Any]:
        """/ready's answer; raises ServeError (with the load error) when not ready."""
        status, _, body = request(self.url + "/ready", timeout=10)
        obj = json.loads(body)
        if status != 200:
            raise ServeError(f"model not ready: {obj.get('error')}", status, obj)
        return obj

    def predict(
        self,
        x: Any,
        *,
        request_id: str | None = None,
        user_id: str | None = None,
        timeout: float = 60,
    ) -> Any:
        """Predictions for a batch `x` (array, tensor, list of instances, or a dict of
        fields/columns) as numpy arrays of the model's output dtype. `user_id` (the
        X-User-Id header) keeps a user on one variant of a split."""
        rid = request_id or uuid.uuid4().hex
        body = json.dumps({"inputs": _json_inputs(x)}).encode()
        headers = {"Content-Type": "application/json", "X-Request-Id": rid}
        if user_id is not None:
            headers["X-User-Id"] = user_id
        status, _, raw = request(self.url + "/predict", "POST", body, headers, timeout)
        obj = json.loads(raw)
        if status != 200:
            raise ServeError(f"HTTP {status}: {obj.get('error')}", status, obj)
        self.last_request_id = obj.get("request_id", rid)
        return decode(obj)

    def feedback(self, request_id: str, value: Any) -> None:
        """Ground truth for an earlier request (the A/B report counts it)."""
        body = json.dumps({"request_id": request_id, "value": value}).encode()
        status, _, raw = request(
            self.url + "/feedback", "POST", body, {"Content-Type": "application/json"}
        )
        if status != 200:
            raise ServeError(f"HTTP {status}: {json.loads(raw).get('error')}", status)

    def stop(self, timeout: float = 15) -> None:
        """Stop the server (its workers flush their prediction logs first)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        _live.discard(self)


def serve(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int = 1,
    max_batch: int = 64,
    max_wait_ms: float = 5.0,
    trusted: bool = False,
    log: bool = True,
    variant: str | None = None,
    split: str | None = None,
    shadow: str | None = None,
    monitor_window: str | float = "60s",
    log_inputs: bool = False,
    wait: float = 120,
    extra_env: dict[str, str] | None = None,
    features: list[str] | str | None = None,
    entity_key: str | None = None,
) -> Server:
    """Start `mlops-jupyter serve MODEL` in the background on this session's store and wait
    until it is ready. `model`: NAME, NAME@stage, NAME@alias or NAME:version. `split`:
    several versions at once, e.g. "v3=90,v4=10" (model is then the NAME only), routed
    by the X-User-Id header (sticky) or per request; `shadow`: a version every request
    also runs on after the answer, only logged; `monitor_window`: length of the windows
    of input profiles compared with the training data (0: off), `log_inputs`: also store
    each window's sampled raw rows (see docs/serving.md); `features` ("view:feature"
    references) with `entity_key`: requests may send entity ids, filled from the online
    store (docs/features.md). Raises ModelNotFoundError for an unknown
    model/version/alias and ServeError when no variant loads (with the reason)."""
    from ..tracking import api
    from .variants import make_plan

    make_plan(model, split, shadow, variant)  # unknown names fail here, with a clear message
    env = dict(os.environ)
    if api._store_override is not None:  # set_store(...): the child uses the same store
        env["MLOPS_JUPYTER_STORE"] = os.fspath(api._store_override)
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "mlops_jupyter", "serve", model, "--host", host]
    cmd += ["--port", str(port), "--workers", str(workers), "--max-batch", str(max_batch)]
    cmd += ["--max-wait-ms", str(max_wait_ms)]
    if trusted:
        cmd.append("--trusted")
    if not log:
        cmd.append("--no-log")
    if variant:
        cmd += ["--variant", variant]
    if split:
        cmd += ["--split", split]
    if shadow:
        cmd += ["--shadow", shadow]
    cmd += ["--monitor-window", str(monitor_window)]
    if log_inputs:
        cmd.append("--log-inputs")
    if features:
        cmd += ["--features", features if isinstance(features, str) else ",".join(features)]
    if entity_key:
        cmd += ["--entity-key", entity_key]
    fd, name = tempfile.mkstemp(prefix="mlops-jupyter-serve-", suffix=".log")
    log_path = Path(name)
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    deadline = time.monotonic() + wait
    url = None
    while url is None:
        if proc.poll() is not None:
            raise ServeError(f"the server exited: {log_path.read_text().strip()[-2000:]}")
        m = _LISTEN.search(log_path.read_text(errors="replace"))
        if m:
            url = m.group(1)
        elif time.monotonic() > deadline:
            proc.kill()
            raise ServeError(f"the server did not start within {wait} s (log: {log_path})")
        else:
            time.sleep(0.05)
    srv = Server(proc, url, log_path)
    while True:
        try:
            srv.ready()
            return srv
        except ServeError as e:
            if e.status == 503 and e.body and e.body.get("error") != "model loading":
                srv.stop()
                raise
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            srv.stop()
            raise ServeError(f"the server is not ready (log: {log_path})")
        time.sleep(0.05)


@atexit.register
def _stop_all() -> None:
    for srv in list(_live):
        try:
            srv.stop(5)
        except Exception:
            pass
