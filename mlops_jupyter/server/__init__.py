"""jupyter_server extension: the REST API (`/mlops/api/v1/...`) behind the JupyterLab
sidebar, plus the hooks Jupyter uses to find the server and lab extensions."""

from __future__ import annotations

from typing import Any

LABEXTENSION_NAME = "mlops-jupyter-labextension"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "mlops_jupyter.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    # the prebuilt lab extension is written to mlops_jupyter/labextension by the build
    return [{"src": "../labextension", "dest": LABEXTENSION_NAME}]


def _load_jupyter_server_extension(serverapp) -> None:
    """Register the REST handlers on a running jupyter server."""
    from .handlers import setup_handlers

    setup_handlers(serverapp)
    serverapp.log.info("mlops-jupyter: REST API at %smlops/api/v1/", serverapp.base_url)


# older jupyter_server / notebook spelling
load_jupyter_server_extension = _load_jupyter_server_extension
