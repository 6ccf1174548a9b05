"""Data versions and telemetry episodes through a tracking server (trackserver/
data_routes.py). The data stays here: only the record (fingerprint, profile, schema, sizes)
is sent. Writes are idempotent on the server (one version per fingerprint, one link per
run, version and role), so a request repeated after a lost answer stores nothing twice."""

from __future__ import annotations

import json
import math
import time
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import StoreError
from .api import RemoteStore
from .client import ServerRefused, ServerUnavailable
from .files import _refused

RETRY_S = 30.0  # an unreachable server is retried this long, then StoreError


def _finite(obj: Any) -> Any:
    """JSON-able copy with NaN/inf as null (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _call(
    store: RemoteStore, method: str, path: str, body: Any, what: str, retry_s: float = RETRY_S
) -> Any:
    """One request, retried for `retry_s` while the server is unreachable (the writes are
    idempotent)."""
    deadline = time.monotonic() + retry_s
    delay = 0.2
    while True:
        try:
            return store.client.request(method, path, body)
        except ServerRefused as e:
            if e.status == 404:
                from ..store.data import DataVersionNotFoundError

                raise DataVersionNotFoundError(str(e)) from None
            raise _refused(store, e, what) from None
        except ServerUnavailable as e:
            if time.monotonic() + delay > deadline:
                raise StoreError(f"cannot {what}: {e}") from None
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def _run_ref(run: Any) -> str:
    from ..tracking.run import Run

    return run.id if isinstance(run, Run) else str(run)


def save_version(
    store: RemoteStore,
    rec: dict[str, Any],
    role: str | None,
    run: Any,
    name: str | None,
    retry_s: float = RETRY_S,
) -> tuple[dict[str, Any], bool]:
    """Store `rec` on the server and link it to `run` (a Run or run ref; None: no link).
    Returns (the stored version as store/data.get_version gives it, whether it was new)."""
    # no flush first: a run logged here was created on the server when it started
    body: dict[str, Any] = {"record": _finite(json.loads(json.dumps(rec, default=str)))}
    if role and run is not None:
        body["role"] = role
        body["run"] = _run_ref(run)
    if name is not None:
        body["name"] = name
    what = "record data versions"
    out = _call(store, "POST", "/api/v1/data/versions", body, what, retry_s)
    return out["version"], bool(out["new"])


def has_profile(store: RemoteStore, fingerprint: str, retry_s: float = RETRY_S) -> bool:
    """Whether the server holds a version with this fingerprint and its profile."""
    path = "/api/v1/data/profiled?" + urlencode({"fingerprint": fingerprint})
    return bool(_call(store, "GET", path, None, "read data versions", retry_s)["profiled"])


def get_version(store: RemoteStore, ref: str) -> dict[str, Any]:
    """One version (id, id prefix, fingerprint or name) with its profile."""
    path = "/api/v1/data/versions/" + quote(ref, safe="")
    return _call(store, "GET", path, None, "read data versions")


def list_versions(store: RemoteStore, name: str | None, limit: int) -> list[dict[str, Any]]:
    """Versions, newest first, as store/data.list_versions gives them."""
    q: dict[str, Any] = {"limit": limit}
    if name is not None:
        q["name"] = name
    out = _call(store, "GET", "/api/v1/data/versions?" + urlencode(q), None, "read data versions")
    return out["versions"]


def close_event(
    run: Any, event_id: int, end: float, data: dict | None = None, retry_s: float = RETRY_S
) -> None:
    """Set the end time (and final data) of an event of a run logged through the server."""
    body: dict[str, Any] = {"end": end}
    if data is not None:
        body["data"] = _finite(json.loads(json.dumps(data, default=str)))
    path = f"/api/v1/runs/{quote(run.id, safe='')}/events/{int(event_id)}/end"
    _call(run.store, "POST", path, body, "close run events", retry_s)
