"""Opening, validating and migrating the SQLite store; per-thread connections; retrying
write transactions so "database is locked" never reaches the user."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import NotAStoreError, StoreError, StoreVersionError
from . import schema

_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_MS = 5000
_MAX_WAIT_S = 120.0  # give up on a lock only after this long (then StoreError)


def _check_existing(path: Path) -> None:
    """Refuse (without writing a byte) a file that is not an mlops-jupyter store."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head == b"":
        return  # empty file: treat as new
    if head != _SQLITE_MAGIC:
        raise NotAStoreError(f"{path} is not an mlops-jupyter store (not a SQLite database)")
    from urllib.request import pathname2url

    uri = f"file:{pathname2url(str(path))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            app = None
            if "store_meta" in tables:
                row = conn.execute("SELECT value FROM store_meta WHERE key='app'").fetchone()
                app = row[0] if row else None
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise NotAStoreError(f"{path} is not a readable mlops-jupyter store: {e}") from None
    if tables and app != schema.APP_ID:
        raise NotAStoreError(
            f"{path} is a SQLite database of another application, not an mlops-jupyter store; "
            "it was not modified. Point MLOPS_JUPYTER_STORE elsewhere."
        )


class Store:
    """A store: one SQLite file plus a content-addressed `artifacts/` folder beside it.

    Connections are per thread (sqlite3 objects must not cross threads)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser().resolve()
        self.root = self.path.parent
        self.artifacts_dir = self.root / "artifacts"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if self.path.exists():
            if self.path.is_dir():
                raise NotAStoreError(f"{self.path} is a directory, not a store file")
            _check_existing(self.path)
        else:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the store folder {self.root}: {e}") from None
        conn = self.conn()
        version = schema.current_version(conn)
        if version > schema.LATEST:
            raise StoreVersionError(
                f"{self.path} has schema version {version}, newer than this mlops-jupyter "
                f"understands ({schema.LATEST}); upgrade the package."
            )
        if schema.pending(conn):
            self._retry(lambda: schema.migrate(conn))

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- connections -------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; use `write()` for transactions)."""
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                c.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
                mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    # e.g. a network file system; still correct, just less concurrent
                    c.execute("PRAGMA journal_mode=DELETE")
                c.execute("PRAGMA synchronous=NORMAL")
                c.execute("PRAGMA foreign_keys=OFF")
            except sqlite3.DatabaseError as e:
                raise StoreError(f"cannot open the store {self.path}: {e}") from None
            self._local.conn = c
            with self._lock:
                self._all.append(c)
        return c

    def close(self) -> None:
        """Close every connection this Store opened."""
        with self._lock:
            for c in self._all:
                with contextlib.suppress(Exception):
                    c.close()
            self._all.clear()
        self._local = threading.local()

    # -- transactions ------------------------------------------------------------------
    @staticmethod
    def _is_busy(e: sqlite3.OperationalError) -> bool:
        msg = str(e).lower()
        return "locked" in msg or "busy" in msg

    def _retry(self, fn):
        deadline = time.monotonic() + _MAX_WAIT_S
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not self._is_busy(e) or time.monotonic() > deadline:
                    raise StoreError(f"store {self.path}: {e}") from e
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction (BEGIN IMMEDIATE), retried while another writer holds
        the lock. Keep the body free of side effects other than SQL: it may not be rerun,
        but the BEGIN may wait."""
        c = self.conn()
        self._retry(lambda: c.execute("BEGIN IMMEDIATE"))
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            self._retry(lambda: c.execute("COMMIT"))

    def read(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        """Run a read query and fetch all rows (retrying on a busy database)."""
        c = self.conn()
        return self._retry(lambda: c.execute(sql, args).fetchall())


_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def open_store(path: str | os.PathLike | None = None) -> Store:
    """Open (creating and migrating if needed) the store at `path`, or the default one.

    Stores are cached per resolved path, so repeated calls are cheap."""
    from ..config import find_store_path

    p = Path(path).expanduser() if path is not None else find_store_path()
    if p.is_dir():
        from ..config import DB_FILENAME

        p = p / DB_FILENAME
    key = p.resolve()
    with _stores_lock:
        st = _stores.get(key)
        if st is None:
            st = Store(key)
            _stores[key] = st
        return st


def _after_fork() -> None:
    # sqlite connections must not be shared across fork; children reopen lazily
    _stores.clear()


os.register_at_fork(after_in_child=_after_fork)
