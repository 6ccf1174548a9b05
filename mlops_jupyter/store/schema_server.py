"""Tracking server: API tokens (stored hashed, shared by every server process on the store)
and the record of applied ingest chunks (run, key, seq), so a retried batch is a no-op."""

from __future__ import annotations

MIGRATIONS = [
    (
        70,
        "tracking server: API tokens and applied ingest chunks",
        """
        CREATE TABLE server_tokens(
            name TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            scope TEXT NOT NULL,
            created REAL NOT NULL,
            expires REAL,
            last_used REAL
        ) WITHOUT ROWID;
        CREATE TABLE ingest_applied(
            run_id INTEGER NOT NULL REFERENCES runs(id),
            key_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            n INTEGER NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY(run_id, key_id, seq)
        ) WITHOUT ROWID;
        """,
    ),
    (
        90,
        "tracking server: idempotency keys of run events sent by remote clients",
        """
        CREATE TABLE run_event_keys(
            run_id INTEGER NOT NULL REFERENCES runs(id),
            key TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            PRIMARY KEY(run_id, key)
        ) WITHOUT ROWID;
        """,
    ),
]
