"""SQL of the closed loop: gate verdicts (kept with the registry's audit log) and per-model
policies such as "production needs a passing gate"."""

from __future__ import annotations

import json
import time
from typing import Any

from .db import Store
from .registry import ModelNotFoundError, _audit, _model_id
from .sql import upsert


def _version_id(c, name: str, version: int) -> tuple[int, int]:
    mid = _model_id(c, name)
    if mid is None:
        raise ModelNotFoundError(f"no registered model named {name!r}")
    row = c.execute(
        "SELECT id FROM model_versions WHERE model_id=? AND version=?", (mid, version)
    ).fetchone()
    if row is None:
        raise ModelNotFoundError(f"model {name!r} has no version {version}")
    return mid, row[0]


def save_gate(
    store: Store,
    name: str,
    version: int,
    baseline_version: int | None,
    data_id: str | None,
    passed: bool,
    report: dict[str, Any],
    user: str,
    summary: str,
    key: str | None = None,
) -> int:
    """Store a gate verdict of `name` v`version` and add it to the audit log; returns its id.
    `key`: the client's request key; a verdict sent again with the same key (a retry after
    a lost answer) returns the first verdict's id and stores nothing."""
    with store.write() as c:
        mid, vid = _version_id(c, name, version)
        row = c.execute(
            "INSERT INTO gate_reports(model_id, version_id, baseline_version, data_id, passed,"
            " report, ts, created_by, request_key) VALUES(?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(version_id, request_key) DO NOTHING RETURNING id",
            (
                mid,
                vid,
                baseline_version,
                data_id,
                1 if passed else 0,
                json.dumps(report, default=str),
                time.time(),
                user,
                key,
            ),
        ).fetchone()
        if row is None:  # only with a key (NULL keys never conflict): stored before
            return c.execute(
                "SELECT id FROM gate_reports WHERE version_id=? AND request_key=?", (vid, key)
            ).fetchone()[0]
        gid = row[0]
        _audit(c, mid, vid, "gate", reason=f"gate #{gid}: {summary}", user=user)
    return gid


_COLS = (
    "g.id, m.name, v.version, g.baseline_version, g.data_id, g.passed, g.report, g.ts,"
    " g.created_by FROM gate_reports g JOIN models m ON m.id = g.model_id"
    " JOIN model_versions v ON v.id = g.version_id"
)


def _row(r: tuple) -> dict[str, Any]:
    return {
        "id": r[0],
        "model": r[1],
        "version": r[2],
        "baseline_version": r[3],
        "data_id": r[4],
        "passed": bool(r[5]),
        "report": json.loads(r[6]),
        "time": r[7],
        "user": r[8],
    }


def list_gates(store: Store, name: str | None = None, version: int | None = None) -> list[dict]:
    """Gate verdicts, oldest first (of one model, or one version of it)."""
    sql, args = f"SELECT {_COLS}", []
    where = []
    if name is not None:
        where.append("m.name=?")
        args.append(name)
    if version is not None:
        where.append("v.version=?")
        args.append(version)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_row(r) for r in store.read(sql + " ORDER BY g.id", tuple(args))]


def latest_gate(
    store: Store, name: str, version: int, baseline_version: int | None
) -> dict[str, Any] | None:
    """The newest verdict of `name` v`version` against `baseline_version` (None: against
    no production version), or None."""
    base = f"SELECT {_COLS} WHERE m.name=? AND v.version=? AND "
    if baseline_version is None:
        rows = store.read(
            base + "g.baseline_version IS NULL ORDER BY g.id DESC LIMIT 1", (name, version)
        )
    else:
        rows = store.read(
            base + "g.baseline_version=? ORDER BY g.id DESC LIMIT 1",
            (name, version, baseline_version),
        )
    return _row(rows[0]) if rows else None


def set_policy(store: Store, name: str, policy: dict[str, Any], user: str) -> None:
    """Replace the policy of model `name` (an empty dict removes it)."""
    with store.write() as c:
        mid = _model_id(c, name)
        if mid is None:
            raise ModelNotFoundError(f"no registered model named {name!r}")
        if not policy:
            c.execute("DELETE FROM model_policies WHERE model_id=?", (mid,))
            why = "policy removed"
        else:
            c.execute(
                upsert(
                    "model_policies", ("model_id", "policy", "updated", "created_by"), ("model_id",)
                ),
                (mid, json.dumps(policy, sort_keys=True), time.time(), user),
            )
            why = "policy: " + json.dumps(policy, sort_keys=True)
        _audit(c, mid, None, "policy", reason=why, user=user)


def get_policy(store: Store, name: str) -> dict[str, Any]:
    """The policy of model `name` ({} when it has none)."""
    rows = store.read(
        "SELECT p.policy FROM model_policies p JOIN models m ON m.id = p.model_id WHERE m.name=?",
        (name,),
    )
    return json.loads(rows[0][0]) if rows else {}
