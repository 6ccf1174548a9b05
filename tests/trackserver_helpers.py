"""Helpers for the tracking-server tests: start the real `mlops-jupyter server` as a
subprocess on 127.0.0.1 (a free port), make tokens with the real CLI, send requests."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m mlops_jupyter ARGS` with `env`."""
    p = subprocess.run(
        [sys.executable, "-m", "mlops_jupyter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"mlops-jupyter {args} failed ({p.returncode}): {p.stderr}")
    return p


def token(env: dict[str, str], name: str, scope: str, expires: str | None = None) -> str:
    """A new token made by `server token add` (the secret is its stdout)."""
    args = ["server", "token", "add", name, "--scope", scope]
    if expires:
        args += ["--expires", expires]
    out = cli(env, *args).stdout.strip()
    assert out.startswith("mjt_") and "\n" not in out
    return out


class Server:
    """One `mlops-jupyter server` process over the store in `env`."""

    def __init__(
        self,
        env: dict[str, str],
        tmp: Path,
        *extra: str,
        port: int | None = None,
        ctx: ssl.SSLContext | None = None,
    ):
        self.env, self.extra, self.ctx = env, extra, ctx
        self.port = port or free_port()
        self.url = f"{'https' if ctx else 'http'}://127.0.0.1:{self.port}"
        self.log = tmp / f"server-{self.port}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Server:
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_jupyter", "server", "--host", "127.0.0.1"]
            + ["--port", str(self.port), *self.extra],
            env=self.env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()}")
            try:
                if request(self.url, "GET", "/health", ctx=self.ctx)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server did not answer in {timeout}s: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL, no goodbye (a crash)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._fh.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._fh.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def request(
    base: str,
    method: str,
    path: str,
    tok: str | None = None,
    body: Any = None,
    *,
    raw: bytes | None = None,
    gz: bool = False,
    headers: dict[str, str] | None = None,
    ctx: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """(status, decoded JSON answer) of one request; errors are answers too."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = dict(headers or {})
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
        if gz:
            data = gzip.compress(data)
            hdrs["Content-Encoding"] = "gzip"
    if tok:
        hdrs["Authorization"] = f"Bearer {tok}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=60, context=ctx) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


class RemoteServer:
    """A module's tracking server over its own store (SQLite, or a new PostgreSQL database
    in the CI's PostgreSQL pass), its artifact folder and write/read/admin tokens."""

    def __init__(self, loc: Any, artifacts: Path, tmp: Path, *args: str) -> None:
        from mlops_jupyter.artifacts import open_artifacts
        from mlops_jupyter.store import open_store, tokens

        self.loc, self.artifacts = loc, artifacts
        self.store = open_store(loc)
        self.blobs = open_artifacts(artifacts)  # where the server stores files
        self.wtok = tokens.add(self.store, "writer", "write")
        self.rtok = tokens.add(self.store, "reader", "read")
        self.atok = tokens.add(self.store, "releaser", "admin")
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ)
        env.update(
            MLOPS_JUPYTER_STORE=str(loc),
            MLOPS_JUPYTER_CACHE=str(tmp / "server-cache"),
            MLOPS_JUPYTER_TELEMETRY="0",
            PYTHONPATH=os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        self.args = ("--artifacts", str(artifacts), *args)
        self.srv = Server(env, tmp, *self.args)
        self.env, self.tmp = env, tmp

    def restart(self) -> None:
        self.srv = Server(self.env, self.tmp, *self.args, port=self.srv.port).start()

    def rows(self, sql: str, *args: Any) -> list:
        return self.store.read(sql, args)


def module_remote(tmp_path_factory, request, name: str, *args: str):
    """A module-scoped fixture's body: yields a started RemoteServer, stops it after."""
    from conftest import BACKEND

    tmp = tmp_path_factory.mktemp(name)
    if BACKEND == "postgresql":
        loc: Any = request.getfixturevalue("pg_server").new_database()
    else:
        loc = tmp / "store.db"
    r = RemoteServer(loc, tmp / "artifacts", tmp, *args)
    r.srv.start()
    yield r
    r.srv.stop()


def use_remote(monkeypatch, remote: RemoteServer, tmp_path: Path) -> RemoteServer:
    """This test process logs through `remote` with its write token (own spool and cache)."""
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", remote.srv.url)
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", remote.wtok)
    monkeypatch.setenv("MLOPS_JUPYTER_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(tmp_path / "client-cache"))
    return remote
