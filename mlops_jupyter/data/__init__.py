"""Data versions (content fingerprints + column profiles), lineage, preflight checks and
drift. Pure Python: no Jupyter imports.

    v = mj.version(df, name="train")          # same content -> same id, linked to the run
    mj.lineage(run)                            # what a run used and produced
    mj.preflight(df, min_rows=1000, not_null=True, unique="id")
    mj.drift(train_df, live_df)                # or two stored versions: mj.drift("train", "live")
"""

from __future__ import annotations

from ..store.data import DataVersionNotFoundError
from .drift import drift, drift_reports
from .lineage import Lineage, lineage, runs_for
from .preflight import PreflightError, PreflightReport, preflight
from .report import DriftReport
from .versions import DataVersion, get_version, version, versions

__all__ = [
    "DataVersion",
    "DataVersionNotFoundError",
    "DriftReport",
    "Lineage",
    "PreflightError",
    "PreflightReport",
    "drift",
    "drift_reports",
    "get_version",
    "lineage",
    "preflight",
    "runs_for",
    "version",
    "versions",
]
