"""Numbered schema migrations. Each is applied once, in order, and recorded in
`schema_migrations`. Append new ones at the end; never edit an applied one."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

APP_ID = "mlops-jupyter"

# (version, name, sql or callable(conn))
Migration = tuple[int, str, "str | Callable[[sqlite3.Connection], None]"]

MIGRATIONS: list[Migration] = [
    (
        1,
        "core: experiments, runs, params, tags, metrics, artifacts",
        """
        CREATE TABLE experiments(
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created REAL NOT NULL
        );
        CREATE TABLE runs(
            id INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,
            experiment_id INTEGER NOT NULL REFERENCES experiments(id),
            name TEXT,
            status TEXT NOT NULL,
            start_time REAL NOT NULL,
            end_time REAL,
            heartbeat REAL,
            host TEXT,
            pid INTEGER,
            pid_start REAL,
            parent_id INTEGER REFERENCES runs(id)
        );
        CREATE INDEX runs_by_experiment ON runs(experiment_id, start_time);
        CREATE INDEX runs_by_status ON runs(status);
        CREATE TABLE params(
            run_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY(run_id, key)) WITHOUT ROWID;
        CREATE TABLE tags(
            run_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY(run_id, key)) WITHOUT ROWID;
        CREATE TABLE metric_keys(id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
        CREATE TABLE metric_chunks(
            run_id INTEGER NOT NULL, key_id INTEGER NOT NULL, seq INTEGER NOT NULL,
            n INTEGER NOT NULL, min_step INTEGER, max_step INTEGER, data BLOB NOT NULL,
            PRIMARY KEY(run_id, key_id, seq)) WITHOUT ROWID;
        CREATE TABLE metric_summary(
            run_id INTEGER NOT NULL, key_id INTEGER NOT NULL, n INTEGER NOT NULL,
            last_step INTEGER, last_value REAL, last_ts REAL, min_value REAL, max_value REAL,
            PRIMARY KEY(run_id, key_id)) WITHOUT ROWID;
        CREATE TABLE artifacts(
            run_id INTEGER NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL,
            size INTEGER NOT NULL, created REAL NOT NULL,
            PRIMARY KEY(run_id, name)) WITHOUT ROWID;
        """,
    ),
    (
        2,
        "run events (alerts, warnings, throttling) and re-run attempts",
        """
        ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE runs ADD COLUMN prev_run_id INTEGER REFERENCES runs(id);
        CREATE TABLE run_events(
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            kind TEXT NOT NULL,
            level TEXT NOT NULL DEFAULT 'info',
            message TEXT NOT NULL,
            start_time REAL NOT NULL,
            end_time REAL,
            data TEXT
        );
        CREATE INDEX run_events_by_run ON run_events(run_id, kind);
        """,
    ),
    # core additions take numbers from 50 up (3..49 belong to feature areas)
    (
        50,
        "index runs by start time (newest-first listings)",
        "CREATE INDEX IF NOT EXISTS runs_by_start ON runs(start_time)",
    ),
]

# Feature areas keep their tables in their own module (store/schema_<area>.py, each with a
# MIGRATIONS list of unique version numbers), so areas evolve without editing this file.
_AREAS = (
    "schema_capture",
    "schema_telemetry",
    "schema_data",
    "schema_pipeline",
    "schema_models",
    "schema_media",
)


def _collect() -> list[Migration]:
    import importlib

    out = list(MIGRATIONS)
    for mod in _AREAS:
        try:
            m = importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{mod}":
                raise
            continue
        out.extend(m.MIGRATIONS)
    out.sort(key=lambda m: m[0])
    versions = [m[0] for m in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return out


ALL = _collect()
LATEST = ALL[-1][0]


def applied_versions(conn: sqlite3.Connection) -> set[int]:
    """Versions recorded in schema_migrations (empty for a new database)."""
    has = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
    ).fetchone()
    if not has:
        return set()
    return {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}


def current_version(conn: sqlite3.Connection) -> int:
    """Highest applied migration, 0 for an empty database."""
    return max(applied_versions(conn), default=0)


def pending(conn: sqlite3.Connection) -> list[int]:
    """Known migrations not yet applied to this database."""
    have = applied_versions(conn)
    return [m[0] for m in ALL if m[0] not in have]


def migrate(conn: sqlite3.Connection, upto: int | None = None) -> list[int]:
    """Apply pending migrations (up to `upto`) in one transaction; return those applied.

    `conn` must be in autocommit mode (isolation_level=None)."""
    target = LATEST if upto is None else upto
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS store_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"
        )
        conn.execute("INSERT OR IGNORE INTO store_meta VALUES('app', ?)", (APP_ID,))
        have = applied_versions(conn)
        applied = []
        for version, name, step in ALL:
            if version in have or version > target:
                continue
            if callable(step):
                step(conn)
            else:
                for stmt in step.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
            conn.execute(
                "INSERT INTO schema_migrations VALUES(?,?,?)", (version, name, time.time())
            )
            applied.append(version)
        conn.execute("COMMIT")
        return applied
    except BaseException:
        # SQLite may have rolled back already (disk full): don't hide the real error
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        raise
