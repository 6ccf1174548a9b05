"""Writes and reads of the tracking server: runs started remotely, metric points appended
idempotently (each chunk named by run, key and sequence number is applied once), and the
bulk reads its MLflow-compatible routes answer from."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import InvalidInputError, RunNotFoundError
from . import metrics as mstore
from . import runs as rstore
from .db import Store


class Chunk(NamedTuple):
    """Points of one run/key. `seq` names the chunk for idempotency (None: always applied);
    `steps` None means automatic steps (continuing the series); ts in milliseconds."""

    rid: int
    key: str
    seq: int | None
    steps: np.ndarray | None
    ts_ms: np.ndarray
    values: np.ndarray


class RunRow(NamedTuple):
    rid: int
    uid: str
    name: str | None
    experiment_id: int
    experiment: str
    status: str
    start_time: float
    end_time: float | None
    username: str | None


_RUN_SQL = (
    "SELECT r.id, r.uid, r.name, e.id, e.name, r.status, r.start_time, r.end_time, r.username"
    " FROM runs r JOIN experiments e ON e.id = r.experiment_id"
)


# ---------------------------------------------------------------------- experiments


def ensure_experiment(store: Store, name: str) -> int:
    """Id of experiment `name`, created if missing."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("experiment name must be a non-empty string")
    rstore.check_text(name, "experiment")
    with store.write("create an experiment") as c:
        return rstore._experiment_id(c, name)


def experiments(
    store: Store, *, ids: Sequence[int] | None = None, name: str | None = None
) -> list[tuple[int, str, float]]:
    """(id, name, created) of every experiment, or of those with `ids` / `name`."""
    sql, args = "SELECT id, name, created FROM experiments", []
    if name is not None:
        sql, args = sql + " WHERE name = ?", [name]
    elif ids is not None:
        if not ids:
            return []
        sql, args = sql + f" WHERE id IN ({','.join('?' * len(ids))})", list(ids)
    return [tuple(r) for r in store.read(sql + " ORDER BY id", args)]


def rename_experiment(store: Store, exp_id: int, name: str) -> None:
    """Give experiment `exp_id` a new (unused) name."""
    rstore.check_text(name, "experiment")
    with store.write("rename an experiment") as c:
        if c.execute("SELECT 1 FROM experiments WHERE name=?", (name,)).fetchone():
            raise InvalidInputError(f"an experiment named {name!r} exists")
        c.execute("UPDATE experiments SET name=? WHERE id=?", (name, exp_id))


# ---------------------------------------------------------------------- runs


def create_run(
    store: Store,
    experiment: str,
    name: str | None = None,
    params: dict[str, Any] | list[tuple[str, str]] | None = None,
    tags: dict[str, Any] | list[tuple[str, str]] | None = None,
    *,
    host: str | None = None,
    username: str | None = None,
    start_time: float | None = None,
    parent_id: int | None = None,
    prev_run_id: int | None = None,
) -> RunRow:
    """Start a run for a remote client. The server's own pid is not the run's owner: the run
    keeps no pid, so crash detection goes by its heartbeat (each write beats)."""
    rid, _uid, _name = rstore.create_run(
        store, name, experiment, params, tags, parent_id, prev_run_id=prev_run_id
    )
    with store.write("start a remote run") as c:
        c.execute(
            "UPDATE runs SET host=?, pid=NULL, pid_start=NULL, username=?,"
            " start_time=coalesce(?, start_time) WHERE id=?",
            (host or "remote", username, start_time, rid),
        )
    row = run_by_id(store, rid)
    assert row is not None
    return row


def run_by_id(store: Store, rid: int) -> RunRow | None:
    """The run with rowid `rid`, or None."""
    rows = store.read(_RUN_SQL + " WHERE r.id = ?", (rid,))
    return RunRow(*rows[0]) if rows else None


def run_by_uid(store: Store, uid: str) -> RunRow:
    """The run with id `uid` (exactly); RunNotFoundError if none."""
    if not isinstance(uid, str) or not uid:
        raise InvalidInputError("run id must be a non-empty string")
    rows = store.read(_RUN_SQL + " WHERE r.uid = ?", (uid,))
    if not rows:
        raise RunNotFoundError(f"no run with id {uid!r}")
    return RunRow(*rows[0])


def runs_in(
    store: Store, exp_ids: Sequence[int] | None = None, uids: Sequence[str] | None = None
) -> list[RunRow]:
    """Runs of the experiments `exp_ids` (all when None) or with `uids`, newest first."""
    sql, args = _RUN_SQL, []
    if uids is not None:
        if not uids:
            return []
        sql, args = sql + f" WHERE r.uid IN ({','.join('?' * len(uids))})", list(uids)
    elif exp_ids is not None:
        if not exp_ids:
            return []
        sql, args = sql + f" WHERE r.experiment_id IN ({','.join('?' * len(exp_ids))})", [*exp_ids]
    return [RunRow(*r) for r in store.read(sql + " ORDER BY r.start_time DESC, r.id DESC", args)]


def set_status(store: Store, rid: int, status: str, end: float | None = None) -> None:
    """Set a run's status; an ended status records the end time (default now)."""
    if status not in rstore.STATUSES:
        raise InvalidInputError(f"status must be one of {rstore.STATUSES}, got {status!r}")
    if status in rstore.ENDED:
        rstore.finish_run(store, rid, status, end)
        return
    with store.write("reopen a run") as c:
        c.execute(
            "UPDATE runs SET status=?, end_time=NULL, heartbeat=? WHERE id=?",
            (status, time.time(), rid),
        )


