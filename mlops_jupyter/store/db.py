"""Opening a store by location: a SQLite path (or file:// / sqlite:// URL) or a
postgresql:// URL. Stores are cached per location, so repeated calls are cheap."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .base import BaseStore

# The type features annotate with: any backend implementing the storage contract.
Store = BaseStore

_stores: dict[str, BaseStore] = {}
_stores_lock = threading.Lock()


def open_store(location: str | os.PathLike | None = None, *, create: bool = True) -> BaseStore:
    """Open (creating and migrating if needed) the store at `location`, or the default one
    (MLOPS_JUPYTER_STORE, else the nearest `.mlops/`). With create=False a missing store
    raises StoreError instead of being created."""
    from ..config import DB_FILENAME, find_store_location, store_location_from

    loc = store_location_from(location) if location is not None else find_store_location()
    if isinstance(loc, str):
        # cached by the whole URL: the same database named with another password must
        # connect (and be refused) on its own; store.key (no password) names it elsewhere
        with _stores_lock:
            st = _stores.get(loc)
            if st is None:
                from .postgres import PostgresStore

                st = PostgresStore(loc, create=create)
                _stores[loc] = st
            return st
    p = loc / DB_FILENAME if loc.is_dir() else loc
    key = str(p.expanduser().resolve())
    with _stores_lock:
        st = _stores.get(key)
        if st is None:
            from .sqlite import SqliteStore

            st = SqliteStore(Path(key), create=create)
            _stores[key] = st
        return st


def open_existing(location: str | os.PathLike | None = None) -> BaseStore | None:
    """The store at `location` (default: the usual lookup) if one exists there, else None;
    never creates one. A database server that cannot be reached raises StoreError."""
    from ..config import DB_FILENAME, find_store_location, store_location_from

    loc = store_location_from(location) if location is not None else find_store_location()
    if isinstance(loc, Path):
        p = loc / DB_FILENAME if loc.is_dir() else loc
        if not p.is_file():
            return None
        return open_store(p)
    from .postgres import has_store

    return open_store(loc) if has_store(loc) else None


def forget(store: BaseStore) -> None:
    """Drop `store` from the cache (after closing it), so the next open starts afresh."""
    with _stores_lock:
        for k in [k for k, v in _stores.items() if v is store]:
            del _stores[k]


def close_all() -> None:
    """Close and forget every store this process opened (tests, long-lived servers that
    switch stores); the next open_store starts afresh."""
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for st in stores:
        st.close()


# Stores inherited over fork: kept referenced, never closed, in the child. Closing (or
# garbage-collecting) a PostgreSQL connection sends the server a goodbye on the socket the
# parent still uses, which would end the parent's session.
_inherited: list[BaseStore] = []


def _after_fork() -> None:
    # connections must not be shared across fork; children reopen lazily
    _inherited.extend(_stores.values())
    _stores.clear()


os.register_at_fork(after_in_child=_after_fork)
