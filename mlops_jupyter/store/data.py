"""SQL of the data area: data versions, run inputs/outputs, drift reports."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from ..errors import InvalidInputError, MlopsJupyterError
from .db import Store
from .sql import upsert

ROLES = ("input", "output")


class DataVersionNotFoundError(MlopsJupyterError, LookupError):
    """No data version matches the given id, id prefix or name."""


_VCOLS = (
    "v.id, v.vid, v.fingerprint, v.name, v.kind, v.source, v.n_rows, v.n_cols, v.size_bytes,"
    " v.schema, v.created"
)


def _vrow(r: tuple, with_profile: str | None = None) -> dict[str, Any]:
    d = {
        "_id": r[0],
        "id": r[1],
        "fingerprint": r[2],
        "name": r[3],
        "kind": r[4],
        "source": r[5],
        "n_rows": r[6],
        "n_cols": r[7],
        "size_bytes": r[8],
        "schema": json.loads(r[9]) if r[9] else None,
        "created": r[10],
    }
    if with_profile is not None:
        d["profile"] = json.loads(with_profile)
    return d


def save_version(store: Store, rec: dict[str, Any]) -> tuple[int, bool]:
    """Insert a data version unless one with the same fingerprint exists.

    Returns (row id, whether it was new). A record whose id already names a version of
    another fingerprint is refused (InvalidInputError): a forged or foreign record over the
    tracking server, never one made here (the id is the fingerprint's first 16 digits)."""
    # insert first: of two writers saving the same data at once, one inserts and the
    # other finds its row (a select first would let both try to insert)
    with store.write() as c:
        new = c.execute(
            "INSERT INTO data_versions(vid, fingerprint, name, kind, source, n_rows, n_cols,"
            " size_bytes, schema, profile, created) VALUES(?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT DO NOTHING RETURNING id",
            (
                rec["id"],
                rec["fingerprint"],
                rec.get("name"),
                rec["kind"],
                rec.get("source"),
                rec.get("n_rows"),
                rec.get("n_cols"),
                rec.get("size_bytes"),
                json.dumps(rec.get("schema")) if rec.get("schema") is not None else None,
                json.dumps(rec["profile"]) if rec.get("profile") is not None else None,
                time.time(),
            ),
        ).fetchone()
        if new is not None:
            return new[0], True
        row = c.execute(
            "SELECT id FROM data_versions WHERE fingerprint=?", (rec["fingerprint"],)
        ).fetchone()
        if row:
            if rec.get("name"):
                c.execute(
                    "UPDATE data_versions SET name=? WHERE id=? AND name IS NULL",
                    (rec["name"], row[0]),
                )
            if rec.get("profile") is not None:
                # a file first seen through a lazy scan gets its profile later
                c.execute(
                    "UPDATE data_versions SET profile=?, schema=coalesce(schema, ?),"
                    " n_rows=coalesce(n_rows, ?), n_cols=coalesce(n_cols, ?)"
                    " WHERE id=? AND profile IS NULL",
                    (
                        json.dumps(rec["profile"]),
                        json.dumps(rec.get("schema")),
                        rec.get("n_rows"),
                        rec.get("n_cols"),
                        row[0],
                    ),
                )
            return row[0], False
    raise InvalidInputError(
        f"data version id {rec['id']!r} already names a version of another fingerprint"
    )


def has_profile(store: Store, fingerprint: str) -> bool:
    """Whether a version with this fingerprint is stored with its column profile."""
    rows = store.read(
        "SELECT profile IS NOT NULL FROM data_versions WHERE fingerprint=?", (fingerprint,)
    )
    return bool(rows and rows[0][0])


def link_version(
    store: Store,
    rid: int,
    version_id: int,
    role: str,
    name: str | None = None,
    source: str | None = None,
) -> None:
    """Record that run `rid` used (input) or produced (output) a data version."""
    if role not in ROLES:
        raise InvalidInputError(f"role must be one of {ROLES}, got {role!r}")
    with store.write() as c:
        c.execute(
            upsert(
                "run_data",
                ("run_id", "version_id", "role", "name", "source", "created"),
                ("run_id", "version_id", "role"),
            ),
            (rid, version_id, role, name, source, time.time()),
        )


def resolve_version(store: Store, ref: str) -> int:
    """Row id of a data version from its id, a unique id prefix (>= 4), its fingerprint, or a
    name (the latest version recorded under that name)."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInputError(f"a data version is referred to by id or name, got {ref!r}")
    ref = ref.strip()
    rows = store.read("SELECT id FROM data_versions WHERE vid=? OR fingerprint=?", (ref, ref))
    if rows:
        return rows[0][0]
    if len(ref) >= 4:
        rows = store.read(
            "SELECT id FROM data_versions WHERE vid >= ? AND vid < ? LIMIT 2", (ref, ref + "g")
        )
        if len(rows) == 1:
            return rows[0][0]
        if len(rows) > 1:
            raise DataVersionNotFoundError(f"data version prefix {ref!r} is ambiguous")
    rows = store.read(
        "SELECT version_id, created FROM run_data WHERE name=? "
        "UNION ALL SELECT id, created FROM data_versions WHERE name=? "
        "ORDER BY created DESC LIMIT 1",
        (ref, ref),
    )
    if rows:
        return rows[0][0]
    raise DataVersionNotFoundError(f"no data version with id or name {ref!r} in {store.location}")


def get_version(store: Store, version_id: int) -> dict[str, Any]:
    """A data version with its profile (list of column profiles, or None)."""
    rows = store.read(
        f"SELECT {_VCOLS}, v.profile FROM data_versions v WHERE v.id=?", (version_id,)
    )
    if not rows:
        raise DataVersionNotFoundError(f"no data version with row id {version_id}")
    return _vrow(rows[0][:-1], rows[0][-1] or "null")


def list_versions(store: Store, name: str | None = None, limit: int = 200) -> list[dict]:
    """Data versions, newest first (without profiles)."""
    if name is None:
        rows = store.read(
            f"SELECT {_VCOLS} FROM data_versions v ORDER BY v.id DESC LIMIT ?", (limit,)
        )
    else:
        rows = store.read(
            f"SELECT DISTINCT {_VCOLS} FROM data_versions v LEFT JOIN run_data d"
            " ON d.version_id=v.id WHERE v.name=? OR d.name=? ORDER BY v.id DESC LIMIT ?",
            (name, name, limit),
        )
    return [_vrow(r) for r in rows]


def versions_for_run(store: Store, rid: int) -> list[dict]:
    """Data versions a run used and produced: dicts with id, name, role, kind, fingerprint,
    source, n_rows, n_cols, size_bytes, schema, created, linked (time of the link)."""
    return [{k: v for k, v in d.items() if k != "_id"} for d in run_versions(store, rid)]


def run_versions(store: Store, rid: int) -> list[dict]:
    """versions_for_run plus each version's row id (`_id`)."""
    rows = store.read(
        f"SELECT {_VCOLS}, d.role, d.name, d.source, d.created FROM run_data d"
        " JOIN data_versions v ON v.id=d.version_id WHERE d.run_id=? ORDER BY d.created, v.id",
        (rid,),
    )
    out = []
    for r in rows:
        d = _vrow(r[:11])
        d["role"] = r[11]
        d["name"] = r[12] or d["name"]
        d["source"] = r[13] or d["source"]
        d["linked"] = r[14]
        out.append(d)
    return out


def runs_for_version(store: Store, version_id: int) -> list[dict]:
    """Runs that used or produced a data version: run id, name, status, role."""
    rows = store.read(
        "SELECT r.id, r.uid, r.name, r.status, r.start_time, d.role, d.name FROM run_data d"
        " JOIN runs r ON r.id=d.run_id WHERE d.version_id=? ORDER BY r.start_time",
        (version_id,),
    )
    return [
        {
            "_id": r[0],
            "run_id": r[1],
            "run_name": r[2],
            "status": r[3],
            "start_time": r[4],
            "role": r[5],
            "name": r[6],
        }
        for r in rows
    ]


def save_drift(store: Store, rec: dict[str, Any]) -> str:
    """Store a drift result; returns its public id (`rec["uid"]` when given: a client of the
    tracking server names its report, so a retried request finds it instead of adding one)."""
    uid = rec.get("uid") or secrets.token_hex(6)
    with store.write() as c:
        c.execute(
            "INSERT INTO drift_reports(uid, run_id, ref_version_id, cur_version_id, created,"
            " n_columns, n_drifted, drift_share, dataset_drift, mode, result)"
            " VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (
                uid,
                rec.get("run_rid"),
                rec.get("ref_version_rid"),
                rec.get("cur_version_rid"),
                time.time(),
                rec["n_columns"],
                rec["n_drifted"],
                rec["drift_share"],
                int(bool(rec["dataset_drift"])),
                rec["mode"],
                json.dumps(rec["result"], default=str),
            ),
        )
    return uid


