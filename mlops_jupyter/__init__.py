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
    MalformedStoreError,
    MlopsJupyterError,
    NoActiveRunError,
    NotAStoreError,
    ReadOnlyStoreError,
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

# Features beyond core tracking load on first use, so `import mlops_jupyter` stays fast
# and optional dependencies are only imported by the feature that needs them.
_LAZY = {
    # name: (module, attribute or None for the module itself)
    "telemetry": ("mlops_jupyter.telemetry", None),
    "data": ("mlops_jupyter.data", None),
    "privacy": ("mlops_jupyter.privacy", None),
    "alerts": ("mlops_jupyter.telemetry.alerts", "alerts"),
    "live": ("mlops_jupyter.widgets", "live"),
    "compare": ("mlops_jupyter.widgets", "compare"),
    "version": ("mlops_jupyter.data", "version"),
    "lineage": ("mlops_jupyter.loop.lineage", "lineage"),
    "preflight": ("mlops_jupyter.data", "preflight"),
    "drift": ("mlops_jupyter.data", "drift"),
    "export_notebook": ("mlops_jupyter.export", "export_notebook"),
    "sweep": ("mlops_jupyter.hpo", "sweep"),
    "register_model": ("mlops_jupyter.registry", "register_model"),
    "load_model": ("mlops_jupyter.registry", "load_model"),
    "promote_model": ("mlops_jupyter.registry", "promote_model"),
    "model_card": ("mlops_jupyter.loop.card", "model_card"),
    "set_model_card_fields": ("mlops_jupyter.loop.card", "set_model_card_fields"),
    "audit": ("mlops_jupyter.loop.lineage", "audit"),
    "models": ("mlops_jupyter.registry", "models"),
    "model_history": ("mlops_jupyter.registry", "history"),
    "checkpoint": ("mlops_jupyter.registry.checkpoints", "checkpoint"),
    "resume": ("mlops_jupyter.registry.checkpoints", "resume"),
    "loop": ("mlops_jupyter.loop", None),
    "gate": ("mlops_jupyter.loop", "gate"),
    "gates": ("mlops_jupyter.loop", "gates"),
    "set_model_policy": ("mlops_jupyter.loop", "set_model_policy"),
    "notify": ("mlops_jupyter.loop", "notify"),
    "approve": ("mlops_jupyter.loop.approve", "approve"),
    "llm": ("mlops_jupyter.llm", None),
    "llm_eval": ("mlops_jupyter.llm", "llm_eval"),
    "llm_regressions": ("mlops_jupyter.llm", "llm_regressions"),
    "log_image": ("mlops_jupyter.media", "log_image"),
    "log_figure": ("mlops_jupyter.media", "log_figure"),
    "log_table": ("mlops_jupyter.media", "log_table"),
    "log_text": ("mlops_jupyter.media", "log_text"),
    "log_audio": ("mlops_jupyter.media", "log_audio"),
    "confusion_matrix": ("mlops_jupyter.media", "confusion_matrix"),
    "media": ("mlops_jupyter.media", "media"),
    "load_media": ("mlops_jupyter.media", "load_media"),
    "flush_media": ("mlops_jupyter.media", "flush_media"),
    "autolog": ("mlops_jupyter.integrations", "autolog"),
    "serve": ("mlops_jupyter.serving.client", "serve"),
    "ab_report": ("mlops_jupyter.serving.report", "ab_report"),
    "promote_winner": ("mlops_jupyter.serving.report", "promote_winner"),
    "serving_drift": ("mlops_jupyter.serving.monitor", "serving_drift"),
    "serving": ("mlops_jupyter.serving", None),
    "features": ("mlops_jupyter.features", None),
    "feature_view": ("mlops_jupyter.features", "feature_view"),
    "feature_views": ("mlops_jupyter.features", "feature_views"),
    "register_features": ("mlops_jupyter.features", "register_features"),
    "training_set": ("mlops_jupyter.features", "training_set"),
    "materialize": ("mlops_jupyter.features", "materialize"),
    "online_features": ("mlops_jupyter.features", "online_features"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        obj = importlib.import_module(mod)
        if attr is not None:
            obj = getattr(obj, attr)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'mlops_jupyter' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ArtifactNotFoundError",
    "InvalidInputError",
    "MalformedStoreError",
    "MlopsJupyterError",
    "NoActiveRunError",
    "NotAStoreError",
    "ReadOnlyStoreError",
    "Run",
    "RunNotFoundError",
    "StoreError",
    "active_run",
    "end_run",
    "flush",
    "get_run",
    "log",
    "log_artifact",
    "log_metric",
    "log_params",
    "metrics",
    "runs",
    "set_store",
    "set_tags",
    "start_run",
]


def _jupyter_labextension_paths():
    """Where the prebuilt JupyterLab sidebar lives (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "mlops-jupyter-labextension"}]


def _jupyter_server_extension_points():
    """The jupyter_server extension serving the sidebar's REST API."""
    return [{"module": "mlops_jupyter.server"}]


def load_ipython_extension(ipython):  # pragma: no cover - exercised through a real kernel
    """`%load_ext mlops_jupyter`: register the magics and (idle) cell hooks."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython):  # pragma: no cover
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)
