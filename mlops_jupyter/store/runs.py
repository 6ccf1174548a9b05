"""Run rows: create, end, params, tags, artifacts, events, and marking dead runs crashed.
How param and tag values are encoded and checked is values.py (re-exported here)."""

from __future__ import annotations

import getpass
import json
import secrets
import socket
import time
from typing import Any

import psutil

from ..errors import InvalidInputError, ReadOnlyStoreError, RunNotFoundError
from .base import Conn
from .db import Store
from .sql import upsert
from .values import check_text, encode_items, encode_value  # noqa: F401  (re-exported)

# "stopped": ended on purpose by a guard rule (e.g. the privacy budget), see its run events.
STATUSES = ("running", "finished", "failed", "killed", "crashed", "stopped")
ENDED = ("finished", "failed", "killed", "crashed", "stopped")
HOST = socket.gethostname()


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): the column stays empty
        return None


USER = _user()


_KV_UPSERT = {
    t: upsert(t, ("run_id", "key", "value"), ("run_id", "key")) for t in ("params", "tags")
}


def _experiment_id(c, name: str) -> int:
    row = c.execute("SELECT id FROM experiments WHERE name=?", (name,)).fetchone()
    if row:
        return row[0]
    # another writer may create it at the same moment: keep theirs, then read it
    c.execute(
        "INSERT INTO experiments(name, created) VALUES(?,?) ON CONFLICT(name) DO NOTHING",
        (name, time.time()),
    )
    return c.execute("SELECT id FROM experiments WHERE name=?", (name,)).fetchone()[0]


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
    params: dict[str, Any] | list[tuple[str, str]] | None = None,
    tags: dict[str, Any] | list[tuple[str, str]] | None = None,
    parent_id: int | None = None,
    prev_run_id: int | None = None,
) -> tuple[int, str, str]:
    """Insert a running run with its params and tags (dicts, or lists already encoded by
    `encode_items`); return (rowid, uid, name). Default names are run-1, run-2, ... per
    experiment, one more than the highest `run-N` there."""
    import os

    check_text(name, "run name")
    check_text(experiment, "experiment")
    p_rows = params if isinstance(params, list) else encode_items(params, "params")
    t_rows = tags if isinstance(tags, list) else encode_items(tags, "tags")

    now = time.time()
    uid = secrets.token_hex(6)
    pid_start = _pid_start()

    def insert(c, name: str | None) -> tuple[int, str]:
        exp = _experiment_id(c, experiment)
        attempt = 1
        if prev_run_id is not None:
            row = c.execute("SELECT attempt FROM runs WHERE id=?", (prev_run_id,)).fetchone()
            attempt = (row[0] if row else 0) + 1
        if name is None:
            # lock the experiment's row (PostgreSQL) so two runs starting at once in one
            # experiment do not both take the same run-N; SQLite's write lock does this
            c.execute("UPDATE experiments SET created = created WHERE id=?", (exp,))
            name = _next_default_name(c, exp)
        rid = c.execute(
            "INSERT INTO runs(uid, experiment_id, name, status, start_time, heartbeat, host, pid,"
            " pid_start, parent_id, attempt, prev_run_id, username)"
            " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " RETURNING id",
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
                USER,
            ),
        ).fetchone()[0]
        if p_rows:
            c.executemany(_KV_UPSERT["params"], [(rid, k, v) for k, v in p_rows])
        if t_rows:
            c.executemany(_KV_UPSERT["tags"], [(rid, k, v) for k, v in t_rows])
        return rid, name

    # a lost connection (a server restart) is waited out; the run's uid tells whether
    # the lost attempt committed, so a retry never inserts the run twice
    deadline = time.monotonic() + 30.0
    while True:
        try:
            with store.write() as c:
                rid, got = insert(c, name)
            return rid, uid, got
        except Exception as e:
            if not store.unavailable(e) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)
        try:
            row = store.read("SELECT id, name FROM runs WHERE uid=?", (uid,))
        except Exception as e:
            if not store.unavailable(e):
                raise
            continue
        if row:
            return row[0][0], uid, row[0][1]


def new_uid() -> str:
    """A fresh public run id (48 random bits; the store's UNIQUE constraint catches a clash)."""
    return secrets.token_hex(6)


def insert_runs(c: Conn, runs: list[dict[str, Any]]) -> list[int | None]:
    """Insert runs created without waiting (inside the background writer's transaction):
    each dict has uid, name, experiment, start, parent_id, status, end, params and tags
    (encoded rows). Returns their rowids, None for a run whose uid another run holds (the
    caller picks a new uid). A row left by an attempt whose commit was lost with the
    connection (same uid, host, pid and start time) is adopted, never inserted twice."""
    import os

    exps: dict[str, int] = {}
    pid, pid_start = os.getpid(), _pid_start()
    rows = []
    for r in runs:
        exp = exps.get(r["experiment"])
        if exp is None:
            exp = exps[r["experiment"]] = _experiment_id(c, r["experiment"])
        end = r["end"]
        hb = r["start"] if end is None else end
        rows.append(
            (r["uid"], exp, r["name"], r["status"], r["start"], end, hb, HOST, pid, pid_start,
             r["parent_id"], 1, None, USER)
        )  # fmt: skip
    got: dict[str, int] = {}
    for i in range(0, len(rows), 500):  # one statement for many runs (under SQLite's limit)
        part = rows[i : i + 500]
        got.update(
            (uid, rid)
            for rid, uid in c.execute(
                "INSERT INTO runs(uid, experiment_id, name, status, start_time, end_time,"
                " heartbeat, host, pid, pid_start, parent_id, attempt, prev_run_id, username)"
                " VALUES"
                + ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"] * len(part))
                + " ON CONFLICT(uid) DO NOTHING RETURNING id, uid",
                [x for row in part for x in row],
            ).fetchall()
        )
    out: list[int | None] = []
    kv: dict[str, list[tuple[int, str, str]]] = {"params": [], "tags": []}
    for r in runs:
        rid = got.get(r["uid"])
        if rid is None:  # a lost attempt's row, or another run's uid
            row = c.execute(
                "SELECT id FROM runs WHERE uid=? AND host=? AND pid=? AND start_time=?",
                (r["uid"], HOST, pid, r["start"]),
            ).fetchone()
            rid = None if row is None else row[0]
        out.append(rid)
        if rid is not None:
            for table in kv:  # upserts: the same again on an adopted row
                kv[table] += [(rid, k, v) for k, v in r[table]]
    for table, kv_rows in kv.items():
        if kv_rows:
            c.executemany(_KV_UPSERT[table], kv_rows)
    return out


