"""The storage contract every backend implements (SQLite, PostgreSQL).

Layering: the domain operations of the store (`store/runs.py`, `metrics.py`, `capture.py`,
`data.py`, `registry.py`, `media.py`, `telemetry.py`, `pipeline.py`, the query modules)
are written once, in the SQL that SQLite and PostgreSQL share (`?` placeholders,
`INSERT ... ON CONFLICT`, `RETURNING`), against this small interface. A backend supplies
connections, transactions, errors, migrations and the few expressions the two dialects
spell differently (`json_number`, `columns`). No module outside `store/` writes SQL or
imports a database driver; features call the domain operations.

Semantics every backend keeps (checked by tests/test_store_contract.py on each backend):
- `write()` is one transaction: all of its statements commit together or none does. It
  nests: an inner `write()` is a savepoint, rolled back alone when its body raises.
  A database error leaves as `StoreError` (the original error chained); a failed COMMIT
  never leaves the transaction open. Lock waits and lost connections are retried
  before the body runs, never after part of it ran.
- `read()` runs one statement and returns all rows as tuples; `snapshot()` runs several
  against one consistent state.
- Connections are per thread; a Store object may be shared by threads. Every method is
  thread-safe. After `os.fork()` the child opens its own connections.
- Identity: `key` names the store (a resolved path or a URL without password);
  `location` is what messages show (never a password).
"""

from __future__ import annotations

import abc
import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..artifacts import ArtifactStore


class Cursor(Protocol):
    """What `Conn.execute` returns (a DB-API cursor)."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list: ...


class Conn(Protocol):
    """What `write()` yields: statements in `?` placeholder style, run in the transaction."""

    def execute(self, sql: str, args: Sequence | dict = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> Any: ...


class BaseStore(abc.ABC):
    """A store: runs, metrics, cells, data versions, models... in one database, and the
    artifacts (files, models, checkpoints) in a folder."""

    backend: str = ""
    key: str = ""
    location: str = ""
    read_only: bool = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def __str__(self) -> str:
        return self.location

    # -- artifacts -----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def root(self) -> Path:
        """Folder holding the store's files (artifacts, models, checkpoints)."""

    @property
    def artifacts(self) -> ArtifactStore:
        """Where this store's files live (the artifact-store contract, artifacts/base.py):
        MLOPS_JUPYTER_ARTIFACTS (a folder, or an s3://, gs://, az:// URL) when set, else
        the store's own folder."""
        from ..artifacts import open_artifacts

        where = os.environ.get("MLOPS_JUPYTER_ARTIFACTS")
        return open_artifacts(where or self.root)

    # -- SQL -----------------------------------------------------------------------------
    @abc.abstractmethod
    def write(self, what: str = "write to the store") -> contextlib.AbstractContextManager[Conn]:
        """A write transaction (nested calls are savepoints); see the module docstring."""

    def write_again(
        self, fn: Callable[[Conn], Any], what: str = "write to the store", wait: float = 30.0
    ) -> Any:
        """`fn(conn)` in a write transaction, run again while the store cannot be reached
        (up to `wait` s; a database restart). Only for writes that give the same result
        when repeated (upserts, setting a status): an attempt whose commit was lost with
        the connection may have been applied already."""
        deadline = time.monotonic() + wait
        delay = 0.1
        while True:
            try:
                with self.write(what) as c:
                    return fn(c)
            except Exception as e:
                # inside an outer transaction the whole transaction is lost: its owner
                # decides
                if not self.unavailable(e) or self.in_write() or time.monotonic() > deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    def in_write(self) -> bool:
        """Whether this thread is inside a write transaction of this store."""
        return False

    @abc.abstractmethod
    def snapshot(self, what: str = "read the store") -> contextlib.AbstractContextManager[Conn]:
        """A read-only transaction: every statement in it sees the same committed state
        (e.g. counts and the chunks they count)."""

    @abc.abstractmethod
    def read(self, sql: str, args: Sequence | dict = (), what: str = "read the store") -> list:
        """Run one read statement and return all rows."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """Highest applied migration."""

    @abc.abstractmethod
    def columns(self, table: str) -> list[str]:
        """Column names of `table`, in order."""

    @abc.abstractmethod
    def json_number(self, expr: str) -> str:
        """SQL for: `expr` (a TEXT column of JSON values) as a float when it holds a JSON
        number, else NULL."""

    @abc.abstractmethod
    def size_bytes(self) -> int:
        """Bytes the database takes on disk (or on the server)."""

    # Backends keep every connection they open in `_all` (guarded by `_lock`) and the
    # calling thread's in the thread-local `_local`, so closing is shared.
    _lock: threading.Lock
    _all: list[Any]
    _local: threading.local

    def close(self) -> None:
        """Close every connection this object opened (it may be used again: connections
        reopen on demand)."""
        with self._lock:
            for c in self._all:
                with contextlib.suppress(Exception):
                    c.close()
            self._all.clear()
        self._local = threading.local()

    def assume_crashed(self, dead: list[tuple[float | None, int]]) -> None:  # noqa: B027
        """Show runs as crashed to this process without writing (read-only stores); a
        writable backend marks them in the database instead and needs nothing here."""

    def unavailable(self, e: BaseException) -> bool:
        """Whether `e` (a StoreError) means the database cannot be reached for now, so a
        writer should keep its data and retry later rather than drop it."""
        return False

    def optuna_storage_url(self) -> str | None:
        """A SQLAlchemy URL for optuna's RDBStorage in this store's own database (its own
        tables beside the store's), or None where sweeps keep a journal file beside the
        store instead (SQLite). The URL may hold a password: never log or show it."""
        return None

    def info(self) -> dict[str, Any]:
        """Backend, location, schema version and size, for `store info`."""
        return {
            "backend": self.backend,
            "location": self.location,
            "schema_version": self.schema_version(),
            "size_bytes": self.size_bytes(),
            "read_only": self.read_only,
        }
