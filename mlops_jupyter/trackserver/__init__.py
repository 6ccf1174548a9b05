"""Standalone tracking server: our JSON API (/api/v1) and the tracking part of MLflow's REST
API (/api/2.0/mlflow), over any store, with tokens. Run it with `mlops-jupyter server`."""

from .app import make_app

__all__ = ["make_app"]
