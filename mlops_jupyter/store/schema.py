"""Numbered schema migrations. Each is applied once, in order, and recorded in
`schema_migrations`. Append new ones at the end; never edit an applied one.

The DDL is written in SQLite's spelling; the PostgreSQL backend translates it
(store/postgres/ddl.py), so both backends share one list of numbered migrations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

APP_ID = "mlops-jupyter"

# (version, name, sql or callable(conn))
Migration = tuple[int, str, "str | Callable[[Any], None]"]

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
    (
        51,
        "who started a run (team stores show user and host)",
        "ALTER TABLE runs ADD COLUMN username TEXT",
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
    "schema_server",
    "schema_serving",
    "schema_features",
    "schema_loop",
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
