"""The tracking API over a tracking server: the store-like handle, the Run subclass whose
params/tags go through the sender, and the reads (runs, metrics, get_run)."""

from __future__ import annotations

import atexit
import base64
import json
import socket
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from .. import config
from ..errors import InvalidInputError, RunNotFoundError, StoreError
from ..store import runs as rstore
from ..tracking.run import Run
from . import unsupported
from .client import Client, ServerRefused, token
from .sender import RemoteWriter, remote_writer

if TYPE_CHECKING:
    import polars as pl


class RemoteStore:
    """What `run.store` is for a run logged through a tracking server. It is not the
    storage contract: anything but the URL refuses with RemoteUnsupportedError."""

    root = None

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.key = "remote:" + self.url
        self.client = Client(self.url)  # for calls from user threads (a lock inside)

    def unavailable(self, e: BaseException) -> bool:
        from .client import ServerUnavailable

        return isinstance(e, ServerUnavailable)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise unsupported(f"the store's {name!r}", self.url)

    def __repr__(self) -> str:
        return f"RemoteStore({config.redact_url(self.url)!r})"


_stores: dict[str, RemoteStore] = {}
_stores_lock = threading.Lock()


def remote_store(url: str) -> RemoteStore:
    """The process-wide handle of server `url`."""
    with _stores_lock:
        s = _stores.get(url.rstrip("/"))
        if s is None:
            s = _stores[url.rstrip("/")] = RemoteStore(url)
            atexit.register(s.client.close)
        return s


