"""Queries behind the REST API and the JupyterLab sidebar: filtered/sorted/paginated runs,
server-side decimated metric series, comparisons, telemetry, alerts, data versions, drift.
The runs list's filter language and paging checks live in run_filters.py (re-exported here).

Everything returns plain JSON-safe Python data (NaN/inf become None)."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from ..errors import InvalidInputError
from . import query as q
from . import runs as rstore
from .db import Store
from .run_filters import (  # noqa: F401  (re-exported: callers import them from here)
    MAX_CONDITIONS,
    MAX_OFFSET,
    check_page,
    filter_sql,
    like_pattern,
    parse_condition,
)
from .series import MAX_POINTS, decimate, series, uid_of  # noqa: F401  (routes use them)

log = logging.getLogger(__name__)

SORTABLE = {
    "start_time": "r.start_time",
    "end_time": "r.end_time",
    "name": "lower(r.name)",
    "status": "r.status",
    "experiment": "lower(e.name)",
    "duration": "(coalesce(r.end_time, :now) - r.start_time)",
    "metric": "km.last_value",
}
_NULLABLE = {"end_time", "name", "metric"}
_KM_JOIN = "LEFT JOIN metric_summary km ON km.run_id = r.id AND km.key_id = :kid "
MAX_LIMIT = 1000
_RECONCILE_EVERY = 10.0
_last_reconcile: dict[str, float] = {}


def clean(obj: Any) -> Any:
    """Recursively replace NaN/inf floats by None so the result is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def _decode(v: str | None) -> Any:
    if v is None:
        return None
    try:
        return json.loads(v)
    except (ValueError, TypeError):
        return v


def maybe_reconcile(store: Store) -> None:
    """Mark runs of dead processes crashed, at most every few seconds per store, so the
    sidebar never shows a dead kernel's run as running."""
    key = store.key
    now = time.monotonic()
    if now - _last_reconcile.get(key, 0.0) < _RECONCILE_EVERY:
        return
    _last_reconcile[key] = now
    try:
        from ..config import stale_after

        rstore.reconcile(store, stale_after())
    except Exception as e:  # a read endpoint must not fail because a write was refused
        log.warning("mlops: could not reconcile stale runs: %s", e)


# ------------------------------------------------------------------------- experiments


def experiments(store: Store) -> list[dict[str, Any]]:
    """Experiments with run counts, running counts and the latest start time (runs deleted
    through the MLflow API left out, as from the runs list)."""
    rows = store.read(
        "SELECT e.name, count(r.id),"
        " coalesce(sum(CASE WHEN r.status = 'running' THEN 1 ELSE 0 END), 0), max(r.start_time)"
        f" FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id AND NOT {q.DELETED_SQL}"
        " GROUP BY e.id, e.name ORDER BY max(r.start_time) DESC NULLS LAST"
    )
    return [{"name": n, "runs": c, "running": rn, "last_start": ls} for n, c, rn, ls in rows]


def metric_keys(store: Store, experiment: str | None = None, system: bool = False) -> list[str]:
    """Metric keys logged by runs (of one experiment), most used first."""
    cond, args = [], []
    if experiment:
        cond.append(
            "s.run_id IN (SELECT r.id FROM runs r JOIN experiments e"
            " ON e.id = r.experiment_id WHERE e.name = ?)"
        )
        args.append(experiment)
    if not system:
        cond.append("k.key NOT LIKE 'sys/%'")
    where = ("WHERE " + " AND ".join(cond)) if cond else ""
    rows = store.read(
        "SELECT k.key, count(*) c FROM metric_summary s JOIN metric_keys k ON k.id = s.key_id "
        f"{where} GROUP BY k.key ORDER BY c DESC, k.key",
        args,
    )
    return [r[0] for r in rows]


# -------------------------------------------------------------------------------- runs


