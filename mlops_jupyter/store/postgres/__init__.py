"""The PostgreSQL backend (a team's shared store); needs the `postgres` extra (psycopg)."""

from .store import PostgresStore, StoreUnavailableError, has_store

__all__ = ["PostgresStore", "StoreUnavailableError", "has_store"]
