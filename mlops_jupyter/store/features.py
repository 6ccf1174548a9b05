"""SQL of the feature store: feature view versions, their offline materializations and the
lineage of training sets. The rules (which definition gets which version) are checked inside
the write transaction that applies them, so two kernels registering at once agree."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import InvalidInputError, MlopsJupyterError
from .db import Store


class FeatureViewNotFoundError(InvalidInputError, LookupError):
    """No feature view (or version of one) matches (a bad reference: InvalidInputError)."""


class FeatureVersionConflictError(InvalidInputError):
    """A feature view version already exists with another definition."""


_VIEW_COLS = (
    "v.id, v.name, v.version, v.entities, v.ts_column, v.ttl_s, v.schema, v.def_hash,"
    " v.code_hash, v.code, v.description, v.owner, v.created"
)
# the latest materialization of each view, joined to its row (LEFT: a view is registered
# with its first materialization, but a reader must not lose a view if that write failed)
_VIEW_FROM = (
    "FROM feature_views v LEFT JOIN feature_materializations m ON m.id ="
    " (SELECT max(id) FROM feature_materializations WHERE view_id = v.id)"
    " LEFT JOIN data_versions d ON d.id = m.data_version_id"
)
_MAT_COLS = (
    "m.id, m.data_version_id, d.vid, m.digest, m.size, m.n_rows, m.oldest, m.newest, m.created"
)


def _view(r: tuple) -> dict[str, Any]:
    d = {
        "_id": r[0],
        "name": r[1],
        "version": r[2],
        "entities": json.loads(r[3]),
        "timestamp": r[4],
        "ttl_s": r[5],
        "schema": json.loads(r[6]),
        "def_hash": r[7],
        "code_hash": r[8],
        "code": r[9],
        "description": r[10],
        "owner": r[11],
        "created": r[12],
    }
    m = r[13:]
    d["materialization"] = (
        None
        if m[0] is None
        else {
            "_id": m[0],
            "_data_version_id": m[1],
            "data_version": m[2],
            "digest": m[3],
            "size": m[4],
            "n_rows": m[5],
            "oldest": m[6],
            "newest": m[7],
            "created": m[8],
        }
    )
    return d


def register_view(store: Store, rec: dict[str, Any], version: int | None) -> tuple[int, int, bool]:
    """The row of the view version `rec` defines: found by its definition hash (same name +
    same definition -> same version), else a new version (max + 1, or `version` when given).
    `version` naming an existing version with another definition is refused.

    Returns (row id, version, whether it was new)."""
    cols = (
        "name, version, entities, ts_column, ttl_s, schema, def_hash, code_hash, code,"
        " description, owner, created"
    )
    for _ in range(20):  # another writer may take the same next version: try the next one
        with store.write("register a feature view") as c:
            if version is not None:
                row = c.execute(
                    "SELECT id, def_hash, code_hash FROM feature_views WHERE name=? AND version=?",
                    (rec["name"], version),
                ).fetchone()
                if row is not None:
                    if row[1] == rec["def_hash"]:
                        return row[0], version, False
                    what = (
                        "code changed"
                        if row[2] != rec.get("code_hash")
                        else "definition (entity, timestamp, ttl or schema) changed"
                    )
                    raise FeatureVersionConflictError(
                        f"feature view {rec['name']!r} version {version}: {what} without a new "
                        f"version; pass a new version (or none, to get the next one)"
                    )
                new_version = version
            else:
                row = c.execute(
                    "SELECT id, version FROM feature_views WHERE name=? AND def_hash=?"
                    " ORDER BY version DESC LIMIT 1",
                    (rec["name"], rec["def_hash"]),
                ).fetchone()
                if row is not None:
                    return row[0], row[1], False
                top = c.execute(
                    "SELECT max(version) FROM feature_views WHERE name=?", (rec["name"],)
                ).fetchone()
                new_version = (top[0] or 0) + 1
            got = c.execute(
                f"INSERT INTO feature_views({cols}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(name, version) DO NOTHING RETURNING id",
                (
                    rec["name"],
                    new_version,
                    json.dumps(rec["entities"]),
                    rec["timestamp"],
                    rec.get("ttl_s"),
                    json.dumps(rec["schema"]),
                    rec["def_hash"],
                    rec.get("code_hash"),
                    rec.get("code"),
                    rec.get("description"),
                    rec.get("owner"),
                    time.time(),
                ),
            ).fetchone()
            if got is not None:
                return got[0], new_version, True
    raise MlopsJupyterError(f"could not register feature view {rec['name']!r}: too many races")


def add_materialization(store: Store, view_id: int, rec: dict[str, Any]) -> int:
    """Record an offline materialization of a view version (unless it is the latest one of
    its name already); returns its row id."""
    with store.write("record a feature materialization") as c:
        # the latest materialization of any version of this name: the same data for the same
        # version is not recorded twice; for another version it makes this one current again
        last = c.execute(
            "SELECT m.id, m.view_id, m.data_version_id, m.digest FROM feature_materializations m"
            " JOIN feature_views v ON v.id = m.view_id"
            " WHERE v.name = (SELECT name FROM feature_views WHERE id=?)"
            " ORDER BY m.id DESC LIMIT 1",
            (view_id,),
        ).fetchone()
        if last is not None and tuple(last[1:]) == (
            view_id,
            rec["data_version_id"],
            rec["digest"],
        ):
            return last[0]
        return c.execute(
            "INSERT INTO feature_materializations(view_id, data_version_id, digest, size,"
            " n_rows, oldest, newest, created) VALUES(?,?,?,?,?,?,?,?) RETURNING id",
            (
                view_id,
                rec["data_version_id"],
                rec["digest"],
                rec["size"],
                rec["n_rows"],
                rec.get("oldest"),
                rec.get("newest"),
                time.time(),
            ),
        ).fetchone()[0]


def get_view(store: Store, name: str, version: int | None = None) -> dict[str, Any]:
    """A view version (the latest when `version` is None) with its latest materialization."""
    if version is None:
        # the version materialized last: re-running reverted code makes its (older) version
        # the current one again
        rows = store.read(
            f"SELECT {_VIEW_COLS}, {_MAT_COLS} {_VIEW_FROM} WHERE v.name=?"
            " ORDER BY coalesce(m.id, 0) DESC, v.version DESC LIMIT 1",
            (name,),
        )
    else:
        rows = store.read(
            f"SELECT {_VIEW_COLS}, {_MAT_COLS} {_VIEW_FROM} WHERE v.name=? AND v.version=?",
            (name, version),
        )
    if not rows:
        known = sorted({r[0] for r in store.read("SELECT DISTINCT name FROM feature_views")})
        if version is not None and name in known:
            raise FeatureViewNotFoundError(f"feature view {name!r} has no version {version}")
        raise FeatureViewNotFoundError(
            f"no feature view named {name!r}"
            + (f" (known: {', '.join(known[:20])})" if known else " (none registered yet)")
        )
    return _view(rows[0])


def list_views(store: Store, all_versions: bool = False) -> list[dict[str, Any]]:
    """Feature views by name: every version, or only the current one of each (the version
    materialized last, as get_view picks it)."""
    rows = store.read(f"SELECT {_VIEW_COLS}, {_MAT_COLS} {_VIEW_FROM} ORDER BY v.name, v.version")
    views = [_view(r) for r in rows]
    if all_versions:
        return views
    current: dict[str, dict[str, Any]] = {}
    for d in views:
        best = current.get(d["name"])
        mat = (d["materialization"] or {}).get("_id") or 0
        if best is None or (mat, d["version"]) > (
            (best["materialization"] or {}).get("_id") or 0,
            best["version"],
        ):
            current[d["name"]] = d
    return list(current.values())


def materializations(store: Store, view_id: int) -> list[dict[str, Any]]:
    """Every offline materialization of a view version, oldest first."""
    rows = store.read(
        f"SELECT {_MAT_COLS} FROM feature_materializations m"
        " JOIN data_versions d ON d.id = m.data_version_id WHERE m.view_id=? ORDER BY m.id",
        (view_id,),
    )
    keys = ("_id", "_data_version_id", "data_version", "digest", "size", "n_rows", "oldest")
    return [dict(zip((*keys, "newest", "created"), r)) for r in rows]


def record_training_set(
    store: Store, version_id: int, labels_id: int, sources: list[dict[str, Any]]
) -> None:
    """Lineage of training set `version_id`: its labels' data version and, per feature
    view, the materialization's data version and the features taken."""
    now = time.time()
    sql = (
        "INSERT INTO training_set_sources(version_id, role, source_id, view_id, features,"
        " created) VALUES(?,?,?,?,?,?) ON CONFLICT DO NOTHING"
    )
    with store.write("record training-set lineage") as c:
        c.execute(sql, (version_id, "labels", labels_id, 0, None, now))
        for s in sources:
            c.execute(
                sql,
                (
                    version_id,
                    "features",
                    s["data_version_id"],
                    s["view_id"],
                    json.dumps(s["features"]),
                    now,
                ),
            )


