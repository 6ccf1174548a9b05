"""What a store holds, for `mlops-jupyter store info`: counts and size, never a password."""

from __future__ import annotations

from typing import Any

from .base import BaseStore

_COUNTS = (
    ("experiments", "SELECT count(*) FROM experiments"),
    ("runs", "SELECT count(*) FROM runs"),
    ("metric_points", "SELECT coalesce(sum(n), 0) FROM metric_summary"),
    ("artifacts", "SELECT count(*) FROM artifacts"),
    ("models", "SELECT count(*) FROM models"),
    ("model_versions", "SELECT count(*) FROM model_versions"),
    ("data_versions", "SELECT count(*) FROM data_versions"),
)


def store_info(store: BaseStore) -> dict[str, Any]:
    """Backend, location (password hidden), schema version, size in bytes, and how many
    experiments, runs, metric points, artifacts, models and data versions it holds."""
    out = store.info()
    for name, sql in _COUNTS:
        out[name] = int(store.read(sql, what=f"count {name.replace('_', ' ')}")[0][0])
    return out
