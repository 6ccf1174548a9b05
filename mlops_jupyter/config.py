"""Settings, read from MLOPS_JUPYTER_* environment variables at the time they are needed."""

from __future__ import annotations

import os
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


def find_store_path(start: str | os.PathLike | None = None) -> Path:
    """Where the store lives: MLOPS_JUPYTER_STORE, else the nearest `.mlops/` walking up
    from `start` (default: the working directory), else `./.mlops/store.db`."""
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
            return cand / DB_FILENAME
    return here / STORE_DIRNAME / DB_FILENAME
