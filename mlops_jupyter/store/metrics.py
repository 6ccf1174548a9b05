"""Metric points in the store: chunk append, tail merge, summaries, and series reads."""

from __future__ import annotations

import numpy as np

from . import codec
from .base import Conn
from .db import Store
from .sql import upsert

_CHUNK_UPSERT = upsert(
    "metric_chunks",
    ("run_id", "key_id", "seq", "n", "min_step", "max_step", "data"),
    ("run_id", "key_id", "seq"),
)


def key_ids(c: Conn, keys: list[str], cache: dict[str, int]) -> None:
    """Intern metric keys into `cache` (key -> id), inserting unknown ones."""
    missing = sorted({k for k in keys if k not in cache})  # one order: no deadlock
    if not missing:
        return
    c.executemany(
        "INSERT INTO metric_keys(key) VALUES(?) ON CONFLICT DO NOTHING", [(k,) for k in missing]
    )
    for i in range(0, len(missing), 500):
        part = missing[i : i + 500]
        q = f"SELECT key, id FROM metric_keys WHERE key IN ({','.join('?' * len(part))})"
        cache.update(c.execute(q, part).fetchall())


def next_position(c: Conn, run_id: int, key_id: int) -> tuple[int, int]:
    """(next chunk seq, next automatic step) for a run/key already in the store."""
    row = c.execute(
        "SELECT coalesce(max(seq), -1) + 1 FROM metric_chunks WHERE run_id=? AND key_id=?",
        (run_id, key_id),
    ).fetchone()
    srow = c.execute(
        "SELECT last_step FROM metric_summary WHERE run_id=? AND key_id=?", (run_id, key_id)
    ).fetchone()
    return int(row[0]), (int(srow[0]) + 1 if srow and srow[0] is not None else 0)


def append_chunk(
    c: Conn,
    run_id: int,
    key_id: int,
    seq: int,
    steps: np.ndarray,
    ts_ms: np.ndarray,
    values: np.ndarray,
) -> None:
    """Write one chunk and fold it into the run/key summary (inside a transaction)."""
    n = len(values)
    c.execute(
        _CHUNK_UPSERT,
        (
            run_id,
            key_id,
            seq,
            n,
            int(steps.min()),
            int(steps.max()),
            codec.encode(steps, ts_ms, values),
        ),
    )
    finite = values[~np.isnan(values)]
    vmin = float(finite.min()) if len(finite) else None
    vmax = float(finite.max()) if len(finite) else None
    last = float(values[-1])
    c.execute(
        "INSERT INTO metric_summary AS s VALUES(?,?,?,?,?,?,?,?)"
        " ON CONFLICT(run_id, key_id) DO UPDATE"
        " SET n = s.n + excluded.n, last_step = excluded.last_step,"
        " last_value = excluded.last_value, last_ts = excluded.last_ts,"
        " min_value = CASE WHEN excluded.min_value IS NULL OR s.min_value <= excluded.min_value"
        " THEN coalesce(s.min_value, excluded.min_value) ELSE excluded.min_value END,"
        " max_value = CASE WHEN excluded.max_value IS NULL OR s.max_value >= excluded.max_value"
        " THEN coalesce(s.max_value, excluded.max_value) ELSE excluded.max_value END",
        (
            run_id,
            key_id,
            n,
            int(steps[-1]),
            last if not np.isnan(last) else None,
            int(ts_ms[-1]) / 1000.0,
            vmin,
            vmax,
        ),
    )


def merge_chunks(c: Conn, run_id: int, key_id: int, from_seq: int) -> int:
    """Merge chunks seq >= from_seq of one run/key into a single chunk at from_seq.

    Returns the merged point count. Summaries are unchanged (same points)."""
    rows = c.execute(
        "SELECT data FROM metric_chunks WHERE run_id=? AND key_id=? AND seq>=? ORDER BY seq",
        (run_id, key_id, from_seq),
    ).fetchall()
    if len(rows) <= 1:
        return 0 if not rows else codec.decode(rows[0][0])[2].size
    steps, ts, vals = codec.decode_many([r[0] for r in rows])
    c.execute(
        "DELETE FROM metric_chunks WHERE run_id=? AND key_id=? AND seq>=?",
        (run_id, key_id, from_seq),
    )
    c.execute(
        "INSERT INTO metric_chunks VALUES(?,?,?,?,?,?,?)",
        (
            run_id,
            key_id,
            from_seq,
            len(vals),
            int(steps.min()),
            int(steps.max()),
            codec.encode(steps, ts, vals),
        ),
    )
    return len(vals)


def read_series(
    store: Store, run_id: int, key_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All points of one run/key in logging order: (steps, ts_ms, values)."""
    rows = store.read(
        "SELECT data FROM metric_chunks WHERE run_id=? AND key_id=? ORDER BY seq",
        (run_id, key_id),
    )
    return codec.decode_many([r[0] for r in rows])


def last_values(store: Store, rid: int) -> dict[str, float]:
    """The last logged value of each (non-system) metric of run `rid`."""
    rows = store.read(
        "SELECT k.key, s.last_value FROM metric_summary s JOIN metric_keys k ON k.id=s.key_id"
        " WHERE s.run_id=? AND k.key NOT LIKE 'sys/%'",
        (rid,),
    )
    return {k: v for k, v in rows if v is not None}


def append_series(
    store: Store,
    rid: int,
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    chunk: int = 4096,
) -> int:
    """Append points with their own steps and millisecond timestamps to run `rid`, in one
    transaction: {key: (steps int64, ts_ms int64, values float64)}, each in logging order.
    For points recorded elsewhere (imports); live logging goes through the writer.
    Returns the number of points written."""
    total = 0
    with store.write("write imported metric points") as c:
        ids: dict[str, int] = {}
        key_ids(c, sorted(series), ids)
        for key in sorted(series):
            steps, ts_ms, values = (
                np.asarray(a, t) for a, t in zip(series[key], (np.int64, np.int64, np.float64))
            )
            seq, _ = next_position(c, rid, ids[key])
            for i in range(0, len(values), chunk):
                sl = slice(i, i + chunk)
                append_chunk(c, rid, ids[key], seq, steps[sl], ts_ms[sl], values[sl])
                seq += 1
            total += len(values)
    return total
