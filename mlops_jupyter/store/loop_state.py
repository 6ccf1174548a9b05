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


def _resent(c: Any, rule: str, signal: str, owner: str, key: str) -> dict[str, Any] | None:
    """The answer to a resume or take-back whose `key` already moved the signal: its detail
    while `owner` still runs it (nothing moved since), else None (it moved on)."""
    row = c.execute(
        "SELECT state, owner, detail FROM loop_signals WHERE rule=? AND signal=? AND owner_key=?",
        (rule, signal, key),
    ).fetchone()
    if row is None or row[0] != "running" or row[1] != owner:
        return None
    return json.loads(row[2])


def resume(
    store: Store, rule: str, signal: str, owner: str, key: str | None = None
) -> dict[str, Any] | None:
    """Take a waiting signal back to running (compare-and-set); its detail, or None when it
    was not waiting (another watcher took it, or it moved on). `key`: the client's request
    key; a resume sent again with it (a retry after a lost answer) changes nothing and
    answers as the first did while `owner` still runs the signal."""
    sql = (
        "UPDATE loop_signals SET state='running', owner=?, owner_key=?, updated=? WHERE rule=?"
        " AND signal=? AND state='waiting'"
    )
    args: tuple = (owner, key, time.time(), rule, signal)
    if key is not None:  # never twice for one key, even if the signal waits again
        sql += " AND COALESCE(owner_key, '') <> ?"
        args += (key,)
    with store.write("resume a loop signal") as c:
        row = c.execute(sql + " RETURNING detail", args).fetchone()
        if row is None:
            return None if key is None else _resent(c, rule, signal, owner, key)
    return json.loads(row[0])


def update(
    store: Store,
    rule: str,
    signal: str,
    state: str,
    detail: dict[str, Any],
    owner: str | None = None,
) -> bool:
    """Set the state (one of STATES) and detail of a claimed signal. With `owner`, only
    while that watcher still holds it (compare-and-set on the owner): a watcher whose
    signal was taken back after its lease must not write over the new owner's (the same
    write sent twice, after a lost answer, still lands). Whether it was set."""
    if state not in STATES:
        raise ValueError(f"unknown loop signal state {state!r}")
    sql = "UPDATE loop_signals SET state=?, detail=?, updated=? WHERE rule=? AND signal=?"
    args: tuple = (state, json.dumps(detail, default=str), time.time(), rule, signal)
    if owner is not None:
        sql += " AND owner=?"
        args += (owner,)
    with store.write("update a loop signal") as c:
        return c.execute(sql + " RETURNING 1", args).fetchone() is not None


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


# -- recovery of a signal whose watcher died (`mlops-jupyter watch retry|abandon`) ---------


def beat(store: Store, rule: str, signal: str, owner: str) -> bool:
    """The heartbeat of the watcher `owner` running `signal`'s chain: `updated` becomes now
    (compare-and-set on state running and this owner). False when the signal is no longer
    this owner's running one (its chain ended, or a watcher took it back after the lease)."""
    with store.write("heartbeat of a loop signal") as c:
        row = c.execute(
            "UPDATE loop_signals SET updated=? WHERE rule=? AND signal=? AND state='running'"
            " AND owner=? RETURNING rule",
            (time.time(), rule, signal, owner),
        ).fetchone()
    return row is not None


def take_back(
    store: Store,
    rule: str,
    signal: str,
    dead: str,
    owner: str,
    key: str | None = None,
    stale_before: float | None = None,
) -> dict | None:
    """Give a running signal held by the dead watcher `dead` to `owner` (compare-and-set on
    the old owner); its detail, or None when it moved on or another watcher took it.
    `key`: the client's request key (as for resume). `stale_before`: only when the old
    owner's last heartbeat (`updated`) is older than this time, checked in the same
    statement, so a beat that lands first keeps the signal with its owner."""
    sql = (
        "UPDATE loop_signals SET owner=?, owner_key=?, updated=? WHERE rule=? AND signal=?"
        " AND state='running' AND owner=?"
    )
    args: tuple = (owner, key, time.time(), rule, signal, dead)
    if stale_before is not None:
        sql += " AND updated < ?"
        args += (float(stale_before),)
    with store.write("take back a loop signal") as c:
        row = c.execute(sql + " RETURNING detail", args).fetchone()
        if row is None:
            return None if key is None else _resent(c, rule, signal, owner, key)
    return json.loads(row[0])


def _audit_model(c: Any, model: Any, action: str, reason: str, user: str) -> None:
    """An audit line on the chain's model (when it is registered): who retried or
    abandoned which signal, and why."""
    if not isinstance(model, str):
        return
    row = c.execute("SELECT id FROM models WHERE name=?", (model,)).fetchone()
    if row is not None:
        _audit(c, row[0], None, action, reason=reason, user=user)


def recover(
    store: Store, rule: str, signal: str, action: str, user: str, reason: str | None = None
) -> dict[str, Any]:
    """`retry` (a running or failed signal waits for the next poll, which runs its chain
    again from detail["step"], the first step not finished) or `abandon` (a running or
    waiting signal becomes failed). The change is compare-and-set on the state read, with
    an audit line; raises ValueError naming the state when the signal cannot change."""
    allowed = {"retry": ("running", "failed"), "abandon": ("running", "waiting")}[action]
    with store.write(f"{action} a loop signal") as c:
        row = c.execute(
            "SELECT state, detail, owner FROM loop_signals WHERE rule=? AND signal=?",
            (rule, signal),
        ).fetchone()
        if row is None:
            raise LookupError(f"rule {rule!r} has no signal {signal!r}")
        state, detail = row[0], json.loads(row[1])
        if state not in allowed:
            raise ValueError(
                f"signal {signal!r} of rule {rule!r} is {state}: only a {' or '.join(allowed)}"
                f" signal can be {'retried' if action == 'retry' else 'abandoned'}"
            )
        now = time.time()
        why = f"loop rule {rule}: signal {signal} {action} (was {state}, owner {row[2]})"
        if reason:
            why += f": {reason}"
        if action == "retry":
            for k in ("reason", "waiting_for", "asked"):
                detail.pop(k, None)
            detail["waiting_for"] = "retry"  # loop/actions.py ready(): go on at the next poll
            new = "waiting"
        else:
            detail["reason"] = f"abandoned by {user}" + (f": {reason}" if reason else "")
            new = "failed"
        detail.setdefault("recovered", []).append(
            {"action": action, "user": user, "reason": reason, "time": now, "from": state}
        )
        cur = c.execute(
            "UPDATE loop_signals SET state=?, detail=?, updated=? WHERE rule=? AND signal=?"
            " AND state=? RETURNING state",
            (new, json.dumps(detail, default=str), now, rule, signal, state),
        )
        if cur.fetchone() is None:
            raise ValueError(f"signal {signal!r} of rule {rule!r} changed meanwhile; try again")
        _audit_model(c, detail.get("model"), f"loop_{action}", why, user)
    return {"rule": rule, "signal": signal, "state": new, "detail": detail}
