"""Drift reports, preflight results, data lineage, run resolution and LLM regression
alerts through a tracking server (trackserver/data_more_routes.py). The client computes
(drift statistics, checks, scores); only results are sent. Every write is idempotent: a
drift report carries its id, an event its key, so a request repeated after a lost answer
stores nothing twice."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import InvalidInputError, RunNotFoundError
from .api import RemoteStore
from .data import _call, _finite


def _json(obj: Any) -> Any:
    """JSON-able copy (NaN/inf as null, other values as their str(), as stored locally)."""
    return _finite(json.loads(json.dumps(obj, default=str)))


def run_ref(run: Any) -> str | None:
    """The reference the server resolves for `run` (a Run, id, prefix or name), or None
    (None means the active run here; False or no active run: no run)."""
    from ..tracking.api import active_run
    from ..tracking.run import Run

    if run is None:
        run = active_run()
    if run is None or run is False:
        return None
    if isinstance(run, Run):
        deliver = getattr(run, "deliver_now", None)
        if deliver is not None:
            deliver()  # what it logged before reaches the server first (best effort)
        return run.id
    if not isinstance(run, str) or not run:
        raise InvalidInputError(f"a run is a Run or a run id/name, got {run!r}")
    return run


def _run_call(store: RemoteStore, method: str, path: str, body: Any, what: str) -> Any:
    """_call, with a 404 about a run raised as RunNotFoundError."""
    try:
        return _call(store, method, path, body, what)
    except LookupError as e:
        if "run" in str(e).lower() and "version" not in str(e).lower():
            raise RunNotFoundError(str(e)) from None
        raise


def save_drift(
    store: RemoteStore, report: dict[str, Any], ref_id: str, cur_id: str, run: Any
) -> str:
    """Store a drift report (data/compare.py's fields) on the server; its id."""
    uid = secrets.token_hex(6)
    body: dict[str, Any] = {
        "id": uid,
        "reference": ref_id,
        "current": cur_id,
        **{k: report[k] for k in ("n_columns", "n_drifted", "dataset_drift", "mode")},
        "drift_share": _finite(float(report["drift_share"])),
        "result": _json(report["result"]),
    }
    ref = run_ref(run)
    if ref is not None:
        body["run"] = ref
    return _run_call(store, "POST", "/api/v1/data/drift", body, "store drift reports")["id"]


def drift_reports(store: RemoteStore, run: Any, limit: int) -> list[dict[str, Any]]:
    """Stored drift reports (of `run`, or all), newest first, as store/data gives them."""
    q: dict[str, Any] = {"limit": limit}
    if run is not None:
        ref = run_ref(run)
        if ref is not None:
            q["run"] = ref
    path = "/api/v1/data/drift?" + urlencode(q)
    return _run_call(store, "GET", path, None, "read drift reports")["reports"]


def record_preflight(
    store: RemoteStore, run: Any, level: str, message: str, data: dict, passed: bool
) -> None:
    """The run's preflight event and tag (as data/checks.py records them locally)."""
    ref = run_ref(run)
    if ref is None:
        return
    body = {
        "key": uuid.uuid4().hex,
        "level": level,
        "message": message,
        "data": _json(data),
        "passed": passed,
    }
    path = f"/api/v1/runs/{quote(ref, safe='')}/preflight"
    _run_call(store, "POST", path, body, "record preflight checks")


def lineage(store: RemoteStore, run: Any) -> tuple[dict, list[dict], list[dict]]:
    """(run info, inputs, outputs) of a run's data lineage (default: active, else latest)."""
    ref = run_ref(run)
    path = "/api/v1/data/lineage" + ("?" + urlencode({"run": ref}) if ref is not None else "")
    out = _run_call(store, "GET", path, None, "read data lineage")
    return out["run"], out["inputs"], out["outputs"]


def runs_for(store: RemoteStore, version_id: str) -> list[dict[str, Any]]:
    """Runs that used or produced the data version `version_id`."""
    path = f"/api/v1/data/versions/{quote(version_id, safe='')}/runs"
    return _call(store, "GET", path, None, "read data lineage")["runs"]


def resolve_run(store: RemoteStore, ref: str) -> int:
    """The server store's id of a run given by id, unique id prefix or name."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInputError("a run id or name (a non-empty string) is required")
    path = f"/api/v1/runs/{quote(ref.strip(), safe='')}/resolve"
    return int(_run_call(store, "GET", path, None, "resolve runs")["store_id"])


def resolve_uid(store: RemoteStore, ref: str) -> str:
    """The full id of a run given by id, unique id prefix or name."""
    path = f"/api/v1/runs/{quote(str(ref).strip(), safe='')}/resolve"
    return str(_run_call(store, "GET", path, None, "resolve runs")["id"])


def add_run_event(
    store: RemoteStore,
    run_id: str,
    kind: str,
    message: str,
    level: str,
    data: dict | None,
    start: float,
    end: float | None,
) -> int:
    """An event on run `run_id` (its full id) through the server, once (a random key)."""
    body: dict[str, Any] = {
        "kind": kind,
        "message": message,
        "level": level,
        "start": start,
        "end": end,
        "key": uuid.uuid4().hex,
    }
    if data is not None:
        body["data"] = _json(data)
    path = f"/api/v1/runs/{quote(run_id, safe='')}/events"
    return int(_run_call(store, "POST", path, body, "add run events")["id"])


def alert_rows(store: RemoteStore, runs: list[Any] | None, throttle: bool) -> list[tuple]:
    """store/telemetry.list_events rows of alert (and throttle) events, newest first."""
    q: list[tuple[str, str]] = [("throttle", "true" if throttle else "false")]
    if runs is not None:
        if not runs:
            return []  # as locally: no runs, no alerts
        refs = [run_ref(r) for r in runs]
        if any(r is None for r in refs):
            raise InvalidInputError("alerts: give runs (Runs, ids or names) or None for all")
        q += [("run", str(r)) for r in refs]
    out = _run_call(store, "GET", "/api/v1/alerts?" + urlencode(q), None, "read alerts")
    return [tuple(r) for r in out["events"]]


def notebook_run(store: RemoteStore, path: str) -> tuple[str, str] | None:
    """(run id, experiment) of the newest run recorded for notebook `path`, or None."""
    try:
        out = _call(store, "GET", "/api/v1/notebook-run?" + urlencode({"path": path}), None,
                    "read runs")  # fmt: skip
    except LookupError:
        return None
    return out["id"], out["experiment"]
