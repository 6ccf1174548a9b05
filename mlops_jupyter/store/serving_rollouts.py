"""Store operations of live rollouts: the desired traffic layout of each served model (which
versions answer with which weights, the shadow, a canary ramp and its step), read by every
serving worker about once a second, and the windowed per-variant figures a canary
controller checks.

Every change of a layout bumps its generation; `set_layout(..., expect=g)` writes only
while the generation is still `g` (compare-and-set), so when several controllers run at
once exactly one of them takes each step. The change goes into the registry's audit log
(action "rollout") in the same transaction. A worker that cannot load the versions a
layout needs keeps serving the old one and records why (`record_refusal`), once per
generation; the controller rolls a canary back on it."""

from __future__ import annotations

import json
import time
from typing import Any

from .db import Store

_COLS = "model, layout, generation, state, updated_at, updated_by, reason, checks"


def get(store: Store, model: str) -> dict[str, Any] | None:
    """The stored rollout of `model` ({model, layout, generation, state, updated_at,
    updated_by, reason, checks}), or None when none was set. A primary-key read."""
    rows = store.read(
        f"SELECT {_COLS} FROM serving_rollouts WHERE model=?", (model,), "read the rollout"
    )
    if not rows:
        return None
    m, layout, gen, state, ts, by, reason, checks = rows[0]
    return {
        "model": m,
        "layout": json.loads(layout),
        "generation": int(gen),
        "state": state,
        "updated_at": ts,
        "updated_by": by,
        "reason": reason,
        "checks": json.loads(checks) if checks else None,
    }


def set_layout(
    store: Store,
    model: str,
    layout: dict[str, Any],
    state: str,
    reason: str,
    user: str | None = None,
    expect: int | None = None,
) -> int | None:
    """Store `layout` (a JSON-able dict) as the desired rollout of `model` and record
    `reason` in the model's audit log. With `expect` the write happens only while the
    stored generation is still `expect` (0: only when none is stored yet); returns the new
    generation, or None when another writer came first (nothing written)."""
    from .serving import record_rollout

    text = json.dumps(layout, sort_keys=True)
    now = time.time()
    with store.write("set the rollout") as c:
        row = c.execute(
            "SELECT generation FROM serving_rollouts WHERE model=?", (model,)
        ).fetchone()
        current = int(row[0]) if row else 0
        if expect is not None and current != expect:
            return None
        if row is None:
            got = c.execute(
                "INSERT INTO serving_rollouts(model, layout, generation, state, updated_at,"
                " updated_by, reason) VALUES(?,?,1,?,?,?,?)"
                " ON CONFLICT(model) DO NOTHING RETURNING generation",
                (model, text, state, now, user, reason),
            ).fetchone()
        else:
            # the generation is checked again by the UPDATE itself: under PostgreSQL's
            # read committed another transaction may have moved it since the SELECT
            got = c.execute(
                "UPDATE serving_rollouts SET layout=?, generation=generation+1, state=?,"
                " updated_at=?, updated_by=?, reason=?, checks=NULL"
                " WHERE model=? AND generation=? RETURNING generation",
                (text, state, now, user, reason, model, current),
            ).fetchone()
        if got is None:
            return None
        record_rollout(store, model, reason, user)  # a savepoint of this transaction
        return int(got[0])


def set_checks(store: Store, model: str, generation: int, checks: dict[str, Any]) -> bool:
    """Keep the latest evaluation of the canary's checks (for `rollout show`) without
    changing the generation; False when the layout moved on meanwhile."""
    with store.write("store the rollout checks") as c:
        got = c.execute(
            "UPDATE serving_rollouts SET checks=? WHERE model=? AND generation=?"
            " RETURNING generation",
            (json.dumps(checks, default=str), model, generation),
        ).fetchone()
    return got is not None


