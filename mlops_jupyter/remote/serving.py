"""Model serving through a tracking server (trackserver/serving_routes.py): what a serving
process writes and reads, and the rollout, A/B and drift calls of a remote client.

A serving process over the server (`MLOPS_JUPYTER_STORE=http(s)://...`) gets a
`ServingRemote` where it would have a store. Its writes come from the background threads
that write to a local store (the prediction log every 0.1 s, a window's profile when it
closes, feedback in a thread of the event loop's executor), so a request's path costs what
it costs locally; a request to a server that cannot be reached fails at once or after
TIMEOUT_S (a hung server), never on a request's path. Its reads (the rollout layout each
worker polls about once a second) are cached for CACHE_S."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import InvalidInputError, StoreError
from .client import Client, ServerRefused, ServerUnavailable, token

log = logging.getLogger("mlops_jupyter.serving")
CACHE_S = 0.5  # a rollout read this recently is not read again (workers poll every 1 s)
TIMEOUT_S = 10.0  # a hung server holds a background thread this long at most


def _q(name: str) -> str:
    return quote(name, safe="")


def _finite(obj: Any) -> Any:
    from .data import _finite as finite

    return finite(json.loads(json.dumps(obj, default=float)))


class ServingRemote:
    """What a serving process uses as its store over a tracking server."""

    remote_serving = True
    root = None

    def __init__(self, url: str) -> None:
        from .. import config

        self.url = url.rstrip("/")
        self.location = config.redact_url(self.url)
        self._local = threading.local()  # one connection per thread (Client is not shared)
        self._cache: dict[str, tuple[float, Any]] = {}

    @property
    def client(self) -> Client:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = Client(self.url, timeout=TIMEOUT_S)
        return c

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; a refused token or request raises a StoreError naming the scope."""
        try:
            return self.client.request(method, path, body)
        except ServerRefused as e:
            raise _refused(self.client, e) from None

    def log_predictions(self, rows: list[tuple]) -> int:
        """Append prediction rows (store/serving.PREDICTION_COLS order)."""
        out = self.call("POST", "/api/v1/serving/predictions", {"rows": _finite(rows)})
        return int(out["stored"])

    def add_feedback(self, request_id: str, value: Any, ts: float | None = None) -> None:
        """Ground truth of an answered request."""
        body: dict[str, Any] = {"request_id": request_id, "value": value}
        if ts is not None:
            body["ts"] = ts
        self.call("POST", "/api/v1/serving/feedback", body)

    def save_window(self, row: dict[str, Any]) -> bool:
        """Store a closed input window and, when it drifted, its alert (one transaction on
        the server; a window sent again is stored once)."""
        out = self.call("POST", "/api/v1/serving/profiles", {"row": _finite(row)})
        return bool(out["stored"])

    def reference_candidates(self, model: str, version: int) -> list:
        """The profiled data versions the run of `version` read (its training data)."""
        from ..data.catalog import _from_row

        path = f"/api/v1/serving/models/{_q(model)}/references?version={int(version)}"
        return [_from_row(d) for d in self.call("GET", path)["versions"]]

    def rollout(self, model: str) -> dict[str, Any] | None:
        """The stored rollout of `model` (or None), read at most every CACHE_S."""
        now = time.monotonic()
        hit = self._cache.get(model)
        if hit is not None and now - hit[0] < CACHE_S:
            return hit[1]
        row = self.call("GET", f"/api/v1/serving/rollouts/{_q(model)}")["rollout"]
        self._cache[model] = (now, row)
        return row

    def show_row(self, model: str) -> dict[str, Any] | None:
        """The stored rollout of `model` (or None), read now."""
        self._cache.pop(model, None)
        return self.rollout(model)

    def record_refusal(
        self, model: str, generation: int, worker: str, layout: str, failed: list[dict]
    ) -> bool:
        """A layout this worker could not load (once per model, generation and worker)."""
        body = {
            "generation": int(generation),
            "worker": worker,
            "layout": layout,
            "failed": _finite(failed),
        }
        path = f"/api/v1/serving/rollouts/{_q(model)}/refusals"
        return bool(self.call("POST", path, body)["recorded"])

    def change(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """Change the rollout (admin): body {"action": split|canary|rollback|promote, ...}."""
        from ..registry import _user

        body = {**body, "user": _user()}
        self._cache.pop(model, None)
        return self.call("POST", f"/api/v1/serving/rollouts/{_q(model)}", body)["rollout"]

    def show(self, model: str) -> dict[str, Any]:
        """`rollout show`'s answer."""
        return self.call("GET", f"/api/v1/serving/rollouts/{_q(model)}/show")

    def refusals(self, model: str, generation: int) -> list[dict[str, Any]]:
        path = f"/api/v1/serving/rollouts/{_q(model)}/refusals?generation={int(generation)}"
        return self.call("GET", path)["refusals"]

    def tick(self, model: str) -> dict[str, Any] | None:
        """One step of the canary controller, run by the server on its store."""
        return self.call("POST", f"/api/v1/serving/rollouts/{_q(model)}/tick", {})["tick"]

    def __repr__(self) -> str:
        return f"ServingRemote({self.location!r})"


def _refused(client: Client, e: ServerRefused) -> StoreError:
    if e.status == 404:
        from ..registry import ModelNotFoundError

        return ModelNotFoundError(str(e))
    if e.status == 401:
        from .files import token_refused

        return token_refused(client.shown, e)
    if e.status == 403:
        return StoreError(
            f"the token in MLOPS_JUPYTER_TOKEN may not do this on the tracking server "
            f"{client.shown} (serving's writes need scope write, rollout changes admin): {e}"
        )
    if e.status == 400:
        return InvalidInputError(str(e).split(": 400 ", 1)[-1])
    return e


_handles: dict[str, ServingRemote] = {}
_lock = threading.Lock()


def _after_fork() -> None:
    """In a forked serving worker or controller: no connection of the parent's is used
    (two processes reading answers from one socket would take each other's)."""
    global _lock
    _lock = threading.Lock()
    _handles.clear()
    from . import api

    for s in list(api._stores.values()):
        s.client._conn = None  # the parent's socket stays the parent's
        s.client._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def handle(url: str) -> ServingRemote:
    """The process-wide ServingRemote of server `url`."""
    with _lock:
        h = _handles.get(url.rstrip("/"))
        if h is None:
            if not token():
                raise StoreError(
                    "MLOPS_JUPYTER_TOKEN is not set: the tracking server needs a token "
                    "(serving needs scope write)"
                )
            h = _handles[url.rstrip("/")] = ServingRemote(url)
        return h


def serving_store() -> Any:
    """The store a serving process writes to: the session's store, or over a tracking
    server its routes (a ServingRemote)."""
    from ..tracking.api import current_store, remote_url

    url = remote_url()
    if url is not None:
        return handle(url)
    return current_store()


def outcomes(url: str, model: str, since: float | None, until: float | None) -> dict:
    """store/serving.outcomes from the server: what mj.ab_report counts."""
    q = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
    path = f"/api/v1/serving/models/{_q(model)}/outcomes"
    if q:
        path += "?" + urlencode(q)
    return handle(url).call("GET", path)["outcomes"]


def ab_inputs(
    url: str, model: str, since: float | None, until: float | None, metric: str | None
) -> tuple[dict[str, Any] | None, dict[str, set[int]]] | None:
    """serving/report.ab_inputs on the server's store: (values or None where they need the
    full read, versions). None from a server without the route (the full read then)."""
    q = {k: v for k, v in (("since", since), ("until", until), ("metric", metric)) if v is not None}
    path = f"/api/v1/serving/models/{_q(model)}/ab_inputs"
    if q:
        path += "?" + urlencode(q)
    h = handle(url)
    try:
        out = h.client.request("GET", path)
    except ServerRefused as e:
        if e.status == 404:
            return None  # a server older than the route
        raise _refused(h.client, e) from None
    versions = {v: set(vs) for v, vs in out["versions"].items()}
    if out["binary"] is not None:
        return {v: (int(k), int(n)) for v, (k, n) in out["binary"].items()}, versions
    if out["values"] is not None:
        return {v: [float(x) for x in xs] for v, xs in out["values"].items()}, versions
    return None, versions


def serving_drift(
    url: str, model: str, version: int | None, reference: Any, last: int | None
) -> Any:
    """mj.serving_drift's frame, computed by the server on its store."""
    import polars as pl

    q: dict[str, Any] = {}
    if version is not None:
        q["version"] = version
    if reference is not None:
        q["reference"] = str(reference)
    if last is not None:
        q["last"] = last
    path = f"/api/v1/serving/models/{_q(model)}/drift"
    out = handle(url).call("GET", path + ("?" + urlencode(q) if q else ""))
    return pl.read_ipc_stream(io.BytesIO(base64.b64decode(out["data"])))


def watch(url: str, model: str, interval: float = 1.0) -> None:
    """The canary controller of a serving process over the server: one tick a second,
    each run by the server on its store (compare-and-set, as locally)."""
    h = handle(url)
    while True:
        try:
            h.tick(model)
        except (ServerUnavailable, StoreError) as e:  # the server away: the next tick
            log.warning("rollout controller of %s: %s", model, e)
        time.sleep(interval)
