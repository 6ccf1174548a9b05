"""Run rows: create, end, params, tags, artifacts, events, and marking dead runs crashed."""

from __future__ import annotations

import json
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


_MAX_DEPTH = 64


def _utf8(text: str, where: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{where}: {text!r} is not valid UTF-8 text (it contains a lone surrogate)"
        ) from None
    return text


def check_text(text: str | None, what: str) -> None:
    """Refuse a name that SQLite cannot store as text (a lone surrogate)."""
    if isinstance(text, str):
        _utf8(text, what)


def _plain(v: Any, where: str, depth: int = 0) -> Any:
    """`v` as JSON-ready Python data that reads back equal, or InvalidInputError."""
    if depth > _MAX_DEPTH:
        raise InvalidInputError(f"{where}: nested more than {_MAX_DEPTH} levels (a cycle?)")
    if v is None or isinstance(v, (bool, int, float)):
        # ints of any size and NaN/+-inf are kept exactly (NaN/Infinity JSON tokens)
        return v if type(v) in (bool, int, float) else v.item() if hasattr(v, "item") else v
    if isinstance(v, str):
        return _utf8(v, where)
    if hasattr(v, "tolist") and hasattr(v, "ndim"):  # numpy arrays/scalars, tensors
        try:
            v = v.item() if v.ndim == 0 else v.tolist()
        except Exception as e:
            raise InvalidInputError(f"{where}: cannot read {type(v).__name__}: {e}") from None
        return _plain(v, where, depth + 1)
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 0) == 0:
        try:
            return _plain(v.item(), where, depth + 1)
        except InvalidInputError:
            raise
        except Exception:
            pass
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise InvalidInputError(
                    f"{where}: dict key {k!r} is a {type(k).__name__}; JSON keeps only string "
                    f"keys, so it would come back as {str(k)!r}. Use string keys."
                )
            out[_utf8(k, where)] = _plain(x, f"{where}[{k!r}]", depth + 1)
        return out
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{where}[{i}]", depth + 1) for i, x in enumerate(v)]
    # anything else (a class, a path, a set...) is recorded as its str(), as documented
    text = str(v)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def encode_value(v: Any, where: str = "value") -> str:
    """A param/tag value as stored JSON. Exact round trip for None, bools, ints of any
    size, floats including NaN and +-inf, strings, lists, str-keyed dicts and numpy arrays
    (read back as lists); tuples come back as lists; other objects are stored as their
    str(). Refused (InvalidInputError): dict keys that are not strings, text that is not
    valid UTF-8 (lone surrogates)."""
    return json.dumps(_plain(v, where), allow_nan=True)


def encode_items(items: dict[str, Any] | None, what: str) -> list[tuple[str, str]]:
    """Check and encode params or tags: [(key, JSON value)]. Raises before any write."""
    if items is None:
        return []
    _check_mapping(items, what)
    return [(k, encode_value(v, f"{what}[{k!r}]")) for k, v in items.items()]


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
    with store.write() as c:
        exp = _experiment_id(c, experiment)
        attempt = 1
        if prev_run_id is not None:
            row = c.execute("SELECT attempt FROM runs WHERE id=?", (prev_run_id,)).fetchone()
            attempt = (row[0] if row else 0) + 1
        if name is None:
            name = _next_default_name(c, exp)
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
        if p_rows:
            c.executemany(
                "INSERT OR REPLACE INTO params VALUES(?,?,?)", [(rid, k, v) for k, v in p_rows]
            )
        if t_rows:
            c.executemany(
                "INSERT OR REPLACE INTO tags VALUES(?,?,?)", [(rid, k, v) for k, v in t_rows]
            )
    return rid, uid, name


def _next_default_name(c, exp: int) -> str:
    top = 0
    for (name,) in c.execute(
        "SELECT name FROM runs WHERE experiment_id=? AND name GLOB 'run-[0-9]*'", (exp,)
    ):
        digits = name[4:]
        if digits.isascii() and digits.isdigit() and len(digits) < 19:
            top = max(top, int(digits))
    return f"run-{top + 1}"


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
        _utf8(k, f"{what} key")
    return d


def set_kv(store: Store, table: str, rid: int, items: dict[str, Any]) -> None:
    """Upsert params or tags of a run."""
    assert table in ("params", "tags")
    rows = encode_items(items, table)
    if not rows:
        return
    with store.write() as c:
        c.executemany(
            f"INSERT OR REPLACE INTO {table} VALUES(?,?,?)", [(rid, k, v) for k, v in rows]
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
