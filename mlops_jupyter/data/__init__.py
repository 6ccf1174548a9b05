"""Data versions (content fingerprints + column profiles), lineage, preflight checks and
drift. Pure Python: no Jupyter imports.

    v = mj.version(df, name="train")          # same content -> same id, linked to the run
    mj.lineage(run)                            # what a run used and produced
    mj.preflight(df, min_rows=1000, not_null=True, unique="id")
    mj.drift(train_df, live_df)                # or two stored versions: mj.drift("train", "live")

Names load on first use, so the per-run autolog hook (data.autolog) never imports polars.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "DataVersion": "catalog",
    "DataVersionNotFoundError": "..store.data",
    "DriftReport": "report",
    "Lineage": "graph",
    "PreflightError": "checks",
    "PreflightReport": "checks",
    "drift": "compare",
    "drift_reports": "compare",
    "get_version": "catalog",
    "lineage": "graph",
    "preflight": "checks",
    "runs_for": "graph",
    "version": "catalog",
    "versions": "catalog",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
