"""The SQLite backend: opening, validating and migrating the file; per-thread
connections; write transactions retried so "database is locked" never reaches the user."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ...errors import (
    InvalidInputError,
    MalformedStoreError,
    NotAStoreError,
    ReadOnlyStoreError,
    StoreError,
    StoreVersionError,
)
from .. import schema
from ..base import BaseStore
from . import migrate

_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_MS = 5000
_MAX_WAIT_S = 120.0  # give up on a lock only after this long (then StoreError)


def _errname(e: BaseException) -> str:
    # sqlite_errorname exists from Python 3.11; older versions only have the message
    return getattr(e, "sqlite_errorname", "") or ""


def _is_busy(e: BaseException) -> bool:
    msg = str(e).lower()
    return isinstance(e, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg)


def _is_read_only(e: BaseException) -> bool:
    return _errname(e).startswith("SQLITE_READONLY") or "readonly database" in str(e).lower()


def _is_malformed(e: BaseException) -> bool:
    msg = str(e).lower()
    return (
        _errname(e).startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or "malformed" in msg
        or "not a database" in msg
    )


def _is_full(e: BaseException) -> bool:
    return _errname(e) == "SQLITE_FULL" or "is full" in str(e).lower()


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection. A WAL store in a folder we cannot write has no -shm file to
    share, so SQLite refuses `mode=ro`; it can still be read as immutable (no locking: a
    writer with more rights than us could change it under us, which a reader accepts)."""
    from urllib.request import pathname2url

    base = f"file:{pathname2url(str(path))}"
    kw = {"uri": True, "isolation_level": None, "check_same_thread": False}
    try:
        c = sqlite3.connect(f"{base}?mode=ro", **kw)
        c.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return c
    except sqlite3.OperationalError as e:
        if not (_is_read_only(e) or "unable to open" in str(e).lower()):
            raise
    return sqlite3.connect(f"{base}?immutable=1", **kw)


