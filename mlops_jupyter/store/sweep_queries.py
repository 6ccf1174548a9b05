"""A sweep run read from the store for the sidebar: its trial runs (child runs) with state,
params, objective value and the worker (host:pid) each ran on, plus trials/s, best so
far, per-worker counts and the axes a parallel-coordinates chart needs.

Nothing here talks to optuna: a trial's state is its `optuna.state` tag (set when the
trial ends) or, while it runs, its run status; its value is the `objective` metric."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from ..errors import RunNotFoundError
from .api_queries import _decode
from .db import Store

OBJECTIVE = "objective"
RECENT_S = 30.0  # window of the "recent" trials/s
STATES = ("running", "complete", "pruned", "fail")
_RUN_STATE = {"running": "running", "finished": "complete"}  # anything else ended badly


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _in(ids: list[int]) -> str:
    return ",".join("?" * len(ids))


def _by_run(store: Store, table: str, ids: list[int], keys: tuple[str, ...] | None = None):
    """{run id: {key: decoded value}} of params or tags of `ids` (optionally only `keys`)."""
    out: dict[int, dict[str, Any]] = {i: {} for i in ids}
    if not ids:
        return out
    sql = f"SELECT run_id, key, value FROM {table} WHERE run_id IN ({_in(ids)})"
    args: list[Any] = list(ids)
    if keys:
        sql += f" AND key IN ({_in(list(keys))})"
        args += list(keys)
    for rid, k, v in store.read(sql, args):
        out[rid][k] = _decode(v)
    return out


def _axes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One axis per param: numeric (log-scaled where every value is positive and they span
    at least two decades, as log-uniform search spaces do) or categorical (its levels in
    order of first appearance)."""
    names: list[str] = []
    for r in rows:
        names += [k for k in r["params"] if k not in names]
    axes = []
    for name in sorted(names):
        vals = [r["params"][name] for r in rows if name in r["params"]]
        nums = [_finite(v) for v in vals]
        if vals and all(x is not None for x in nums):
            xs = [x for x in nums if x is not None]
            lo, hi = min(xs), max(xs)
            log = lo > 0 and hi / lo >= 100
            axes.append({"name": name, "kind": "numeric", "log": log, "min": lo, "max": hi})
        else:
            levels: list[Any] = []
            for v in vals:
                key = v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v)
                if key not in levels:
                    levels.append(key)
            axes.append({"name": name, "kind": "categorical", "levels": levels})
    return axes


def sweep_summary(store: Store, rid: int, now: float | None = None) -> dict[str, Any]:
    """The sweep run `rid` and its trials (see the module doc). Raises RunNotFoundError
    when the run is neither tagged as a sweep nor has child runs."""
    now = time.time() if now is None else now
    head = store.read(
        "SELECT uid, name, status, start_time, end_time FROM runs WHERE id = ?", (rid,)
    )
    if not head:
        raise RunNotFoundError(f"no run with id {rid}")
    uid, name, status, start, end = head[0]
    sweep_tags = _by_run(store, "tags", [rid], ("sweep", "optuna.study"))[rid]
    sweep_params = _by_run(store, "params", [rid], ("sweep.direction", "sweep.n_trials"))[rid]
    kids = store.read(
        "SELECT r.id, r.uid, r.name, r.status, r.start_time, r.end_time, r.host, r.pid,"
        " ms.last_value FROM runs r LEFT JOIN metric_summary ms ON ms.run_id = r.id"
        " AND ms.key_id = (SELECT id FROM metric_keys WHERE key = ?)"
        " WHERE r.parent_id = ? ORDER BY r.start_time, r.id",
        (OBJECTIVE, rid),
    )
    if not kids and not sweep_tags:
        raise RunNotFoundError(f"run {uid} is not a sweep (no trials, no sweep tag)")
    ids = [k[0] for k in kids]
    tags = _by_run(store, "tags", ids, ("optuna.trial", "optuna.state"))
    params = _by_run(store, "params", ids)
    direction = sweep_params.get("sweep.direction") or "minimize"
    rows: list[dict[str, Any]] = []
    for i, (kid, kuid, kname, kstatus, ks, ke, host, pid, value) in enumerate(kids):
        t = tags[kid]
        state = t.get("optuna.state") or _RUN_STATE.get(kstatus, "fail")
        number = t.get("optuna.trial")
        rows.append(
            {
                "trial": number if isinstance(number, int) else i,
                "run_id": kuid,
                "name": kname,
                "state": state if state in STATES else "fail",
                "value": _finite(value),
                "params": params[kid],
                "worker": f"{host or '?'}:{pid if pid is not None else '?'}",
                "start_time": ks,
                "end_time": ke,
            }
        )
    ref = now if status == "running" else (end or now)
    ends = [r["end_time"] for r in rows if r["state"] != "running" and r["end_time"] is not None]
    if status != "running" and ends:
        ref = max(ends)  # a finished sweep: its rate up to its last trial
    elapsed = max(ref - start, 1e-9)
    window = min(RECENT_S, elapsed)
    recent = sum(1 for e in ends if e >= ref - window)
    workers: dict[str, dict[str, Any]] = {}
    for r in rows:
        w = workers.setdefault(r["worker"], {"worker": r["worker"], **dict.fromkeys(STATES, 0)})
        w[r["state"]] += 1
    for w in workers.values():
        w["total"] = sum(w[s] for s in STATES)
    best = None
    for r in rows:
        v = r["value"]
        if r["state"] != "complete" or v is None:
            continue
        if best is None or (v < best["value"] if direction == "minimize" else v > best["value"]):
            best = {k: r[k] for k in ("trial", "run_id", "value", "params", "worker")}
    counts = dict.fromkeys(STATES, 0)
    for r in rows:
        counts[r["state"]] += 1
    n_trials = sweep_params.get("sweep.n_trials")
    return {
        "run_id": uid,
        "name": name,
        "status": status,
        "study": sweep_tags.get("optuna.study"),
        "direction": direction,
        "n_trials": n_trials if isinstance(n_trials, int) else None,
        "start_time": start,
        "end_time": end,
        "elapsed_s": elapsed,
        "counts": counts,
        "trials_per_s": len(ends) / elapsed,
        "recent_trials_per_s": recent / window if window > 0 else 0.0,
        "best": best,
        "workers": sorted(workers.values(), key=lambda w: w["worker"]),
        "axes": _axes([r for r in rows if r["state"] == "complete"]),
        "objective": OBJECTIVE,
        "trials": rows,
    }


def trial_runs(store: Store, study: str) -> dict[int, tuple[str, str | None]]:
    """{trial number: (run id, host)} of the trial runs of optuna study `study`, found by
    their `optuna.study` and `optuna.trial` tags (whichever process or sweep ran them)."""
    rows = store.read(
        "SELECT r.uid, r.host, tt.value FROM runs r"
        " JOIN tags ts ON ts.run_id = r.id AND ts.key = 'optuna.study' AND ts.value = ?"
        " JOIN tags tt ON tt.run_id = r.id AND tt.key = 'optuna.trial'"
        " ORDER BY r.id",
        (json.dumps(study),),
    )
    out: dict[int, tuple[str, str | None]] = {}
    for uid, host, number in rows:
        n = _decode(number)
        if isinstance(n, int) and not isinstance(n, bool):
            out[n] = (uid, host)  # a retried number: the newest run
    return out
