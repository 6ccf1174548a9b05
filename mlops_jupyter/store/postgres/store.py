"""The PostgreSQL backend (psycopg 3): a team's shared store.

One connection per thread (autocommit; `write()` opens a transaction, nested ones are
savepoints), reopened after a server restart. Connection failures are retried before a
transaction's body runs, never after; errors leave as StoreError with the URL's password
hidden. Artifacts live under MLOPS_JUPYTER_ARTIFACTS (a folder every client can reach)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...config import redact_url
from ...errors import InvalidInputError, NotAStoreError, StoreError, StoreVersionError
from .. import schema
from ..base import BaseStore
from . import ddl, dialect

_CONNECT_TIMEOUT_S = 5
# how long a lost server is retried before raising: reads wait a while; a write gives up
# sooner, since the tracking writer keeps its points and tries again anyway
_READ_WAIT_S = 10.0
_WRITE_WAIT_S = 2.0
_LOCK_ID = 0x6D6C6F70  # advisory lock held while migrating ("mlop")


class StoreUnavailableError(StoreError):
    """The database server cannot be reached (down, restarting, network): worth retrying."""


class StoreConflictError(StoreError):
    """A transaction lost a deadlock or serialization conflict and was rolled back:
    worth retrying (the tracking writer does, with its points kept)."""


def _psycopg():
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the extra is installed in CI
        raise StoreError(
            "a postgresql:// store needs psycopg: pip install 'mlops-jupyter[postgres]'"
        ) from None
    return psycopg


_I64 = 2**63


def _value(v: Any) -> Any:
    if isinstance(v, int):
        # SQLite stores booleans as 0/1 in INTEGER columns; PostgreSQL refuses a boolean
        if isinstance(v, bool):
            return int(v)
        # SQLite refuses integers beyond 64 bits; here they would silently become NUMERIC
        if not -_I64 <= v < _I64:
            raise OverflowError(f"Python int too large to convert to a 64-bit integer: {v}")
    return v


def _adapt(args: Sequence | dict) -> Any:
    if isinstance(args, dict):
        return {k: _value(v) for k, v in args.items()}
    return [_value(v) for v in args]


class _Conn:
    """A psycopg connection that takes the domain operations' SQL (see dialect.py)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, args: Sequence | dict = ()) -> Any:
        if not args:
            return self.raw.execute(dialect.translate_plain(sql))
        return self.raw.execute(dialect.translate(sql), _adapt(args))

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> Any:
        cur = self.raw.cursor()
        rows = list(rows)
        if rows:
            cur.executemany(dialect.translate(sql), [_adapt(r) for r in rows])
        return cur


