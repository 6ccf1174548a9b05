"""Runs, params, metrics and artifacts; pure Python (no Jupyter imports)."""

from .api import (
    active_run,
    end_run,
    flush,
    get_run,
    log,
    log_artifact,
    log_metric,
    log_params,
    metrics,
    resolve_run,
    runs,
    set_store,
    set_tags,
    start_run,
)
from .run import Run

__all__ = [
    "Run",
    "active_run",
    "end_run",
    "flush",
    "get_run",
    "log",
    "log_artifact",
    "log_metric",
    "log_params",
    "metrics",
    "resolve_run",
    "runs",
    "set_store",
    "set_tags",
    "start_run",
]