def _next_default_name(c, exp: int) -> str:
    top = 0
    for (name,) in c.execute(
        "SELECT name FROM runs WHERE experiment_id=? AND name LIKE 'run-%'", (exp,)
    ):
        digits = name[4:]
        if digits.isascii() and digits.isdigit() and len(digits) < 19:
            top = max(top, int(digits))
    return f"run-{top + 1}"


def finish_run(store: Store, rid: int, status: str, end: float | None = None) -> None:
    """Mark a run ended with `status` (at `end`, default now). A run another process
    marked crashed while this one could not reach the store is corrected too."""
    end = time.time() if end is None else end
    store.write_again(  # the same update twice is the same state
        lambda c: c.execute(
            "UPDATE runs SET status=?, end_time=?, heartbeat=? WHERE id=?",
            (status, end, end, rid),
        )
    )


def set_recorded_times(
    store: Store, rid: int, status: str, start: float, end: float | None
) -> None:
    """Give run `rid` the status, start and end time another tracker recorded (imports);
    its heartbeat becomes its end (or start). Raises InvalidInputError for a bad status."""
    if status not in STATUSES:
        raise InvalidInputError(f"status must be one of {STATUSES}, got {status!r}")
    with store.write("set recorded run times") as c:
        c.execute(
            "UPDATE runs SET status=?, start_time=?, end_time=?, heartbeat=? WHERE id=?",
            (status, start, end, end if end is not None else start, rid),
        )


def runs_by_tag(store: Store, key: str) -> dict[Any, tuple[int, str, float | None]]:
    """Runs carrying tag `key`: {decoded tag value: (rowid, status, end_time)} (the newest
    run for a value that several carry)."""
    rows = store.read(
        "SELECT t.value, r.id, r.status, r.end_time FROM tags t JOIN runs r ON r.id = t.run_id"
        " WHERE t.key=? ORDER BY r.id",
        (key,),
    )
    out: dict[Any, tuple[int, str, float | None]] = {}
    for v, rid, status, end in rows:
        try:
            v = json.loads(v)
        except ValueError:
            pass
        if isinstance(v, (str, int, float)):
            out[v] = (rid, status, end)
    return out


def set_kv(store: Store, table: str, rid: int, items: dict[str, Any]) -> None:
    """Upsert params or tags of a run."""
    assert table in ("params", "tags")
    rows = encode_items(items, table)
    if not rows:
        return
    # an upsert: repeating it after a lost connection is safe
    store.write_again(lambda c: c.executemany(_KV_UPSERT[table], [(rid, k, v) for k, v in rows]))


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
            " VALUES(?,?,?,?,?,?,?) RETURNING id",
            (
                rid,
                kind,
                level,
                message,
                start or time.time(),
                end,
                json.dumps(data, default=str) if data is not None else None,
            ),
        ).fetchone()[0]


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


def run_uid(store: Store, rid: int) -> str:
    """The uid of the run with rowid `rid`."""
    rows = store.read("SELECT uid FROM runs WHERE id=?", (rid,))
    if not rows:
        raise RunNotFoundError(f"no run with rowid {rid} in {store.location}")
    return rows[0][0]


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
    raise RunNotFoundError(f"no run with id or name {ref!r} in {store.location}")


def add_artifacts(store: Store, rows: list[tuple[int, str, str, int, float]]) -> None:
    """Record artifacts: (run rowid, name, digest, size, created); a name logged again
    points at the new content."""
    with store.write("record artifacts") as c:
        c.executemany(
            upsert(
                "artifacts", ("run_id", "name", "digest", "size", "created"), ("run_id", "name")
            ),
            rows,
        )


def artifact_digest(store: Store, rid: int, name: str) -> str | None:
    """Content digest of artifact `name` of run `rid`, or None."""
    rows = store.read("SELECT digest FROM artifacts WHERE run_id=? AND name=?", (rid, name))
    return rows[0][0] if rows else None


def all_run_ids(store: Store) -> list[int]:
    """Rowids of every run, oldest first."""
    return [r[0] for r in store.read("SELECT id FROM runs ORDER BY id")]


def descendant_uids(store: Store, uid: str) -> list[str]:
    """Uids of the runs started under run `uid` (at any depth), oldest first."""
    rows = store.read(
        "WITH RECURSIVE d(id) AS (SELECT id FROM runs WHERE uid=? UNION ALL "
        "SELECT r.id FROM runs r JOIN d ON r.parent_id=d.id) "
        "SELECT uid FROM runs WHERE id IN (SELECT id FROM d) AND uid<>? ORDER BY id",
        (uid, uid),
    )
    return [r[0] for r in rows]


def beat(c: Conn, now: float, rids: list[int]) -> None:
    """Heartbeat of running runs (inside the writer's transaction)."""
    c.executemany(
        "UPDATE runs SET heartbeat=? WHERE id=? AND status='running'", [(now, r) for r in rids]
    )
