"""Applying the numbered migrations (store/schema.py) to a SQLite database."""

from __future__ import annotations

import sqlite3
import time

from .. import schema


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
    return [m[0] for m in schema.ALL if m[0] not in have]


def migrate(conn: sqlite3.Connection, upto: int | None = None) -> list[int]:
    """Apply pending migrations (up to `upto`) in one transaction; return those applied.

    `conn` must be in autocommit mode (isolation_level=None)."""
    target = schema.LATEST if upto is None else upto
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS store_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"
        )
        conn.execute("INSERT OR IGNORE INTO store_meta VALUES('app', ?)", (schema.APP_ID,))
        have = applied_versions(conn)
        applied = []
        for version, name, step in schema.ALL:
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
