"""A registry model ready to serve: how to call it on a batch of `{field: ndarray}` and
turn what it returns into numpy arrays.

- torch modules: the fields (in signature order) as tensors, positional, under
  `torch.inference_mode()`; without a signature the input takes the dtype of the
  module's first parameter;
- MLX modules: the same with `mx.array`;
- objects with `.predict` (sklearn style): `predict(X)` with X the one field, or the
  columns as a 2-D array (a pandas DataFrame when the estimator was fitted on one);
- other callables: `fn(*fields)`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import InvalidInputError

SPEC = re.compile(r"^(?P<name>[^@:]+)(?:@(?P<tag>[^@:]+)|:(?P<version>\d+))?$")


def parse_spec(spec: str) -> dict[str, Any]:
    """'NAME', 'NAME@stage', 'NAME@alias' or 'NAME:version' -> model_version kwargs."""
    from ..registry import STAGES

    m = SPEC.match(spec.strip()) if isinstance(spec, str) else None
    if m is None:
        raise InvalidInputError(
            f"model must be NAME, NAME@stage, NAME@alias or NAME:version, got {spec!r}"
        )
    out: dict[str, Any] = {"name": m["name"]}
    if m["version"]:
        out["version"] = int(m["version"])
    elif m["tag"]:
        out["stage" if m["tag"] in STAGES else "alias"] = m["tag"]
    return out


class Predictor:
    """A loaded model: `predict({field: ndarray}) -> ndarray | dict | tuple` (numpy)."""

    def __init__(self, obj: Any, info: dict[str, Any]) -> None:
        self.obj = obj
        self.info = info
        self.signature = info.get("meta", {}).get("signature")
        self.default_dtype: str | None = None
        self.kind = self._kind(obj)
        if self.kind == "torch":
            import torch

            p = next(iter(obj.parameters()), None)
            self._torch = torch
            if p is not None and self.signature is None:
                self.default_dtype = str(p.dtype).removeprefix("torch.")
        elif self.kind == "mlx":
            import mlx.core as mx

            self._mx = mx
        self._frame_cols = None
        if self.kind == "predict" and hasattr(obj, "feature_names_in_"):
            self._frame_cols = [str(c) for c in obj.feature_names_in_]

    @staticmethod
    def _kind(obj: Any) -> str:
        from ..registry.flavors import _is_mlx_module, _is_torch_module

        if _is_torch_module(obj):
            return "torch"
        if _is_mlx_module(obj):
            return "mlx"
        if callable(getattr(obj, "predict", None)):
            return "predict"
        if callable(obj):
            return "callable"
        raise InvalidInputError(
            f"a {type(obj).__name__} cannot be served: register a torch/MLX module, an "
            "object with .predict, or a callable"
        )

    def _arrays(self, fields: dict[str, np.ndarray]) -> list[np.ndarray]:
        sig = self.signature
        if sig is not None and sig["kind"] == "columns":
            cols = [fields[c["name"]] for c in sig["columns"]]
            return [np.column_stack(cols)]
        return list(fields.values())

    def __call__(self, fields: dict[str, np.ndarray]) -> Any:
        if self.kind == "torch":
            torch = self._torch
            xs = [torch.from_numpy(np.ascontiguousarray(a)) for a in self._arrays(fields)]
            with torch.inference_mode():
                out = self.obj(*xs)
            return to_numpy(out)
        if self.kind == "mlx":
            mx = self._mx
            out = self.obj(*[mx.array(a) for a in self._arrays(fields)])
            return to_numpy(out)
        if self.kind == "predict":
            if self._frame_cols is not None and set(self._frame_cols) <= set(fields):
                import pandas as pd

                x = pd.DataFrame({c: fields[c] for c in self._frame_cols})
            else:
                (x,) = self._arrays(fields) if len(fields) > 1 else list(fields.values())
            return to_numpy(self.obj.predict(x))
        return to_numpy(self.obj(*self._arrays(fields)))


def to_numpy(out: Any) -> Any:
    """torch/MLX/lists -> numpy, keeping dicts and tuples of outputs."""
    if isinstance(out, dict):
        return {str(k): to_numpy(v) for k, v in out.items()}
    if isinstance(out, tuple):
        return tuple(to_numpy(v) for v in out)
    if hasattr(out, "detach"):
        return out.detach().cpu().numpy()
    return np.asarray(out)


def load(spec: str, *, trusted: bool = False, version: int | None = None) -> Predictor:
    """Load the model `spec` names (or that exact `version` of it) from the registry."""
    from .. import registry

    kw = parse_spec(spec)
    if version is not None:
        kw = {"name": kw["name"], "version": version}
    info = registry.model_version(**kw)
    if info["flavor"] == "files":
        raise InvalidInputError(
            f"{info['name']} v{info['version']} was registered as files; register the model "
            "object (torch/MLX module, estimator or callable) to serve it"
        )
    obj = registry.load_model(info["name"], version=info["version"], trusted=trusted)
    if hasattr(obj, "eval") and Predictor._kind(obj) in ("torch", "mlx"):
        obj.eval()
    return Predictor(obj, info)