class RemoteRun(Run):
    """A run logged through a tracking server: log calls exactly as locally; params and
    tags are queued for the sender; artifacts and events go through remote/files.py."""

    _writer: RemoteWriter

    def _kv(self, table: str, items: dict[str, Any]) -> None:
        encoded = rstore.encode_items(items, table)  # the local checks, before anything is sent
        self._writer.add_kv(self._rid, table, {k: json.loads(v) for k, v in encoded})

    def queue_entry(self, field: str, items: dict[str, Any]) -> None:
        """Queue `items` under `field` of this run's next ingest entry (the sender takes
        any field of an entry: params, tags, cells, cell links)."""
        self._writer.add_kv(self._rid, field, items)

    def deliver_now(self) -> bool:
        """Send what this process queued for the server now (points, ends, entries);
        False when the server cannot be reached or refuses the token."""
        return self._writer.deliver_now()

    def log_params(self, params: dict[str, Any], wait: bool = True) -> None:
        """Record parameters (sent with the next batch, whatever `wait` says)."""
        self._check_open()
        self._kv("params", params)

    def set_tags(self, tags: dict[str, Any], wait: bool = True) -> None:
        """Set tags (sent with the next batch, whatever `wait` says)."""
        self._kv("tags", tags)

    def log_artifact(self, path: Any, name: str | None = None) -> str:
        """Upload a file or folder through the server (remote/files.py), as locally."""
        from . import files

        return files.log_artifact(self, path, name)

    def artifact_path(self, name: str) -> Any:
        """A verified local copy of artifact `name` (downloaded into the cache)."""
        from . import files

        return files.artifact_path(self.store, self.id, name)

    def add_event(
        self,
        kind: str,
        message: str,
        level: str = "info",
        data: dict | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> int:
        """Record an event on the server (after what was logged before it); its id."""
        from . import files

        return files.add_event(self, kind, message, level, data, start, end)

    @property
    def store_id(self) -> int:
        raise unsupported("Run.store_id (store-level functions)", self.store.url)


def _auth_error(store: RemoteStore, e: ServerRefused) -> StoreError:
    if e.status == 401:
        return StoreError(
            f"the tracking server {store.client.shown} refused the token in "
            f"MLOPS_JUPYTER_TOKEN (missing, unknown, revoked or expired): {e}"
        )
    if e.status == 403:
        return StoreError(
            f"the token in MLOPS_JUPYTER_TOKEN may not log to the tracking server "
            f"{store.client.shown} (a read token? logging needs scope write): {e}"
        )
    return e


def start_run(
    url: str,
    name: str | None,
    experiment: str,
    params: dict[str, Any] | None,
    tags: dict[str, Any] | None,
    parent: Run | str | None,
    forget: Any,
    prev: Run | str | None = None,
) -> RemoteRun:
    """Start a run on the server (POST /api/v1/runs) and return it (not yet pushed).
    `prev`: the earlier attempt (a RemoteRun or a run id) this run follows."""
    store = remote_store(url)
    if not token():
        raise StoreError(
            f"MLOPS_JUPYTER_TOKEN is not set: the tracking server {store.client.shown} "
            "needs a token (mlops-jupyter server token add NAME --scope write)"
        )
    body: dict[str, Any] = {"experiment": experiment, "host": socket.gethostname()}
    if name is not None:
        body["name"] = name
    for k, items in (("params", params), ("tags", tags)):
        if items:
            body[k] = {kk: json.loads(v) for kk, v in rstore.encode_items(items, k)}
    if isinstance(parent, RemoteRun):
        body["parent"] = parent.id
    elif isinstance(parent, str):
        body["parent"] = parent
    if isinstance(prev, RemoteRun):
        body["prev_run"] = prev.id
    elif isinstance(prev, str):
        body["prev_run"] = prev
    try:
        out = store.client.request("POST", "/api/v1/runs", body)
    except ServerRefused as e:
        raise _auth_error(store, e) from None
    w = remote_writer(store)
    rid = w.register(out["id"])
    run_parent = parent if isinstance(parent, RemoteRun) else None
    run = RemoteRun(store, w, rid, out["id"], out["name"], experiment, run_parent, forget)
    w.add_run(rid)
    return run


def _get(url: str, path: str) -> Any:
    store = remote_store(url)
    # this process's own points first, as on a local store; the first use also replays the
    # spools that earlier processes left for this server
    remote_writer(store).flush()
    try:
        return store.client.request("GET", path)
    except ServerRefused as e:
        if e.status == 404:
            raise RunNotFoundError(str(e)) from None
        if e.status in (401, 403):
            raise _auth_error(store, e) from None
        raise


def _frame(out: dict) -> pl.DataFrame:
    import io

    import polars as pl

    return pl.read_ipc_stream(io.BytesIO(base64.b64decode(out["data"])))


def runs(url: str, experiment: str | None, status: str | None, include_system: bool) -> Any:
    """mj.runs() from the server (GET /api/v1/frames/runs)."""
    q: dict[str, Any] = {"include_system": "true" if include_system else "false"}
    if experiment is not None:
        q["experiment"] = experiment
    if status is not None:
        q["status"] = status
    return _frame(_get(url, "/api/v1/frames/runs?" + urlencode(q)))


def _refs(run_ids: Any) -> list[str] | None:
    if run_ids is None:
        return None
    from ..tracking.api import run_refs

    out = []
    for r in run_refs(run_ids):
        if isinstance(r, Run):
            out.append(r.id)
        elif isinstance(r, str) and r:
            out.append(r)
        else:
            raise InvalidInputError(f"a run is a Run or a run id/name, got {r!r}")
    return out


def metrics(url: str, run_ids: Any, keys: list[str] | None) -> Any:
    """mj.metrics() from the server (GET /api/v1/frames/metrics)."""
    q: list[tuple[str, str]] = []
    refs = _refs(run_ids)
    if refs is not None:
        if not refs:
            q.append(("none", "true"))
        q += [("run", r) for r in refs]
    q += [("key", k) for k in keys or []]
    if keys is not None and not keys:
        q.append(("nokeys", "true"))
    return _frame(_get(url, "/api/v1/frames/metrics?" + urlencode(q)))


def get_run(url: str, ref: str) -> dict[str, Any]:
    """mj.get_run() from the server (GET /api/v1/runs/{ref}: id, prefix or name)."""
    if not isinstance(ref, str) or not ref:
        raise InvalidInputError("a run id or name (a non-empty string) is required")
    return _get(url, "/api/v1/runs/" + quote(ref, safe=""))
