"""SQL of the model registry (versions, stage transitions, aliases, audit log) and of the
small run-event updates sweeps need. Stage rules are checked inside the same write
transaction that applies them, so two promotions racing cannot both win."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import InvalidInputError, MlopsJupyterError
from .db import Store
from .sql import upsert

_VERSION_COLS = (
    "v.id, m.name, v.version, v.stage, v.flavor, v.path, v.digest, v.size, r.uid, "
    "v.metrics, v.meta, v.created, v.created_by"
)
_VERSION_FROM = (
    "FROM model_versions v JOIN models m ON m.id = v.model_id LEFT JOIN runs r ON r.id = v.run_id"
)


class ModelNotFoundError(MlopsJupyterError, LookupError):
    """No registered model (or version, stage, alias) matches."""


class StageTransitionError(MlopsJupyterError, ValueError):
    """A stage change the registry rules do not allow."""


def _row_to_dict(row: tuple, aliases: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": row[0],
        "name": row[1],
        "version": row[2],
        "stage": row[3],
        "flavor": row[4],
        "path": row[5],
        "digest": row[6],
        "size": row[7],
        "run_id": row[8],
        "metrics": json.loads(row[9]) if row[9] else {},
        "meta": json.loads(row[10]) if row[10] else {},
        "created": row[11],
        "created_by": row[12],
        "aliases": aliases or [],
    }


def _model_id(c, name: str) -> int | None:
    row = c.execute("SELECT id FROM models WHERE name=?", (name,)).fetchone()
    return row[0] if row else None


def _audit(c, model_id, version_id, action, frm=None, to=None, alias=None, reason=None, user=None):
    c.execute(
        "INSERT INTO model_audit(model_id, version_id, ts, action, from_stage, to_stage, alias,"
        ' reason, "user") VALUES(?,?,?,?,?,?,?,?,?)',
        (model_id, version_id, time.time(), action, frm, to, alias, reason, user),
    )


def create_version(
    store: Store,
    name: str,
    flavor: str,
    path: str,
    digest: str,
    size: int,
    run_rid: int | None,
    metrics: dict | None,
    meta: dict | None,
    user: str,
    description: str | None = None,
) -> int:
    """Add the next version of model `name` (creating the model); return its number."""
    now = time.time()
    with store.write() as c:
        mid = _model_id(c, name)
        if mid is None:
            c.execute(
                "INSERT INTO models(name, created, description) VALUES(?,?,?)"
                " ON CONFLICT(name) DO NOTHING",
                (name, now, description),
            )
            mid = _model_id(c, name)
        # taking the model row's lock (PostgreSQL) numbers concurrent registrations
        # 1, 2, 3... without a duplicate; SQLite's write lock already serialises them
        c.execute(
            "UPDATE models SET description = coalesce(?, description) WHERE id=?",
            (description, mid),
        )
        version = (
            c.execute(
                "SELECT coalesce(max(version), 0) FROM model_versions WHERE model_id=?", (mid,)
            ).fetchone()[0]
            + 1
        )
        vid = c.execute(
            "INSERT INTO model_versions(model_id, version, stage, flavor, path, digest, size,"
            " run_id, metrics, meta, created, created_by) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)"
            " RETURNING id",
            (
                mid,
                version,
                "none",
                flavor,
                path,
                digest,
                size,
                run_rid,
                json.dumps(metrics or {}, default=float),
                json.dumps(meta or {}, default=str),
                now,
                user,
            ),
        ).fetchone()[0]
        _audit(c, mid, vid, "register", None, "none", reason=None, user=user)
    return version


def _aliases_of(store: Store, version_ids: list[int]) -> dict[int, list[str]]:
    if not version_ids:
        return {}
    rows = store.read(
        f"SELECT version_id, alias FROM model_aliases WHERE version_id IN "
        f"({','.join('?' * len(version_ids))}) ORDER BY alias",
        version_ids,
    )
    out: dict[int, list[str]] = {}
    for vid, alias in rows:
        out.setdefault(vid, []).append(alias)
    return out


def find_version(
    store: Store,
    name: str,
    version: int | None = None,
    stage: str | None = None,
    alias: str | None = None,
) -> dict[str, Any]:
    """One version of `name` by number, stage (newest in it) or alias; with none of them the
    production version if there is one, else the newest version."""
    if not store.read("SELECT 1 FROM models WHERE name=?", (name,)):
        known = [r[0] for r in store.read("SELECT name FROM models ORDER BY name LIMIT 20")]
        raise ModelNotFoundError(
            f"no registered model named {name!r}"
            + (f"; known models: {', '.join(known)}" if known else "; the registry is empty")
        )
    base = f"SELECT {_VERSION_COLS} {_VERSION_FROM} WHERE m.name=?"
    if version is not None:
        rows = store.read(base + " AND v.version=?", (name, version))
        what = f"version {version}"
    elif alias is not None:
        rows = store.read(
            base + " AND v.id = (SELECT a.version_id FROM model_aliases a JOIN models m2"
            " ON m2.id = a.model_id WHERE m2.name=? AND a.alias=?)",
            (name, name, alias),
        )
        what = f"alias {alias!r}"
    elif stage is not None:
        rows = store.read(base + " AND v.stage=? ORDER BY v.version DESC LIMIT 1", (name, stage))
        what = f"version in stage {stage!r}"
    else:
        rows = store.read(
            base + " ORDER BY (v.stage='production') DESC, v.version DESC LIMIT 1", (name,)
        )
        what = "versions"
    if not rows:
        msg = f"model {name!r} has no {what}"
        if stage is not None:  # say where its versions are, so the fix is obvious
            stages = [
                r[0]
                for r in store.read(
                    "SELECT DISTINCT v.stage FROM model_versions v JOIN models m"
                    " ON m.id = v.model_id WHERE m.name=? ORDER BY v.stage",
                    (name,),
                )
            ]
            if stages:
                msg += f" (its versions are in: {', '.join(stages)}; see mj.promote_model)"
        raise ModelNotFoundError(msg)
    return _row_to_dict(rows[0], _aliases_of(store, [rows[0][0]]).get(rows[0][0]))


def list_versions(store: Store, name: str | None = None) -> list[dict[str, Any]]:
    """Every version (of one model, or of all), newest first within each model."""
    sql = f"SELECT {_VERSION_COLS} {_VERSION_FROM}"
    args: tuple = ()
    if name is not None:
        sql += " WHERE m.name=?"
        args = (name,)
    rows = store.read(sql + " ORDER BY m.name, v.version DESC", args)
    aliases = _aliases_of(store, [r[0] for r in rows])
    return [_row_to_dict(r, aliases.get(r[0])) for r in rows]


def transition(
    store: Store,
    name: str,
    version: int,
    stage: str,
    allowed: dict[str, tuple[str, ...]],
    reason: str | None,
    user: str,
    archive_existing: bool,
) -> list[dict[str, Any]]:
    """Move a version to `stage` if `allowed[current]` contains it; when it enters
    production and `archive_existing`, other production versions are archived in the same
    transaction. Returns the audit entries written (dicts)."""
    changes: list[dict[str, Any]] = []
    with store.write() as c:
        mid = _model_id(c, name)
        if mid is None:
            raise ModelNotFoundError(f"no registered model named {name!r}")
        # Serialise stage changes of one model: on PostgreSQL this takes the model row's
        # lock (two concurrent promotions cannot both leave their version in production);
        # SQLite's write transaction is already exclusive.
        c.execute("UPDATE models SET description = description WHERE id=?", (mid,))
        row = c.execute(
            "SELECT id, stage FROM model_versions WHERE model_id=? AND version=?", (mid, version)
        ).fetchone()
        if row is None:
            raise ModelNotFoundError(f"model {name!r} has no version {version}")
        vid, current = row
        if stage == current:
            raise StageTransitionError(f"{name} v{version} is already in stage {stage!r}")
        if stage not in allowed.get(current, ()):
            ok = ", ".join(allowed.get(current, ())) or "nothing"
            raise StageTransitionError(
                f"{name} v{version}: cannot go from {current!r} to {stage!r}; "
                f"from {current!r} a version may go to: {ok}"
            )
        if stage == "production" and archive_existing:
            for other_id, other_v in c.execute(
                "SELECT id, version FROM model_versions WHERE model_id=? AND stage='production'"
                " AND id<>?",
                (mid, vid),
            ).fetchall():
                why = f"replaced by v{version}" + (f": {reason}" if reason else "")
                c.execute("UPDATE model_versions SET stage='archived' WHERE id=?", (other_id,))
                _audit(c, mid, other_id, "transition", "production", "archived", None, why, user)
                changes.append(
                    {"version": other_v, "from": "production", "to": "archived", "reason": why}
                )
        c.execute("UPDATE model_versions SET stage=? WHERE id=?", (stage, vid))
        _audit(c, mid, vid, "transition", current, stage, None, reason, user)
        changes.append({"version": version, "from": current, "to": stage, "reason": reason})
    return changes


def set_alias(store: Store, name: str, alias: str, version: int | None, user: str) -> int | None:
    """Point `alias` at `version` (None removes it). Returns the version it pointed to."""
    with store.write() as c:
        mid = _model_id(c, name)
        if mid is None:
            raise ModelNotFoundError(f"no registered model named {name!r}")
        prev = c.execute(
            "SELECT v.version FROM model_aliases a JOIN model_versions v ON v.id=a.version_id"
            " WHERE a.model_id=? AND a.alias=?",
            (mid, alias),
        ).fetchone()
        if version is None:
            if prev is None:
                raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}")
            c.execute("DELETE FROM model_aliases WHERE model_id=? AND alias=?", (mid, alias))
            _audit(c, mid, None, "unalias", alias=alias, reason=f"was v{prev[0]}", user=user)
            return prev[0]
        row = c.execute(
            "SELECT id FROM model_versions WHERE model_id=? AND version=?", (mid, version)
        ).fetchone()
        if row is None:
            raise ModelNotFoundError(f"model {name!r} has no version {version}")
        c.execute(
            upsert(
                "model_aliases",
                ("model_id", "alias", "version_id", "updated"),
                ("model_id", "alias"),
            ),
            (mid, alias, row[0], time.time()),
        )
        why = f"moved from v{prev[0]}" if prev else None
        _audit(c, mid, row[0], "alias", alias=alias, reason=why, user=user)
    return prev[0] if prev else None


def audit_log(store: Store, name: str | None = None) -> list[tuple]:
    """(ts, model, version, action, from, to, alias, reason, user) rows, oldest first."""
    sql = (
        "SELECT a.ts, m.name, v.version, a.action, a.from_stage, a.to_stage, a.alias, a.reason,"
        ' a."user" FROM model_audit a JOIN models m ON m.id=a.model_id'
        " LEFT JOIN model_versions v ON v.id=a.version_id"
    )
    args: tuple = ()
    if name is not None:
        sql += " WHERE m.name=?"
        args = (name,)
    return store.read(sql + " ORDER BY a.id", args)


def model_names(store: Store) -> list[str]:
    """Names of all registered models."""
    return [r[0] for r in store.read("SELECT name FROM models ORDER BY name")]


# -- run events sweeps need ---------------------------------------------------------------
def close_event(store: Store, event_id: int, data: dict | None = None) -> None:
    """Set the end time (now) of a run event opened with add_event(end=None)."""
    if not isinstance(event_id, int):
        raise InvalidInputError("event id must be an int")
    with store.write() as c:
        if data is None:
            c.execute("UPDATE run_events SET end_time=? WHERE id=?", (time.time(), event_id))
        else:
            c.execute(
                "UPDATE run_events SET end_time=?, data=? WHERE id=?",
                (time.time(), json.dumps(data, default=str), event_id),
            )
