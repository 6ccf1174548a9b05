"""Run rows: create, end, params, tags, artifacts, events, and marking dead runs crashed."""

from __future__ import annotations

import json
import math
import secrets
import socket
import time
from typing import Any

import psutil

from ..errors import InvalidInputError, ReadOnlyStoreError, RunNotFoundError
from .db import Store

# "stopped": ended on purpose by a guard rule (e.g. the privacy budget), see its run events.
STATUSES = ("running", "finished", "failed", "killed", "crashed", "stopped")
ENDED = ("finished", "failed", "killed", "crashed", "stopped")
HOST = socket.gethostname()


def encode_value(v: Any) -> str:
    """Params and tags are stored as JSON; numpy/torch scalars become Python numbers and
    anything JSON cannot hold becomes its str()."""
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 0) == 0:
        try:
            v = v.item()
        except Exception:
            pass
    if isinstance(v, float) and not math.isfinite(v):
        return json.dumps(str(v))
    try:
        return json.dumps(v, default=str, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(str(v))


def _experiment_id(c, name: str) -> int:
    row = c.execute("SELECT id FROM experiments WHERE name=?", (name,)).fetchone()
    if row:
        return row[0]
    return c.execute(
        "INSERT INTO experiments(name, created) VALUES(?,?)", (name, time.time())
    ).lastrowid


_proc_start: float | None = None


def _pid_start() -> float:
    global _proc_start
    if _proc_start is None:
        _proc_start = psutil.Process().create_time()
    return _proc_start


def create_run(
    store: Store,
    name: str | None,
    experiment: str,
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    parent_id: int | None = None,
    prev_run_id: int | None = None,
) -> tuple[int, str, str]:
    """Insert a running run with its params and tags; return (rowid, uid, name)."""
    import os

    now = time.time()
    uid = secrets.token_hex(6)
    pid_start = _pid_start()
    with store.write() as c:
        exp = _experiment_id(c, experiment)
        attempt = 1
        if prev_run_id is not None:
            row = c.execute("SELECT attempt FROM runs WHERE id=?", (prev_run_id,)).fetchone()
            attempt = (row[0] if row else 0) + 1
        if name is None:
            n = c.execute("SELECT count(*) FROM runs WHERE experiment_id=?", (exp,)).fetchone()[0]
            name = f"run-{n + 1}"
        rid = c.execute(
            "INSERT INTO runs(uid, experiment_id, name, status, start_time, heartbeat, host, pid,"
            " pid_start, parent_id, attempt, prev_run_id) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                uid,
                exp,
                name,
                "running",
                now,
                now,
                HOST,
                os.getpid(),
                pid_start,
                parent_id,
                attempt,
                prev_run_id,
            ),
        ).lastrowid
        if params:
            c.executemany(
                "INSERT OR REPLACE INTO params VALUES(?,?,?)",
                [(rid, k, encode_value(v)) for k, v in params.items()],
            )
        if tags:
            c.executemany(
                "INSERT OR REPLACE INTO tags VALUES(?,?,?)",
                [(rid, k, encode_value(v)) for k, v in tags.items()],
            )
    return rid, uid, name


def finish_run(store: Store, rid: int, status: str) -> None:
    """Mark a run ended with `status`."""
    with store.write() as c:
        c.execute(
            "UPDATE runs SET status=?, end_time=?, heartbeat=? WHERE id=?",
            (status, time.time(), time.time(), rid),
        )


def _check_mapping(d: Any, what: str) -> dict:
    if not isinstance(d, dict):
        raise InvalidInputError(f"{what} must be a dict, got {type(d).__name__}")
    for k in d:
        if not isinstance(k, str) or not k:
            raise InvalidInputError(f"{what} keys must be non-empty strings, got {k!r}")
    return d


def set_kv(store: Store, table: str, rid: int, items: dict[str, Any]) -> None:
    """Upsert params or tags of a run."""
    assert table in ("params", "tags")
    _check_mapping(items, table)
    if not items:
        return
    with store.write() as c:
        c.executemany(
            f"INSERT OR REPLACE INTO {table} VALUES(?,?,?)",
            [(rid, k, encode_value(v)) for k, v in items.items()],
        )


def add_event(
    store: Store,
    rid: int,
    kind: str,
    message: str,
    level: str = "info",
    data: dict | None = None,
    start: float | None = None,
    end: float | None = None,
) -> int:
    """Record an event (alert, warning, throttling episode...) on a run."""
    with store.write() as c:
        return c.execute(
            "INSERT INTO run_events(run_id, kind, level, message, start_time, end_time, data)"
            " VALUES(?,?,?,?,?,?,?)",
            (
                rid,
                kind,
                level,
                message,
                start or time.time(),
                end,
                json.dumps(data, default=str) if data is not None else None,
            ),
        ).lastrowid


def _alive(pid: int | None, pid_start: float | None) -> bool:
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        # pid reuse: a different process with the same pid started at another time
        return pid_start is None or abs(p.create_time() - pid_start) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def reconcile(store: Store, stale_after: float) -> int:
    """Mark runs whose process is gone as crashed; return how many changed.

    Same host: the owning pid is checked directly. Other hosts: a heartbeat older than
    `stale_after` seconds."""
    rows = store.read("SELECT id, host, pid, pid_start, heartbeat FROM runs WHERE status='running'")
    now = time.time()
    dead = []
    for rid, host, pid, pstart, hb in rows:
        if host == HOST:
            if not _alive(pid, pstart):
                dead.append((hb, rid))
        elif hb is None or now - hb > stale_after:
            dead.append((hb, rid))
    if dead:
        try:
            with store.write("mark runs of dead processes crashed") as c:
                c.executemany(
                    "UPDATE runs SET status='crashed', end_time=coalesce(?, start_time)"
                    " WHERE id=? AND status='running'",
                    dead,
                )
        except ReadOnlyStoreError:
            store.assume_crashed(dead)  # read-only: reconcile in memory, write nothing
    return len(dead)


def resolve_run(store: Store, ref: str | int) -> int:
    """Find a run's rowid from its id, a unique id prefix (>= 4 chars) or its name (latest)."""
    if not isinstance(ref, (str, int)) or isinstance(ref, bool):
        raise InvalidInputError(f"a run is referred to by id or name, got {type(ref).__name__}")
    ref = str(ref).strip()
    if not ref:
        raise InvalidInputError("empty run id")
    row = store.read("SELECT id FROM runs WHERE uid=?", (ref,))
    if row:
        return row[0][0]
    if len(ref) >= 4:
        rows = store.read(
            "SELECT id, uid FROM runs WHERE uid >= ? AND uid < ? LIMIT 2", (ref, ref + "\uffff")
        )
        if len(rows) == 1:
            return rows[0][0]
        if len(rows) > 1:
            raise RunNotFoundError(f"run id prefix {ref!r} is ambiguous; give more characters")
    rows = store.read("SELECT id FROM runs WHERE name=? ORDER BY start_time DESC LIMIT 1", (ref,))
    if rows:
        return rows[0][0]
    raise RunNotFoundError(f"no run with id or name {ref!r} in {store.path}")
