"""SQL of the loop's watcher: which signals each rule has handled (claimed once, by
compare-and-set, so a restarted watcher or a second one never runs a signal twice) and the
human approvals a chain waits for."""

from __future__ import annotations

import json
import time
from typing import Any

from .db import Store
from .gates import _version_id
from .registry import _audit
from .sql import insert_ignore, upsert

# running -> waiting (for an approval) -> running ... -> done | failed | rejected
STATES = ("running", "waiting", "done", "failed", "rejected")


def claim(store: Store, rule: str, signal: str, detail: dict[str, Any], owner: str) -> bool:
    """Record `signal` of `rule` as being handled by `owner`; False when it already was
    (by this or another watcher)."""
    now = time.time()
    sql = insert_ignore(
        "loop_signals", ("rule", "signal", "state", "detail", "owner", "created", "updated")
    )
    with store.write("claim a loop signal") as c:
        cur = c.execute(
            sql + " RETURNING rule",
            (rule, signal, "running", json.dumps(detail, default=str), owner, now, now),
        )
        return cur.fetchone() is not None


def resume(store: Store, rule: str, signal: str, owner: str) -> dict[str, Any] | None:
    """Take a waiting signal back to running (compare-and-set); its detail, or None when it
    was not waiting (another watcher took it, or it moved on)."""
    with store.write("resume a loop signal") as c:
        row = c.execute(
            "UPDATE loop_signals SET state='running', owner=?, updated=? WHERE rule=? AND"
            " signal=? AND state='waiting' RETURNING detail",
            (owner, time.time(), rule, signal),
        ).fetchone()
    return json.loads(row[0]) if row else None


def update(store: Store, rule: str, signal: str, state: str, detail: dict[str, Any]) -> None:
    """Set the state (one of STATES) and detail of a claimed signal."""
    if state not in STATES:
        raise ValueError(f"unknown loop signal state {state!r}")
    with store.write("update a loop signal") as c:
        c.execute(
            "UPDATE loop_signals SET state=?, detail=?, updated=? WHERE rule=? AND signal=?",
            (state, json.dumps(detail, default=str), time.time(), rule, signal),
        )


def signals(store: Store, rule: str | None = None, state: str | None = None) -> list[dict]:
    """Handled signals, oldest first: rule, signal, state, detail, owner, created, updated."""
    sql = "SELECT rule, signal, state, detail, owner, created, updated FROM loop_signals"
    where, args = [], []
    if rule is not None:
        where.append("rule=?")
        args.append(rule)
    if state is not None:
        where.append("state=?")
        args.append(state)
    if where:
        sql += " WHERE " + " AND ".join(where)
    keys = ("rule", "signal", "state", "detail", "owner", "created", "updated")
    out = []
    for r in store.read(sql + " ORDER BY created, rule, signal", tuple(args)):
        d = dict(zip(keys, r))
        d["detail"] = json.loads(d["detail"])
        out.append(d)
    return out


def drift_alerts(store: Store, model: str) -> list[dict]:
    """The drift alerts serving raised on `model`'s inputs (one per drifted window),
    newest first: version, variant, window_start, created."""
    rows = store.read(
        "SELECT version, variant, window_start, created FROM serving_drift_alerts"
        " WHERE model=? ORDER BY created DESC, window_start DESC LIMIT 50",
        (model,),
    )
    return [dict(zip(("version", "variant", "window_start", "created"), r)) for r in rows]


def set_approval(
    store: Store, name: str, version: int, decision: str, reason: str | None, user: str
) -> None:
    """Record `decision` ("approved" / "rejected") on `name` v`version`, with an audit line."""
    cols = ("model_id", "version_id", "decision", "reason", "ts", "created_by")
    with store.write("record an approval") as c:
        mid, vid = _version_id(c, name, version)
        c.execute(
            upsert("loop_approvals", cols, ("model_id", "version_id")),
            (mid, vid, decision, reason, time.time(), user),
        )
        action = "approve" if decision == "approved" else "reject"
        _audit(c, mid, vid, action, reason=reason, user=user)


def get_approval(store: Store, name: str, version: int) -> dict[str, Any] | None:
    """The decision on `name` v`version` ({"decision", "reason", "user", "time"}), or None."""
    rows = store.read(
        "SELECT a.decision, a.reason, a.created_by, a.ts FROM loop_approvals a"
        " JOIN models m ON m.id = a.model_id JOIN model_versions v ON v.id = a.version_id"
        " WHERE m.name=? AND v.version=?",
        (name, int(version)),
    )
    if not rows:
        return None
    return dict(zip(("decision", "reason", "user", "time"), rows[0]))