class PostgresStore(BaseStore):
    """A store in a PostgreSQL database, named by a postgresql:// URL. Libpq conventions
    apply (PGPASSWORD, ~/.pgpass, PGHOST, sslmode=... in the URL)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self._url = url
        self.backend = "postgresql"
        self.key = self.location = redact_url(url)
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._columns: dict[str, list[str]] = {}
        raw = self._connect()
        try:
            self._prepare(raw, create)
        except BaseException:
            with contextlib.suppress(Exception):
                raw.close()
            raise
        self._local.conn = raw
        self._all.append(raw)

    # -- artifacts -----------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The local folder of this store's files: MLOPS_JUPYTER_ARTIFACTS when it is a
        folder; with object storage, a per-store working folder in the local cache."""
        from ...artifacts import is_remote
        from ...config import cache_dir

        where = os.environ.get("MLOPS_JUPYTER_ARTIFACTS")
        if not where:
            raise StoreError(
                f"store {self.location} keeps its artifacts (files, models, checkpoints) in "
                "a place every client can reach: set MLOPS_JUPYTER_ARTIFACTS to a shared "
                "folder or an s3://, gs:// or az:// URL"
            )
        if is_remote(where):
            ident = hashlib.sha256(self.location.encode()).hexdigest()[:16]
            p = cache_dir() / "stores" / ident
        else:
            p = Path(where).expanduser().resolve()
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the artifacts folder {p}: {e}") from None
        return p

    @property
    def artifacts(self) -> Any:
        self.root  # noqa: B018 - the clear error when MLOPS_JUPYTER_ARTIFACTS is unset
        return super().artifacts

    # -- connections -----------------------------------------------------------------------
    def _connect(self) -> Any:
        psycopg = _psycopg()
        try:
            raw = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT_S,
                cursor_factory=psycopg.ClientCursor,
                application_name="mlops-jupyter",
            )
        except psycopg.Error as e:
            raise self._error(e, "connect") from None
        _numeric_as_number(raw)
        return raw

    def _raw(self) -> Any:
        c = getattr(self._local, "conn", None)
        if c is not None and (c.closed or c.broken):
            with contextlib.suppress(Exception):
                c.close()
            c = None
        if c is None:
            c = self._connect()
            self._local.conn = c
            with self._lock:
                self._all = [x for x in self._all if not x.closed]
                self._all.append(c)
        return c

    def _with_retry(self, fn, what: str, wait: float = _READ_WAIT_S):
        """Run `fn(raw)` retrying while the server cannot be reached (up to `wait` s)."""
        psycopg = _psycopg()
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            try:
                return fn(self._raw())
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
            except psycopg.OperationalError as e:
                err = self._error(e, what)
                if not isinstance(err, StoreUnavailableError) or time.monotonic() > deadline:
                    raise err from e
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    # -- schema ----------------------------------------------------------------------------
    def _prepare(self, raw: Any, create: bool) -> None:
        psycopg = _psycopg()
        try:
            state = _inspect(raw)
            if state == "foreign":
                raise NotAStoreError(
                    f"{self.location} is a database of another application (it has tables "
                    "but no mlops-jupyter store_meta); it was not modified. Use an empty "
                    "database or another schema (?options=-csearch_path%3Dmlops)."
                )
            if state == "empty" and not create:
                raise StoreError(f"no store at {self.location}: the database has no store yet")
            have = _applied(raw) if state == "store" else set()
            if have and max(have) > schema.LATEST:
                raise StoreVersionError(
                    f"{self.location} has schema version {max(have)}, newer than this "
                    f"mlops-jupyter understands ({schema.LATEST}); upgrade the package."
                )
            if state == "empty" or any(m[0] not in have for m in schema.ALL):
                _migrate(raw)
        except psycopg.Error as e:
            raise self._error(e, "open the store") from e

    def optuna_storage_url(self) -> str | None:
        """The store's URL for SQLAlchemy's psycopg 3 dialect. Credentials stay as libpq
        takes them: a password in the URL is kept, else PGPASSWORD / ~/.pgpass apply."""
        scheme, sep, rest = self._url.partition("://")
        if not sep or scheme not in ("postgresql", "postgres"):
            raise StoreError(f"store {self.location}: not a postgresql:// URL")
        return f"postgresql+psycopg://{rest}"

    def schema_version(self) -> int:
        return self._with_retry(lambda c: max(_applied(c), default=0), "read the schema version")

    def columns(self, table: str) -> list[str]:
        cols = self._columns.get(table)
        if cols is None:
            cols = [
                r[0]
                for r in self.read(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = ?"
                    " ORDER BY ordinal_position",
                    (table,),
                )
            ]
            self._columns[table] = cols
        return cols

    def json_number(self, expr: str) -> str:
        return dialect.json_number(expr)

    def size_bytes(self) -> int:
        return int(self.read("SELECT pg_database_size(current_database())")[0][0])

    # -- errors ------------------------------------------------------------------------------
    def _error(self, e: BaseException, what: str) -> StoreError:
        psycopg = _psycopg()
        msg = str(e).strip()
        pw = _password(self._url)
        if pw:
            msg = msg.replace(pw, "***")
        head = f"store {self.location}: cannot {what}: {msg}"
        if isinstance(e, psycopg.errors.TransactionRollback):
            return StoreConflictError(head)
        if isinstance(e, psycopg.OperationalError) and _lost(e):
            return StoreUnavailableError(head)
        if isinstance(e, psycopg.errors.DiskFull):
            return StoreError(f"{head}. The database server's disk is full")
        return StoreError(head)

    def unavailable(self, e: BaseException) -> bool:
        return isinstance(e, (StoreUnavailableError, StoreConflictError))

    # -- transactions ----------------------------------------------------------------------
    def _fail(self, e: BaseException, what: str) -> Exception:
        """The error to raise for psycopg error `e`: a value PostgreSQL cannot take is the
        caller's bad input; everything else is the store's (see `_error`)."""
        if isinstance(e, _psycopg().DataError):
            return InvalidInputError(f"cannot {what}: a value is invalid here: {e}")
        return self._error(e, what)

    @contextlib.contextmanager
    def _transaction(self, what: str, wait: float, read_only: bool) -> Iterator[_Conn]:
        # the outermost transaction of this thread (re)connects first; nested ones are
        # savepoints on the same connection
        psycopg = _psycopg()
        depth = getattr(self._local, "depth", 0)
        raw = self._raw() if depth else self._with_retry(_ping, what, wait)
        self._local.depth = depth + 1
        try:
            with raw.transaction():
                if read_only and not depth:
                    raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield _Conn(raw)
        except psycopg.Error as e:
            raise self._fail(e, what) from e
        finally:
            self._local.depth = depth

    def in_write(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def write(self, what: str = "write to the store") -> contextlib.AbstractContextManager[_Conn]:
        return self._transaction(what, _WRITE_WAIT_S, read_only=False)

    def snapshot(self, what: str = "read the store") -> contextlib.AbstractContextManager[_Conn]:
        return self._transaction(what, _READ_WAIT_S, read_only=True)

    def read(self, sql: str, args: Sequence | dict = (), what: str = "read the store") -> list:
        psycopg = _psycopg()
        try:
            query = (
                (dialect.translate(sql), _adapt(args)) if args else (dialect.translate_plain(sql),)
            )
        except OverflowError as e:
            raise InvalidInputError(f"cannot {what}: a query argument is invalid: {e}") from e

        def run(raw: Any) -> list:
            return raw.execute(*query).fetchall()

        try:
            if getattr(self._local, "depth", 0):
                # inside a write(): same connection and transaction, no retry
                return run(self._raw())
            return self._with_retry(run, what)
        except psycopg.Error as e:
            raise self._fail(e, what) from e


def _ping(raw: Any) -> Any:
    # a connection the server dropped (restart) fails here, before any statement of the
    # transaction ran, so retrying on a new connection is safe
    raw.execute("SELECT 1")
    return raw


def _password(url: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    try:
        pw = urlsplit(url).password
    except ValueError:
        return None
    return unquote(pw) if pw else None


def _lost(e: BaseException) -> bool:
    """Whether an OperationalError means the server is unreachable or went away (as
    opposed to a refusal such as a wrong password or a missing database)."""
    state = getattr(e, "sqlstate", None)
    if state is not None:
        # 08: connection exceptions; 57P01-03: shut down, crashed, starting up
        return state.startswith("08") or state in ("57P01", "57P02", "57P03")
    text = str(e).lower()  # failed before the server answered (refused, timeout, DNS...)
    refused_for_good = (
        "password authentication failed",
        "does not exist",
        "no password supplied",
        "permission denied",
        "no pg_hba.conf entry",
    )
    return not any(t in text for t in refused_for_good)


def _numeric_as_number(raw: Any) -> None:
    # sum()/avg() of integers are NUMERIC: return int/float like SQLite, not Decimal
    from psycopg.adapt import Loader

    class NumericLoader(Loader):
        def load(self, data: Any) -> Any:
            s = bytes(data).decode()
            try:
                return int(s)
            except ValueError:
                return float(s)

    raw.adapters.register_loader("numeric", NumericLoader)


def _inspect(raw: Any) -> str:
    """'empty' (no tables), 'store' (an mlops-jupyter store) or 'foreign'."""
    tables = {
        r[0]
        for r in raw.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    }
    if not tables:
        return "empty"
    if "store_meta" not in tables:
        return "foreign"
    row = raw.execute("SELECT value FROM store_meta WHERE key='app'").fetchone()
    return "store" if row and row[0] == schema.APP_ID else "foreign"


def _applied(raw: Any) -> set[int]:
    has = raw.execute(
        "SELECT 1 FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
    ).fetchone()
    if not has:
        return set()
    return {r[0] for r in raw.execute("SELECT version FROM schema_migrations").fetchall()}


def _migrate(raw: Any) -> list[int]:
    """Apply pending migrations in one transaction; concurrent openers wait on a lock."""
    applied = []
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        raw.execute(
            "CREATE TABLE IF NOT EXISTS store_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        raw.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations("
            "version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)"
        )
        raw.execute(
            "INSERT INTO store_meta VALUES('app', %s) ON CONFLICT DO NOTHING", (schema.APP_ID,)
        )
        have = _applied(raw)
        for version, name, step in schema.ALL:
            if version in have:
                continue
            if callable(step):
                step(_Conn(raw))
            else:
                for stmt in ddl.translate(step):
                    raw.execute(stmt)
            raw.execute(
                "INSERT INTO schema_migrations VALUES(%s, %s, %s)", (version, name, time.time())
            )
            applied.append(version)
    return applied


def has_store(url: str) -> bool:
    """Whether the database at `url` holds a store (errors if it cannot be reached)."""
    psycopg = _psycopg()
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as raw:
            return _inspect(raw) == "store"
    except psycopg.Error as e:
        raise StoreError(f"store {redact_url(url)}: cannot connect: {e}") from None
