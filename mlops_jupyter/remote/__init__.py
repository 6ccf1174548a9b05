"""Client of a running `mlops-jupyter server`: MLOPS_JUPYTER_STORE=http(s)://host:port with
MLOPS_JUPYTER_TOKEN makes the tracking API (start_run, log, log_params, set_tags, end,
runs, metrics, get_run) go through the server. Features that need the store itself refuse
with RemoteUnsupportedError."""

from __future__ import annotations

import sys

from ..errors import StoreError

SUPPORTED = (
    "start_run, log/log_metric, log_params, set_tags, end_run, runs, metrics, get_run, "
    "add_event, log_artifact, artifact_path, %%mlops_run cell capture, the model registry, "
    "system telemetry, mj.alerts, data versions, drift, preflight and data lineage "
    "(mj.drift, mj.preflight, mj.lineage(run), mj.data.drift_reports, mj.data.runs_for), "
    "LLM evaluation (mj.llm_eval, mj.llm.*), mj.resolve_run, "
    "the live monitor, media logging (mj.log_image, "
    "log_table, ..., mj.media, mj.load_media), checkpoints (mj.checkpoint, mj.resume), "
    "gates and promotion policies (mj.gate, mj.gates, mj.set_model_policy), approvals "
    "(mj.approve), model cards, model lineage, mj.audit, the feature store "
    "(mj.feature_view, mj.register_features, mj.feature_views, mj.training_set, "
    "mj.materialize, mj.online_features), MLflow import/export "
    "(mlops-jupyter mlflow import|export), and sweeps (mj.sweep, "
    "%%mlops_sweep, mlops-jupyter sweep join), serving (mlops-jupyter serve, mj.serve, "
    "mlops-jupyter rollout, mj.ab_report, mj.promote_winner, mj.serving_drift), "
    "the loop's watcher (mlops-jupyter watch, watch signals|retry|abandon)"
)


class RemoteUnsupportedError(StoreError, AttributeError):
    """A feature that needs a direct store was used with a tracking-server URL. (Also an
    AttributeError, so `getattr(store, name, default)` probes keep working.)"""


def is_remote(location: object) -> bool:
    """Whether a store location is a tracking server (http:// or https://)."""
    return isinstance(location, str) and location[:8].lower().startswith(("http://", "https://"))


def unsupported(feature: str, url: str | None = None) -> RemoteUnsupportedError:
    """The error for `feature` used over a tracking server."""
    from ..config import redact_url

    where = f" {redact_url(url)}" if url else ""
    return RemoteUnsupportedError(
        f"{feature} needs a direct store: set MLOPS_JUPYTER_STORE to a postgresql://... URL "
        f"or a path. Over the tracking server{where} only {SUPPORTED} are available."
    )


_FEATURES = {
    "capture": "this part of cell capture",
    "magics": "this magic",
    "data": "this data feature",
    "registry": "checkpoints (mj.checkpoint, mj.resume)",
    "hpo": "sweeps",
    "widgets": "the sidebar and widgets",
    "server": "the sidebar (Jupyter server extension)",
    "telemetry": "system telemetry",
    "export": "export",
    "mlflowio": "MLflow import/export",
    "media": "media logging",
    "llm": "LLM evaluation",
    "integrations": "framework integrations",
    "artifacts": "artifacts",
}


def caller_feature() -> str:
    """The feature that asked for the store: the first package outside tracking/store."""
    f = sys._getframe(1)
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        parts = mod.split(".")
        if parts[0] != "mlops_jupyter":
            break
        if len(parts) > 1 and parts[1] not in ("tracking", "store", "remote", "config"):
            return _FEATURES.get(parts[1], f"{mod}.{f.f_code.co_name}")
        if parts[1:2] == ["tracking"] and f.f_code.co_name in ("resolve_run", "log_artifact"):
            return f"mj.{f.f_code.co_name}"
        f = f.f_back
    return "this feature"


__all__ = ["RemoteUnsupportedError", "caller_feature", "is_remote", "unsupported"]
