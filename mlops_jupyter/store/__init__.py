"""The store: the only layer that speaks SQL. SQLite by default (WAL, migrations)."""

from .db import Store, open_store

__all__ = ["Store", "open_store"]
