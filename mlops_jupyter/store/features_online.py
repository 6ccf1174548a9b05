"""SQL of the feature store's online store: the latest feature values per entity (the
default online backend, a table of the team store) and the log of online materializations
(for every backend). Upserts keep the newer value: a row whose feature timestamp is older
than the stored one never overwrites it."""

from __future__ import annotations

import time
from typing import Any

from .db import Store

_UPSERT = (
    "INSERT INTO feature_online(view, version, entity, ts, vals, written) VALUES(?,?,?,?,?,?)"
    " ON CONFLICT(view, version, entity) DO UPDATE SET ts=excluded.ts, vals=excluded.vals,"
    " written=excluded.written WHERE excluded.ts >= feature_online.ts"
)
_CHUNK = 500  # entity keys per IN (...) read; well under both databases' parameter limits


def upsert_online(store: Store, view: str, version: int, rows: list[tuple[str, float, str]]) -> int:
    """Write (entity key, feature ts, JSON values) rows of a view version in one
    transaction (all or nothing); an older ts never replaces a newer one. Returns len(rows)."""
    now = time.time()
    with store.write("write online features") as c:
        c.executemany(_UPSERT, [(view, version, k, ts, v, now) for k, ts, v in rows])
    return len(rows)


def read_online(
    store: Store, view: str, version: int, keys: list[str]
) -> dict[str, tuple[float, str]]:
    """{entity key: (feature ts, JSON values)} of the `keys` found for a view version."""
    out: dict[str, tuple[float, str]] = {}
    uniq = list(dict.fromkeys(keys))
    for i in range(0, len(uniq), _CHUNK):
        part = uniq[i : i + _CHUNK]
        # pad to a few fixed lengths (repeating a key): the same statement text each time
        # lets the driver reuse its parsed form instead of re-splitting a new one per call
        size = next(n for n in (1, 8, 32, 128, _CHUNK) if n >= len(part))
        part = part + [part[-1]] * (size - len(part))
        marks = ",".join("?" * size)
        rows = store.read(
            "SELECT entity, ts, vals FROM feature_online WHERE view=? AND version=?"
            f" AND entity IN ({marks})",
            (view, version, *part),
            what="read online features",
        )
        out.update({r[0]: (r[1], r[2]) for r in rows})
    return out


def record_online_materialization(
    store: Store,
    view_id: int,
    backend: str,
    start: float | None,
    end: float,
    n_rows: int,
    key: str | None = None,
) -> int:
    """Log that `n_rows` entities of view version `view_id` were written to `backend` for
    feature timestamps in [start, end]; returns the row id. `key`: the client's request
    key; an entry sent again with it (a retry after a lost answer) returns the first
    entry's id and logs nothing."""
    with store.write("record an online materialization") as c:
        row = c.execute(
            "INSERT INTO feature_online_materializations(view_id, backend, range_start,"
            " range_end, n_rows, created, request_key) VALUES(?,?,?,?,?,?,?)"
            " ON CONFLICT(view_id, request_key) DO NOTHING RETURNING id",
            (view_id, backend, start, end, n_rows, time.time(), key),
        ).fetchone()
        if row is None:  # only with a key (NULL keys never conflict): logged before
            row = c.execute(
                "SELECT id FROM feature_online_materializations WHERE view_id=? AND request_key=?",
                (view_id, key),
            ).fetchone()
        return row[0]


def online_materializations(
    store: Store, view: str | None = None, backend: str | None = None
) -> list[dict[str, Any]]:
    """Online materializations, newest first: {view, version, backend, start, end, rows,
    created}, of one view name and/or backend when given."""
    where, args = [], []
    if view is not None:
        where.append("v.name=?")
        args.append(view)
    if backend is not None:
        where.append("m.backend=?")
        args.append(backend)
    rows = store.read(
        "SELECT v.name, v.version, m.backend, m.range_start, m.range_end, m.n_rows, m.created"
        " FROM feature_online_materializations m JOIN feature_views v ON v.id = m.view_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY m.id DESC",
        tuple(args),
    )
    keys = ("view", "version", "backend", "start", "end", "rows", "created")
    return [dict(zip(keys, r)) for r in rows]


def has_online(store: Store, view_id: int, backend: str) -> bool:
    """Whether view version `view_id` was ever materialized to `backend`."""
    return bool(
        store.read(
            "SELECT 1 FROM feature_online_materializations WHERE view_id=? AND backend=? LIMIT 1",
            (view_id, backend),
        )
    )