def list_runs(
    store: Store,
    *,
    experiment: str | None = None,
    status: str | None = None,
    search: str | None = None,
    conditions: list[str] | None = None,
    sort: str = "start_time",
    order: str = "desc",
    limit: int = 100,
    offset: int = 0,
    metric: str | None = None,
    top_level: bool = False,
    deleted: bool | None = False,
) -> dict[str, Any]:
    """One page of runs: {"total", "offset", "limit", "metric", "runs": [...]}.

    `conditions` are strings like "params.lr>=0.01", "metrics.loss.min<0.3", "tags.x=y";
    `metric` is the key shown as "key metric" (default: the most logged metric key);
    `deleted` as in filter_sql."""
    if sort not in SORTABLE:
        raise InvalidInputError(f"sort must be one of {sorted(SORTABLE)}, got {sort!r}")
    check_page(order, limit, offset, MAX_LIMIT)
    maybe_reconcile(store)
    if metric is None:
        keys = metric_keys(store, experiment)
        metric = next((k for k in keys if k in ("loss", "val_loss", "accuracy")), None)
        metric = metric or (keys[0] if keys else None)
    kid_row = store.read("SELECT id FROM metric_keys WHERE key = ?", (metric,)) if metric else []
    kid = kid_row[0][0] if kid_row else -1

    args: dict[str, Any] = {"kid": kid, "now": time.time()}
    where = filter_sql(store, args, experiment, status, search, conditions, top_level, deleted)
    base = f"FROM runs r JOIN experiments e ON e.id = r.experiment_id {_KM_JOIN}{where}"
    # the key-metric join matters only for sorting by it (conditions use their own EXISTS)
    lean = base.replace(_KM_JOIN, "")
    total = store.read(f"SELECT count(*) {lean}", args)[0][0]
    direction = "DESC" if order == "desc" else "ASC"
    col = SORTABLE[sort]
    nulls_last = f"{col} IS NULL, " if sort in _NULLABLE else ""
    # Two steps: sort and page only row ids, then fetch the columns of that one page, so a
    # deep page does not build (and sort) full rows for every run before it.
    page_ids = [
        r[0]
        for r in store.read(
            f"SELECT r.id {base if sort == 'metric' else lean}"
            f" ORDER BY {nulls_last}{col} {direction}, r.id {direction}"
            f" LIMIT {int(limit)} OFFSET {int(offset)}",
            args,
        )
    ]
    rows = []
    if page_ids:
        got = store.read(
            "SELECT r.id, r.uid, r.name, e.name, r.status, r.start_time, r.end_time, r.attempt,"
            " (SELECT p.uid FROM runs p WHERE p.id = r.parent_id), km.last_value, km.min_value,"
            " km.max_value, r.prev_run_id IS NOT NULL"
            " FROM runs r JOIN experiments e ON e.id = r.experiment_id"
            f" LEFT JOIN metric_summary km ON km.run_id = r.id AND km.key_id = ?"
            f" WHERE r.id IN ({','.join('?' * len(page_ids))})",
            [kid, *page_ids],
        )
        by_id = {r[0]: r for r in got}
        rows = [by_id[i] for i in page_ids if i in by_id]
    now = time.time()
    out = [
        {
            "id": uid,
            "name": name,
            "experiment": exp,
            "status": st,
            "start_time": s,
            "end_time": e,
            "duration_s": (e if e is not None else now) - s,
            "attempt": att,
            "parent_id": parent,
            "metric": {"last": last, "min": mn, "max": mx}
            if last is not None or mn is not None
            else None,
        }
        for _rid, uid, name, exp, st, s, e, att, parent, last, mn, mx, _prev in rows
    ]
    return clean({"total": total, "offset": offset, "limit": limit, "metric": metric, "runs": out})


def run_detail(store: Store, rid: int) -> dict[str, Any]:
    """Params, tags, metric summaries, artifacts, events, cells and data versions of a run."""
    d = q.run_detail(store, rid)
    d["notebook_path"] = d["tags"].get("notebook.path")
    d["cells"] = _optional("mlops_jupyter.store.capture", "cells_for_run", store, rid)
    d["data_versions"] = _optional("mlops_jupyter.store.data", "versions_for_run", store, rid)
    d["alerts"] = [e for e in d["events"] if e["kind"] == "alert"]
    return clean(d)


def _optional(module: str, fn: str, *args: Any, **kwargs: Any) -> list[Any]:
    """Call another area's store query if it is installed; [] when it is not or fails."""
    import importlib

    try:
        f = getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError):
        return []
    try:
        res = f(*args, **kwargs)
    except Exception as e:  # another area's failure must not break the sidebar
        log.warning("mlops: %s.%s failed: %s", module, fn, e)
        return []
    if res is None:
        return []
    if hasattr(res, "to_dicts"):  # a polars frame
        res = res.to_dicts()
    return clean(_jsonable(list(res)))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        try:
            return obj.item()
        except Exception:
            pass
    if hasattr(obj, "timestamp"):
        return obj.timestamp()
    return str(obj)


# ---------------------------------------------------------------------------- compare


def compare(
    store: Store,
    rids: list[int],
    keys: list[str] | None = None,
    max_points: int = 1000,
    since_step: int | None = None,
) -> dict[str, Any]:
    """Side by side: runs with params/metric summaries, the params that differ, and the
    decimated curves of `keys` (default: up to 4 metric keys the runs share), all in one
    answer. `since_step`: only curve points after that step (incremental refresh)."""
    if not rids:
        raise InvalidInputError("compare needs at least one run id")
    if len(rids) > 20:
        raise InvalidInputError(f"compare takes at most 20 runs, got {len(rids)}")
    details = [q.run_detail(store, rid) for rid in rids]
    runs = [
        {
            "id": d["id"],
            "name": d["name"],
            "experiment": d["experiment"],
            "status": d["status"],
            "duration_s": d["duration_s"],
            "params": d["params"],
            "metrics": {m["key"]: m for m in d["metrics"]},
        }
        for d in details
    ]
    pkeys = sorted({k for r in runs for k in r["params"]})
    differ = [
        k
        for k in pkeys
        if len({json.dumps(r["params"].get(k), sort_keys=True, default=str) for r in runs}) > 1
    ]
    mkeys = sorted({k for r in runs for k in r["metrics"] if not k.startswith("sys/")})
    if keys is None:
        shared = [k for k in mkeys if all(k in r["metrics"] for r in runs)]
        keys = (shared or mkeys)[:4]
    curves: dict[str, list[dict[str, Any]]] = {}
    for key in keys:
        curves[key] = []
        for rid, r in zip(rids, runs):
            s = series(store, rid, key, max_points, since_step)
            if s["n"]:
                curves[key].append({"run_id": r["id"], "name": r["name"], **s})
    return clean(
        {
            "runs": runs,
            "param_keys": pkeys,
            "params_differ": differ,
            "metric_keys": mkeys,
            "curves": curves,
        }
    )