def training_set_sources(store: Store, version_id: int) -> list[dict[str, Any]]:
    """What training set `version_id` was built from: {role, data_version, view, version,
    features} rows (labels first)."""
    rows = store.read(
        "SELECT s.role, d.vid, v.name, v.version, s.features FROM training_set_sources s"
        " JOIN data_versions d ON d.id = s.source_id"
        " LEFT JOIN feature_views v ON v.id = s.view_id"
        " WHERE s.version_id=? ORDER BY s.role DESC, v.name",
        (version_id,),
    )
    return [
        {
            "role": r[0],
            "data_version": r[1],
            "view": r[2],
            "version": r[3],
            "features": json.loads(r[4]) if r[4] else None,
        }
        for r in rows
    ]


def view_usage(store: Store, name: str) -> list[dict[str, Any]]:
    """Training sets built from any version of view `name`, with the runs that used them:
    {version, training_set, run (uid or None), run_name, created}, newest first."""
    rows = store.read(
        "SELECT DISTINCT v.version, d.vid, r.uid, r.name, s.created"
        " FROM training_set_sources s JOIN feature_views v ON v.id = s.view_id"
        " JOIN data_versions d ON d.id = s.version_id"
        " LEFT JOIN run_data rd ON rd.version_id = s.version_id"
        " LEFT JOIN runs r ON r.id = rd.run_id"
        " WHERE v.name=? AND s.role='features' ORDER BY s.created DESC, d.vid",
        (name,),
    )
    keys = ("version", "training_set", "run", "run_name", "created")
    return [dict(zip(keys, r)) for r in rows]
