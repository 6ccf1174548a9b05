"""Serving registry models over HTTP: `mlops-jupyter serve NAME[@stage|@alias|:version]` or
`mj.serve(...)` from a notebook (see docs/serving.md).

    srv = mj.serve("classifier@production", workers=2)
    srv.predict(x)
    srv.stop()
"""

from __future__ import annotations

from typing import Any

__all__ = ["serve", "infer_signature", "Server"]


def __getattr__(name: str) -> Any:
    # lazy: importing the package (e.g. for abtest) never pulls in starlette/uvicorn
    if name in ("serve", "Server"):
        from . import client

        return getattr(client, name)
    if name == "infer_signature":
        from .signature import infer_signature

        return infer_signature
    raise AttributeError(f"module 'mlops_jupyter.serving' has no attribute {name!r}")
