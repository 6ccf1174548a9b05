"""mlops-jupyter: experiment tracking that lives in the notebook, on a local SQLite store.

    import mlops_jupyter as mj
    with mj.start_run("baseline", params={"lr": 3e-4}):
        for step in range(100):
            mj.log(step=step, loss=...)
    mj.runs()

In Jupyter: `%load_ext mlops_jupyter`, then `%%mlops_run` around a training cell.
"""

from __future__ import annotations

from .errors import (
    ArtifactNotFoundError,
    InvalidInputError,
    MlopsJupyterError,
    NoActiveRunError,
    NotAStoreError,
    RunNotFoundError,
    StoreError,
)
from .tracking import (
    Run,
    active_run,
    end_run,
    flush,
    get_run,
    log,
    log_artifact,
    log_metric,
    log_params,
    metrics,
    runs,
    set_store,
    set_tags,
    start_run,
)

__version__ = "0.1.0"

__all__ = [
    "ArtifactNotFoundError", "InvalidInputError", "MlopsJupyterError", "NoActiveRunError",
    "NotAStoreError", "Run", "RunNotFoundError", "StoreError", "active_run", "end_run",
    "flush", "get_run", "log", "log_artifact", "log_metric", "log_params", "metrics", "runs",
    "set_store", "set_tags", "start_run",
]


def load_ipython_extension(ipython):  # pragma: no cover - exercised through a real kernel
    """`%load_ext mlops_jupyter`: register the magics and (idle) cell hooks."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython):  # pragma: no cover
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)