def record_refusal(
    store: Store,
    model: str,
    generation: int,
    worker: str,
    layout: str,
    failed: list[dict[str, Any]],
) -> bool:
    """Record that `worker` could not serve generation `generation` of `model`'s layout
    (`layout`: its one-line description) because the versions in `failed` ([{name,
    version, error}]) did not load. Once per (model, generation, worker): False when it
    was recorded already."""
    with store.write("record the refused rollout") as c:
        got = c.execute(
            "INSERT INTO serving_rollout_refusals(model, generation, worker, layout, failed, ts)"
            " VALUES(?,?,?,?,?,?) ON CONFLICT(model, generation, worker) DO NOTHING"
            " RETURNING generation",
            (model, int(generation), worker, layout, json.dumps(failed), time.time()),
        ).fetchone()
    return got is not None


def refusals(
    store: Store, model: str, generation: int | None = None, last: int | None = None
) -> list[dict[str, Any]]:
    """The recorded refusals of `model`'s layouts ({generation, worker, layout, failed,
    ts}, oldest generation first): of `generation` only, or of its `last` refused
    generations."""
    where, args = "model=?", [model]
    if generation is not None:
        where += " AND generation=?"
        args.append(int(generation))
    elif last is not None:
        # the newest `last` generations that have any refusal
        where += (
            " AND generation IN (SELECT DISTINCT generation FROM serving_rollout_refusals"
            " WHERE model=? ORDER BY generation DESC LIMIT ?)"
        )
        args += [model, int(last)]
    rows = store.read(
        "SELECT generation, worker, layout, failed, ts FROM serving_rollout_refusals"
        f" WHERE {where} ORDER BY generation, ts, worker",
        args,
        "read the refused rollouts",
    )
    return [
        {"generation": int(g), "worker": w, "layout": lay, "failed": json.loads(f), "ts": ts}
        for g, w, lay, f, ts in rows
    ]


def window(
    store: Store, model: str, variants: list[str], since: float, until: float | None = None
) -> dict[str, dict[str, Any]]:
    """Per variant of `variants`, the requests of `model` logged in [since, until): n,
    errors (status >= 500), the latencies (ms, sorted) of the answered ones, and the count
    and mean of their newest numeric feedback."""
    if not variants:
        return {}
    marks = ",".join("?" for _ in variants)
    where = f"p.model=? AND p.variant IN ({marks}) AND p.ts >= ?"
    args: list[Any] = [model, *variants, float(since)]
    if until is not None:
        where += " AND p.ts < ?"
        args.append(float(until))
    out: dict[str, dict[str, Any]] = {
        v: {"n": 0, "errors": 0, "latencies": [], "feedback_n": 0, "feedback_mean": None}
        for v in variants
    }
    for variant, status, lat in store.read(
        f"SELECT p.variant, p.status, p.latency_ms FROM serving_predictions p WHERE {where}",
        args,
        "read the rollout window",
    ):
        d = out[variant]
        d["n"] += 1
        if status >= 500:
            d["errors"] += 1
        elif lat is not None:
            d["latencies"].append(float(lat))
    for variant, n, mean in store.read(
        "SELECT p.variant, COUNT(f.value_num), AVG(f.value_num) FROM serving_predictions p"
        " JOIN serving_feedback f ON f.id = (SELECT MAX(f2.id) FROM serving_feedback f2"
        f" WHERE f2.request_id = p.request_id) WHERE {where} AND p.status = 200"
        " AND f.value_num IS NOT NULL GROUP BY p.variant",
        args,
        "read the rollout feedback",
    ):
        out[variant]["feedback_n"] = int(n)
        out[variant]["feedback_mean"] = float(mean) if mean is not None else None
    for d in out.values():
        d["latencies"].sort()
    return out


def version_run(store: Store, model: str, version: int) -> int | None:
    """The run (row id) that logged version `version` of `model`, if any."""
    rows = store.read(
        "SELECT v.run_id FROM model_versions v JOIN models m ON m.id = v.model_id"
        " WHERE m.name=? AND v.version=?",
        (model, int(version)),
        "read the version's run",
    )
    return rows[0][0] if rows and rows[0][0] is not None else None