def rename_run(store: Store, rid: int, name: str) -> None:
    """Give run `rid` a new name."""
    rstore.check_text(name, "run name")
    with store.write("rename a run") as c:
        c.execute("UPDATE runs SET name=? WHERE id=?", (name, rid))


def delete_tag(store: Store, rid: int, key: str) -> bool:
    """Remove tag `key` from run `rid`; False if it had none."""
    with store.write("delete a tag") as c:
        return c.execute("DELETE FROM tags WHERE run_id=? AND key=?", (rid, key)).rowcount > 0


def kv(store: Store, table: str, rids: Sequence[int]) -> dict[int, dict[str, str]]:
    """Params or tags of the runs `rids` as stored (JSON text): {rid: {key: json}}."""
    assert table in ("params", "tags")
    out: dict[int, dict[str, str]] = {r: {} for r in rids}
    for i in range(0, len(rids), 500):
        part = list(rids[i : i + 500])
        for rid, k, v in store.read(
            f"SELECT run_id, key, value FROM {table} WHERE run_id IN ({','.join('?' * len(part))})",
            part,
        ):
            out[rid][k] = v
    return out


def latest_metrics(
    store: Store, rids: Sequence[int]
) -> dict[int, list[tuple[str, float | None, float | None, int | None]]]:
    """Last point of each metric of the runs `rids`: {rid: [(key, value, ts s, step)]}."""
    out: dict[int, list] = {r: [] for r in rids}
    for i in range(0, len(rids), 500):
        part = list(rids[i : i + 500])
        for rid, k, v, ts, step in store.read(
            "SELECT s.run_id, k.key, s.last_value, s.last_ts, s.last_step FROM metric_summary s"
            " JOIN metric_keys k ON k.id = s.key_id"
            f" WHERE s.run_id IN ({','.join('?' * len(part))}) ORDER BY k.key",
            part,
        ):
            out[rid].append((k, v, ts, step))
    return out


def metric_history(store: Store, rid: int, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every point of one run/key in logging order: (steps, ts ms, values)."""
    krow = store.read("SELECT id FROM metric_keys WHERE key = ?", (key,))
    if not krow:
        e = np.empty(0, np.int64)
        return e, e.copy(), np.empty(0)
    return mstore.read_series(store, rid, krow[0][0])


def artifacts_of(store: Store, rid: int) -> list[tuple[str, int]]:
    """(name, size) of the artifacts of run `rid`, by name."""
    rows = store.read("SELECT name, size FROM artifacts WHERE run_id=? ORDER BY name", (rid,))
    return [(n, s) for n, s in rows]


# ---------------------------------------------------------------------- points


def _auto_steps(steps: np.ndarray | None, n: int, next_step: int) -> np.ndarray:
    if steps is None:
        return np.arange(next_step, next_step + n, dtype=np.int64)
    return steps


def append(store: Store, chunks: Sequence[Chunk]) -> tuple[int, int]:
    """Append the chunks in one transaction; return (points written, chunks skipped as
    already applied). A chunk with a `seq` is recorded in `ingest_applied`, so the same
    (run, key, seq) sent again (a retried request) writes nothing."""
    chunks = [c for c in chunks if len(c.values)]
    if not chunks:
        return 0, 0
    now = time.time()
    written = skipped = 0
    keys: dict[str, int] = {}
    rids = sorted({c.rid for c in chunks})
    with store.write("append metric points") as c:
        # take the runs' rows first, in one order: two server processes appending to the same
        # run/key serialize here instead of both taking the same chunk seq (PostgreSQL)
        _revive(c, now, rids)
        mstore.key_ids(c, sorted({ch.key for ch in chunks}), keys)
        pos: dict[tuple[int, int], list[int]] = {}
        for ch in chunks:
            kid = keys[ch.key]
            if ch.seq is not None:
                fresh = c.execute(
                    "INSERT INTO ingest_applied(run_id, key_id, seq, n, created)"
                    " VALUES(?,?,?,?,?) ON CONFLICT DO NOTHING",
                    (ch.rid, kid, ch.seq, len(ch.values), now),
                ).rowcount
                if not fresh:
                    skipped += 1
                    continue
            p = pos.get((ch.rid, kid))
            if p is None:
                p = pos[(ch.rid, kid)] = list(mstore.next_position(c, ch.rid, kid))
            steps = _auto_steps(ch.steps, len(ch.values), p[1])
            mstore.append_chunk(c, ch.rid, kid, p[0], steps, ch.ts_ms, ch.values)
            p[0] += 1
            p[1] = int(steps[-1]) + 1
            written += len(ch.values)
    return written, skipped


_REVIVE = (
    "UPDATE runs SET heartbeat = CASE WHEN status IN ('running', 'crashed') THEN ?"
    " ELSE heartbeat END, end_time = CASE WHEN status = 'crashed' THEN NULL ELSE end_time END,"
    " status = CASE WHEN status = 'crashed' THEN 'running' ELSE status END WHERE id=?"
)


def _revive(c, now: float, rids: list[int]) -> None:
    # A remote run has no local process to check: it is marked crashed when its heartbeat
    # (each write) is older than MLOPS_JUPYTER_STALE_AFTER. Data arriving proves it is
    # alive (a long epoch between two logs), so it shows as running again.
    c.executemany(_REVIVE, [(now, r) for r in rids])


def beat(store: Store, rid: int) -> None:
    """Heartbeat of a run written through the server (params, tags...); a run marked
    crashed for want of heartbeats is running again."""
    with store.write("heartbeat") as c:
        _revive(c, time.time(), [rid])
