"""Migration between MLflow and mlops-jupyter: `import_runs` brings runs from any MLflow
tracking URI into the current store, `export_runs` pushes ours to one. Both are idempotent.
Needs the `mlflow` extra (pip install mlops-jupyter[mlflow]); it is imported on first use.
See docs/mlflow.md for what maps to what."""

from __future__ import annotations

from .common import MlflowError
from .exporter import export_runs
from .importer import import_runs

__all__ = ["MlflowError", "export_runs", "import_runs"]