# --------------------------------------------------------------- telemetry and alerts


def telemetry(store: Store, rids: list[int] | None = None) -> list[dict[str, Any]]:
    """Latest system samples (sys/* metrics) and thermal state of the given runs, or of
    every running run when `rids` is None."""
    maybe_reconcile(store)
    if rids is None:
        rows = store.read(
            "SELECT r.id, r.uid, r.name, r.status FROM runs r WHERE r.status = 'running'"
            " ORDER BY r.start_time DESC LIMIT 50"
        )
    else:
        if not rids:
            return []
        rows = store.read(
            "SELECT r.id, r.uid, r.name, r.status FROM runs r "
            f"WHERE r.id IN ({','.join('?' * len(rids))}) ORDER BY r.start_time DESC",
            rids,
        )
    out = []
    for rid, uid, name, st in rows:
        samples = {
            k: {"value": v, "ts": t, "min": mn, "max": mx}
            for k, v, t, mn, mx in store.read(
                "SELECT k.key, s.last_value, s.last_ts, s.min_value, s.max_value"
                " FROM metric_summary s JOIN metric_keys k ON k.id = s.key_id"
                " WHERE s.run_id = ? AND k.key LIKE 'sys/%' ORDER BY k.key",
                (rid,),
            )
        }
        thermal = store.read(
            "SELECT kind, level, message, start_time, end_time, data FROM run_events"
            " WHERE run_id = ? AND kind IN ('throttle', 'thermal')"
            " ORDER BY start_time DESC, id DESC LIMIT 5",
            (rid,),
        )
        out.append(
            {
                "run_id": uid,
                "name": name,
                "status": st,
                "samples": samples,
                "thermal": [_event(r) for r in thermal],
                # an episode left open by a run that ended (or crashed) is not ongoing
                "throttling": st == "running" and any(r[4] is None for r in thermal),
            }
        )
    return clean(out)


def _event(r: tuple) -> dict[str, Any]:
    kind, level, msg, start, end, data = r[:6]
    return {
        "kind": kind,
        "level": level,
        "message": msg,
        "start_time": start,
        "end_time": end,
        "data": _decode(data),
    }


def alerts(
    store: Store, rid: int | None = None, limit: int = 100, since: float | None = None
) -> list[dict[str, Any]]:
    """Alert events (newest first) of one run or of all runs."""
    if not (1 <= limit <= MAX_LIMIT):
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    cond, args = ["ev.kind = 'alert'"], []
    if rid is not None:
        cond.append("ev.run_id = ?")
        args.append(rid)
    if since is not None:
        cond.append("ev.start_time >= ?")
        args.append(since)
    rows = store.read(
        "SELECT ev.kind, ev.level, ev.message, ev.start_time, ev.end_time, ev.data, r.uid, r.name"
        " FROM run_events ev JOIN runs r ON r.id = ev.run_id"
        f" WHERE {' AND '.join(cond)} ORDER BY ev.start_time DESC, ev.id DESC LIMIT {int(limit)}",
        args,
    )
    return clean([{**_event(r), "run_id": r[6], "run_name": r[7]} for r in rows])


# ------------------------------------------------------------------- other areas' data


def data_versions(store: Store, rid: int) -> list[dict[str, Any]]:
    """Data versions recorded for a run ([] when the data feature is not installed)."""
    return _optional("mlops_jupyter.store.data", "versions_for_run", store, rid)


def drift(store: Store, rid: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Stored drift reports (aggregates only), newest first."""
    return _optional("mlops_jupyter.store.data", "drift_reports", store, rid=rid, limit=limit)


def cells(store: Store, rid: int) -> list[dict[str, Any]]:
    """Notebook cells executed during a run ([] when capture is not installed)."""
    return _optional("mlops_jupyter.store.capture", "cells_for_run", store, rid)


def health(store: Store) -> dict[str, Any]:
    """Store location, schema version and run count."""
    n = store.read("SELECT count(*) FROM runs")[0][0]
    return {
        "ok": True,
        "store": store.location,
        "schema_version": store.schema_version(),
        "runs": n,
    }
