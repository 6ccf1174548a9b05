"""Store queries for telemetry, alerts and live widgets: episode events with an end time,
and incremental reads of newly logged points (without re-reading whole histories)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from . import codec
from .db import Store


def close_event(store: Store, event_id: int, end: float, data: dict | None = None) -> None:
    """Set the end time (and optionally the final data) of an open event."""
    with store.write() as c:
        if data is None:
            c.execute("UPDATE run_events SET end_time=? WHERE id=?", (end, event_id))
        else:
            c.execute(
                "UPDATE run_events SET end_time=?, data=? WHERE id=?",
                (end, json.dumps(data, default=str), event_id),
            )


def list_events(
    store: Store, rids: list[int] | None, kinds: tuple[str, ...], since_id: int = 0
) -> list[tuple]:
    """Events of the given kinds (all runs when rids is None), newest first:
    (event id, run uid, run name, kind, level, message, start, end, data JSON, run status)."""
    cond = [f"ev.kind IN ({','.join('?' * len(kinds))})", "ev.id > ?"]
    args: list[Any] = [*kinds, since_id]
    if rids is not None:
        if not rids:
            return []
        cond.append(f"ev.run_id IN ({','.join('?' * len(rids))})")
        args.extend(rids)
    return store.read(
        "SELECT ev.id, r.uid, r.name, ev.kind, ev.level, ev.message, ev.start_time,"
        " ev.end_time, ev.data, r.status FROM run_events ev JOIN runs r ON r.id = ev.run_id"
        f" WHERE {' AND '.join(cond)} ORDER BY ev.start_time DESC, ev.id DESC",
        args,
    )


def metric_counts(store: Store, rid: int, system: bool = False) -> dict[str, tuple[int, int]]:
    """{key: (key id, points stored)} of one run; `sys/` keys only when system=True."""
    flt = "" if system else "AND k.key NOT LIKE 'sys/%'"
    rows = store.read(
        "SELECT k.key, s.key_id, s.n FROM metric_summary s JOIN metric_keys k ON k.id = s.key_id"
        f" WHERE s.run_id=? {flt}",
        (rid,),
    )
    return {k: (kid, n) for k, kid, n in rows}


def new_points(
    store: Store, rid: int, have: dict[str, int], system: bool = False
) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """Points logged since the caller last looked: {key: (total stored, steps, values)} for
    keys whose count grew past `have[key]`. Only the trailing chunks are decoded, and
    counts and chunks are read in one snapshot so a concurrent merge cannot skew them."""
    flt = "" if system else "AND k.key NOT LIKE 'sys/%'"
    out: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}

    with store.snapshot("read new points") as c:
        rows = c.execute(
            "SELECT k.key, s.key_id, s.n FROM metric_summary s"
            f" JOIN metric_keys k ON k.id = s.key_id WHERE s.run_id=? {flt}",
            (rid,),
        ).fetchall()
        for key, kid, n in rows:
            want = n - have.get(key, 0)
            if want <= 0:
                continue
            sizes = c.execute(
                "SELECT seq, n FROM metric_chunks WHERE run_id=? AND key_id=? ORDER BY seq DESC",
                (rid, kid),
            ).fetchall()
            got, from_seq = 0, 0
            for seq, cnt in sizes:
                got += cnt
                from_seq = seq
                if got >= want:
                    break
            blobs = c.execute(
                "SELECT data FROM metric_chunks WHERE run_id=? AND key_id=? AND seq>=?"
                " ORDER BY seq",
                (rid, kid, from_seq),
            ).fetchall()
            steps, _ts, vals = codec.decode_many([b[0] for b in blobs])
            out[key] = (n, steps[-want:], vals[-want:])
    return out


def latest_values(store: Store, rid: int, prefix: str = "sys/") -> dict[str, float]:
    """Last stored value of each key of a run that starts with `prefix`."""
    rows = store.read(
        "SELECT k.key, s.last_value FROM metric_summary s JOIN metric_keys k ON k.id = s.key_id"
        " WHERE s.run_id=? AND k.key >= ? AND k.key < ?",
        (rid, prefix, prefix + "\uffff"),
    )
    return {k: (float("nan") if v is None else v) for k, v in rows}


def run_rows(store: Store, rids: list[int]) -> dict[int, tuple[str, str, str]]:
    """{rowid: (uid, name, status)}."""
    if not rids:
        return {}
    rows = store.read(
        f"SELECT id, uid, name, status FROM runs WHERE id IN ({','.join('?' * len(rids))})",
        rids,
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def latest_run(store: Store) -> str | None:
    """The id of the newest running run, else of the newest run; None for an empty store."""
    rows = store.read(
        "SELECT uid FROM runs ORDER BY (status='running') DESC, start_time DESC, id DESC LIMIT 1"
    )
    return rows[0][0] if rows else None