_DCOLS = (
    "d.uid, r.uid, rv.vid, rv.name, cv.vid, cv.name, d.created, d.n_columns, d.n_drifted,"
    " d.drift_share, d.dataset_drift, d.mode, d.result"
)
_DJOIN = (
    "FROM drift_reports d LEFT JOIN runs r ON r.id=d.run_id"
    " LEFT JOIN data_versions rv ON rv.id=d.ref_version_id"
    " LEFT JOIN data_versions cv ON cv.id=d.cur_version_id"
)


def _drow(r: tuple) -> dict[str, Any]:
    result = json.loads(r[12])
    return {
        "id": r[0],
        "run_id": r[1],
        "reference": {"id": r[2], "name": r[3]},
        "current": {"id": r[4], "name": r[5]},
        "created": r[6],
        "n_columns": r[7],
        "n_drifted": r[8],
        "drift_share": r[9],
        "dataset_drift": bool(r[10]),
        "mode": r[11],
        "columns": result.get("columns", []),
        "settings": result.get("settings", {}),
    }


def drift_reports(store: Store, rid: int | None = None, limit: int = 50) -> list[dict]:
    """Stored drift results, newest first (all, or those of run `rid`). Each dict has id,
    run_id, reference/current ({id, name} of the versions), created, n_columns, n_drifted,
    drift_share, dataset_drift, mode, columns (per-column verdicts) and settings."""
    if rid is None:
        rows = store.read(f"SELECT {_DCOLS} {_DJOIN} ORDER BY d.id DESC LIMIT ?", (limit,))
    else:
        rows = store.read(
            f"SELECT {_DCOLS} {_DJOIN} WHERE d.run_id=? ORDER BY d.id DESC LIMIT ?", (rid, limit)
        )
    return [_drow(r) for r in rows]


def get_drift(store: Store, uid: str) -> dict[str, Any]:
    """One stored drift result by id."""
    rows = store.read(f"SELECT {_DCOLS} {_DJOIN} WHERE d.uid=?", (uid,))
    if not rows:
        raise DataVersionNotFoundError(f"no drift report {uid!r}")
    return _drow(rows[0])


def run_info(store: Store, rid: int) -> dict[str, Any]:
    """id, name, status, experiment of a run row."""
    rows = store.read(
        "SELECT r.uid, r.name, r.status, e.name FROM runs r JOIN experiments e"
        " ON e.id=r.experiment_id WHERE r.id=?",
        (rid,),
    )
    if not rows:
        from ..errors import RunNotFoundError

        raise RunNotFoundError(f"no run with row id {rid}")
    return {
        "_id": rid,
        "id": rows[0][0],
        "name": rows[0][1],
        "status": rows[0][2],
        "experiment": rows[0][3],
    }


def latest_run(store: Store) -> int | None:
    """Row id of the most recently started run, or None."""
    rows = store.read("SELECT id FROM runs ORDER BY start_time DESC, id DESC LIMIT 1")
    return rows[0][0] if rows else None