def _check_existing(path: Path) -> None:
    """Refuse (without writing a byte) a file that is not an mlops-jupyter store."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head == b"":
        return  # empty file: treat as new
    if head != _SQLITE_MAGIC:
        raise NotAStoreError(f"{path} is not an mlops-jupyter store (not a SQLite database)")
    try:
        conn = _connect_read_only(path)
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
        raise NotAStoreError(f"{path} is not a readable mlops-jupyter store: {e}") from e
    if tables and app != schema.APP_ID:
        raise NotAStoreError(
            f"{path} is a SQLite database of another application, not an mlops-jupyter store; "
            "it was not modified. Point MLOPS_JUPYTER_STORE elsewhere."
        )


def _writable(path: Path) -> bool:
    # os.access also answers False on a read-only file system, even for root; SQLite needs
    # the folder too (journal, -wal and -shm files live beside the database)
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


class SqliteStore(BaseStore):
    """A store: one SQLite file plus a content-addressed `artifacts/` folder beside it.

    Connections are per thread (sqlite3 objects must not cross threads). Every SQLite
    error leaves as a StoreError naming the store, what was being done and the cause.
    A store that cannot be written (file, folder or file system read-only) is opened
    read-only: reads work, writes raise ReadOnlyStoreError. Once SQLite reports the file
    malformed, the Store refuses every later write (MalformedStoreError) so a damaged
    file is not made worse."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True) -> None:
        self.path = Path(path).expanduser().resolve()
        self.backend = "sqlite"
        self.key = self.location = str(self.path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.read_only = False
        self.malformed: str | None = None  # the first "malformed" error seen, if any
        # runs of dead processes a read-only store cannot mark crashed: {rowid: end time}
        self._crashed: dict[int, float | None] = {}
        self._crashed_gen = 0
        if self.path.exists():
            if self.path.is_dir():
                raise NotAStoreError(f"{self.path} is a directory, not a store file")
            _check_existing(self.path)
            self.read_only = not _writable(self.path)
        elif not create:
            raise StoreError(
                f"no store at {self.path}: the file does not exist (check --store or "
                "MLOPS_JUPYTER_STORE; a store is created by the first run logged to it)"
            )
        else:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the store folder {self.root}: {e}") from None
        conn = self.conn()
        version = self._retry(lambda: migrate.current_version(conn), "read the schema version")
        if version > schema.LATEST:
            raise StoreVersionError(
                f"{self.path} has schema version {version}, newer than this mlops-jupyter "
                f"understands ({schema.LATEST}); upgrade the package."
            )
        if self._retry(lambda: migrate.pending(conn), "read the schema version"):
            if self.read_only:
                raise ReadOnlyStoreError(
                    f"store {self.path} is read-only and was written by an older "
                    f"mlops-jupyter (schema {version}); open it once with write access so it "
                    "can be upgraded"
                )
            self._retry(lambda: migrate.migrate(conn), "upgrade the schema")

    @property
    def root(self) -> Path:
        return self.path.parent

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.read(f"PRAGMA table_info({table})")]

    def json_number(self, expr: str) -> str:
        return (
            f"CASE WHEN json_valid({expr}) AND json_type({expr}) IN ('integer', 'real')"
            f" THEN CAST({expr} AS REAL) END"
        )

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    # -- connections -------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; use `write()` for transactions)."""
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                c = self._open()
            except sqlite3.Error as e:
                raise self._error(e, "open the store") from e
            self._local.conn = c
            self._local.crashed_gen = 0
            with self._lock:
                self._all.append(c)
        if self._local.crashed_gen != self._crashed_gen:
            self._show_crashed(c)
        return c

    def assume_crashed(self, dead: list[tuple[float | None, int]]) -> None:
        """Show runs as crashed to this process without writing: `dead` is (end time,
        rowid) pairs. For a read-only store, whose dead runs cannot be marked crashed."""
        with self._lock:
            self._crashed.update({rid: end for end, rid in dead})
            self._crashed_gen += 1

    def _show_crashed(self, c: sqlite3.Connection) -> None:
        # A TEMP view named `runs` shadows main.runs for this connection only, so every
        # query reads the reconciled status while the file stays untouched.
        with self._lock:
            gen, items = self._crashed_gen, list(self._crashed.items())

        def build() -> None:
            cols = [r[1] for r in c.execute("PRAGMA main.table_info(runs)")]
            c.execute("PRAGMA temp_store=MEMORY")
            c.execute("CREATE TEMP TABLE IF NOT EXISTS crashed_runs(id INTEGER PRIMARY KEY, t)")
            c.execute("DELETE FROM temp.crashed_runs")
            c.executemany("INSERT INTO temp.crashed_runs VALUES(?, ?)", items)
            sel = {
                "status": "CASE WHEN k.id IS NULL THEN r.status ELSE 'crashed' END",
                "end_time": "CASE WHEN k.id IS NULL THEN r.end_time"
                " ELSE coalesce(k.t, r.start_time) END",
            }
            cols_sql = ", ".join(f"{sel.get(n, f'r.{q(n)}')} AS {q(n)}" for n in cols)
            c.execute("DROP VIEW IF EXISTS temp.runs")
            c.execute(
                f"CREATE TEMP VIEW runs AS SELECT {cols_sql} FROM main.runs r"
                " LEFT JOIN temp.crashed_runs k ON k.id = r.id"
            )

        def q(name: str) -> str:
            return '"' + name.replace('"', '""') + '"'

        self._retry(build, "show runs of dead processes as crashed")
        self._local.crashed_gen = gen

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            c = _connect_read_only(self.path)
            c.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            return c
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            c.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                # e.g. a network file system; still correct, just less concurrent
                c.execute("PRAGMA journal_mode=DELETE")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA foreign_keys=OFF")
        except sqlite3.OperationalError as e:
            if not _is_read_only(e):
                raise
            # writable file in a folder (or file system) we cannot write: read it only
            c.close()
            self.read_only = True
            return self._open()
        return c

    # -- errors ------------------------------------------------------------------------
    def _error(self, e: BaseException, what: str) -> StoreError:
        """The StoreError for SQLite error `e` raised while doing `what`; remembers a
        read-only or malformed store so later writes are refused up front."""
        head = f"store {self.path}: cannot {what}: {e}"
        if _is_malformed(e):
            if self.malformed is None:
                self.malformed = str(e)
            return MalformedStoreError(
                f"{head}. The file is damaged; mlops-jupyter will not write to it again "
                f"(recover what it holds with `sqlite3 {self.path} .recover`)"
            )
        if _is_read_only(e):
            self.read_only = True
            return ReadOnlyStoreError(f"{head}. The store is read-only: it can be read only")
        if _is_full(e):
            return StoreError(f"{head}. The disk (or the database size limit) is full")
        return StoreError(head)

    def _refuse_write(self, what: str) -> None:
        if self.malformed is not None:
            raise MalformedStoreError(
                f"store {self.path}: cannot {what}: the file was found malformed earlier "
                f"({self.malformed}); writes are refused so it is not damaged further "
                f"(recover what it holds with `sqlite3 {self.path} .recover`)"
            )
        if self.read_only:
            raise ReadOnlyStoreError(
                f"store {self.path}: cannot {what}: the store is read-only (the file, its "
                "folder or the file system cannot be written by this process)"
            )

    # -- transactions ------------------------------------------------------------------
    def _retry(self, fn, what: str = "read the store"):
        deadline = time.monotonic() + _MAX_WAIT_S
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.Error as e:
                if not _is_busy(e) or time.monotonic() > deadline:
                    raise self._error(e, what) from e
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)

    @staticmethod
    def _rollback(c: sqlite3.Connection) -> None:
        # SQLite may already have rolled back (disk full, I/O error): a second ROLLBACK
        # would fail with "no transaction is active" and hide the real error
        if c.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")

    @contextlib.contextmanager
    def write(self, what: str = "write to the store") -> Iterator[sqlite3.Connection]:
        """A short write transaction (BEGIN IMMEDIATE), retried while another writer holds
        the lock. Keep the body free of side effects other than SQL: it may not be rerun,
        but the BEGIN may wait. SQLite errors leave as StoreError; nothing stays open."""
        self._refuse_write(what)
        c = self.conn()
        if c.in_transaction:
            yield from self._savepoint(c, what)
            return
        self._retry(lambda: c.execute("BEGIN IMMEDIATE"), what)
        try:
            yield c
        except sqlite3.Error as e:
            self._rollback(c)
            raise self._error(e, what) from e
        except BaseException:
            self._rollback(c)
            raise
        try:
            self._retry(lambda: c.execute("COMMIT"), what)
        except BaseException:
            # a failed COMMIT (deferred constraint, disk full) can leave the transaction open
            self._rollback(c)
            raise

    @contextlib.contextmanager
    def snapshot(self, what: str = "read the store") -> Iterator[sqlite3.Connection]:
        """A deferred read transaction (WAL: one consistent state, writers not blocked)."""
        c = self.conn()
        if c.in_transaction:
            yield c
            return
        self._retry(lambda: c.execute("BEGIN"), what)
        try:
            yield c
        except sqlite3.Error as e:
            raise self._error(e, what) from e
        finally:
            self._rollback(c)

    def _savepoint(self, c: sqlite3.Connection, what: str) -> Iterator[sqlite3.Connection]:
        # a write() inside a write(): a savepoint, undone alone when its body raises
        depth = getattr(self._local, "depth", 0) + 1
        self._local.depth = depth
        name = f"sp{depth}"
        try:
            c.execute(f"SAVEPOINT {name}")
            try:
                yield c
            except sqlite3.Error as e:
                c.execute(f"ROLLBACK TO {name}")
                c.execute(f"RELEASE {name}")
                raise self._error(e, what) from e
            except BaseException:
                c.execute(f"ROLLBACK TO {name}")
                c.execute(f"RELEASE {name}")
                raise
            c.execute(f"RELEASE {name}")
        finally:
            self._local.depth = depth - 1

    def read(self, sql: str, args: tuple | list | dict = (), what: str = "read the store") -> list:
        """Run a read query and fetch all rows (retrying on a busy database)."""
        c = self.conn()
        try:
            return self._retry(lambda: c.execute(sql, args).fetchall(), what)
        except (UnicodeEncodeError, OverflowError) as e:
            # an argument SQLite cannot bind (lone surrogate, int beyond 64 bits): bad input
            raise InvalidInputError(f"cannot {what}: a query argument is invalid: {e}") from e

    def schema_version(self) -> int:
        """Highest applied schema migration of this store."""
        c = self.conn()
        return self._retry(lambda: migrate.current_version(c), "read the schema version")
