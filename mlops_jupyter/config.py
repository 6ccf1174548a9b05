"""Settings, read from MLOPS_JUPYTER_* environment variables at the time they are needed."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

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


def spool_dir() -> str | None:
    """Folder of the spool file (MLOPS_JUPYTER_SPOOL_DIR; default: the system temp folder)."""
    return os.environ.get("MLOPS_JUPYTER_SPOOL_DIR") or None


def find_store_path(start: str | os.PathLike | None = None) -> Path:
    """Where the store lives: MLOPS_JUPYTER_STORE, else the nearest `.mlops/` walking up
    from `start` (default: the working directory), else `./.mlops/store.db`.

    A `.mlops/` owned by another user is skipped with a warning unless named explicitly
    (MLOPS_JUPYTER_STORE or mj.set_store)."""
    env = os.environ.get("MLOPS_JUPYTER_STORE")
    if env:
        p = Path(env).expanduser()
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
