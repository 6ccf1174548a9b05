"""The SQLite backend (the default, embedded store)."""

from .store import SqliteStore

__all__ = ["SqliteStore"]
