"""Settings, read from MLOPS_JUPYTER_* environment variables at the time they are needed."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from urllib.parse import unquote, urlsplit

STORE_DIRNAME = ".mlops"
DB_FILENAME = "store.db"


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def flush_interval() -> float:
    """Seconds between background flushes (MLOPS_JUPYTER_FLUSH_INTERVAL, default 0.2)."""
    return max(0.01, _float_env("MLOPS_JUPYTER_FLUSH_INTERVAL", 0.2))


def stale_after() -> float:
    """Seconds without heartbeat after which a run of another host reads as crashed."""
    return _float_env("MLOPS_JUPYTER_STALE_AFTER", 300.0)


def heartbeat_interval() -> float:
    """Seconds between heartbeats of an active run (MLOPS_JUPYTER_HEARTBEAT, default 5)."""
    return max(0.05, _float_env("MLOPS_JUPYTER_HEARTBEAT", 5.0))


_warned_unsafe: set[str] = set()


def unsafe_store_reason(d: Path) -> str | None:
    """Why a found `.mlops/` folder must not be adopted without being named: it is owned by
    another user, who controls what we would read and load from it (git's safe.directory
    rule). None when it is safe to use."""
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # no POSIX owners (Windows)
        return None
    try:
        st = d.stat()
    except OSError:
        return None
    if st.st_uid == getuid():
        return None
    writable = "writable by everyone, " if st.st_mode & 0o002 else ""
    return f"it is {writable}owned by uid {st.st_uid}, not by you (uid {getuid()})"


def max_queue() -> int:
    """Metric points a process keeps in memory while the store is behind or cannot be
    written; past it they go to a temporary spool file (MLOPS_JUPYTER_MAX_QUEUE,
    default 1,000,000, about 24 MB)."""
    return max(1, int(_float_env("MLOPS_JUPYTER_MAX_QUEUE", 1_000_000)))


def exit_wait() -> float:
    """Seconds a process at exit waits for an unreachable store server to write what it
    still holds (MLOPS_JUPYTER_EXIT_WAIT, default 30)."""
    return max(0.0, _float_env("MLOPS_JUPYTER_EXIT_WAIT", 30.0))


def spool_dir() -> str | None:
    """Folder of the spool file (MLOPS_JUPYTER_SPOOL_DIR; default: the system temp folder)."""
    return os.environ.get("MLOPS_JUPYTER_SPOOL_DIR") or None


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def redact_url(url: str) -> str:
    """`url` without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def is_db_url(value: object) -> bool:
    """Whether a store location names a database server (postgresql://...)."""
    m = _SCHEME.match(value) if isinstance(value, str) else None
    return m is not None and m.group(1).lower() in ("postgresql", "postgres")


def store_location_from(value: str | os.PathLike) -> Path | str:
    """A store location as given by a user (env var, set_store, --store): a path, or a URL.

    Any value with a scheme is parsed as a URL, never taken as a folder name (a typo'd or
    unsupported URL must not silently create a SQLite store under `postgresql:/...`).
    `file://` and `sqlite://` URLs name a SQLite file (a Path is returned);
    `postgresql://` URLs are returned as they are; every other scheme is refused."""
    if not isinstance(value, str):
        return Path(value).expanduser()
    m = _SCHEME.match(value)
    if m is None:
        return Path(value).expanduser()
    from .errors import StoreError

    scheme = m.group(1).lower()
    if scheme in ("file", "sqlite"):
        path = unquote(urlsplit(value).path)
        if not path:
            raise StoreError(f"store URL {redact_url(value)!r} names no file")
        return Path(path).expanduser()
    if scheme in ("postgresql", "postgres"):
        return value
    if scheme in ("http", "https"):
        # a tracking server serves the tracking API (mlops_jupyter.remote), not the store
        from .remote import caller_feature, unsupported

        raise unsupported(caller_feature(), value)
    raise StoreError(
        f"store URL {redact_url(value)!r}: unknown scheme {scheme!r}; use a path, "
        "file:///path, sqlite:///path or postgresql://user@host:5432/db"
    )


def store_path_from(value: str | os.PathLike) -> Path:
    """Like `store_location_from`, for callers that need a SQLite file: a database URL
    is refused with a StoreError."""
    loc = store_location_from(value)
    if isinstance(loc, str):
        from .errors import StoreError

        raise StoreError(f"{redact_url(loc)} is a PostgreSQL store, not a SQLite file")
    return loc


def find_store_location(start: str | os.PathLike | None = None) -> Path | str:
    """`find_store_path`, except that a postgresql:// MLOPS_JUPYTER_STORE is returned as
    its URL (a string)."""
    env = os.environ.get("MLOPS_JUPYTER_STORE")
    if env and is_db_url(env):
        return env
    return find_store_path(start)


def find_store_path(start: str | os.PathLike | None = None) -> Path:
    """Where the store lives: MLOPS_JUPYTER_STORE, else the nearest `.mlops/` walking up
    from `start` (default: the working directory), else `./.mlops/store.db`.

    A `.mlops/` owned by another user is skipped with a warning unless named explicitly
    (MLOPS_JUPYTER_STORE or mj.set_store)."""
    env = os.environ.get("MLOPS_JUPYTER_STORE")
    if env:
        p = store_path_from(env)
        if p.is_dir() or (not p.suffix and not p.exists()):
            return p / DB_FILENAME
        return p
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        cand = d / STORE_DIRNAME
        if cand.is_dir():
            why = unsafe_store_reason(cand)
            if why is None:
                return cand / DB_FILENAME
            if d == here:
                from .errors import StoreError

                raise StoreError(
                    f"not using the store {cand}: {why}. If you trust it, name it with "
                    f"MLOPS_JUPYTER_STORE={cand} or mj.set_store({str(cand)!r})"
                )
            if str(cand) not in _warned_unsafe:
                _warned_unsafe.add(str(cand))
                warnings.warn(
                    f"mlops-jupyter: ignoring the store {cand}: {why}. If you trust it, name "
                    f"it with MLOPS_JUPYTER_STORE={cand} or mj.set_store({str(cand)!r})",
                    RuntimeWarning,
                    2,
                )
    return here / STORE_DIRNAME / DB_FILENAME


def cache_dir() -> Path:
    """Local cache folder: artifacts downloaded from object storage, remembered file
    digests (MLOPS_JUPYTER_CACHE; default $XDG_CACHE_HOME/mlops-jupyter or
    ~/.cache/mlops-jupyter)."""
    env = os.environ.get("MLOPS_JUPYTER_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mlops-jupyter"


def cache_limit_bytes() -> int:
    """Size limit of the read-through artifact cache (MLOPS_JUPYTER_CACHE_MB, default
    10240); least recently used files are removed past it."""
    return int(max(0.0, _float_env("MLOPS_JUPYTER_CACHE_MB", 10240.0)) * (1 << 20))
