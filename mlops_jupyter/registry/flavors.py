"""How each kind of model is written to and read from a registry folder.

- torch `nn.Module`: `state_dict` in `weights.pt` (loaded with weights_only=True) plus the
  class reference and constructor kwargs, so loading rebuilds the module.
- MLX `nn.Module`: `weights.safetensors` (or `.npz`) plus class reference and kwargs.
- a path: the file or folder is copied; loading returns the stored path.
- any other object: pickled (load only registries you trust, as with any pickle).

torch and mlx are never imported here unless the object comes from them."""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, MlopsJupyterError


class ModelLoadError(MlopsJupyterError):
    """A stored model cannot be rebuilt (class missing, weights not matching, ...)."""


def _is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _is_mlx_module(obj: Any) -> bool:
    nn = sys.modules.get("mlx.nn")
    return nn is not None and isinstance(obj, nn.Module)


def flavor_of(obj: Any) -> str:
    """'torch', 'mlx', 'files' or 'pickle'."""
    if isinstance(obj, (str, os.PathLike)):
        if not Path(obj).exists():
            raise InvalidInputError(f"model path does not exist: {obj}")
        return "files"
    if _is_torch_module(obj):
        return "torch"
    if _is_mlx_module(obj):
        return "mlx"
    return "pickle"


def class_ref(obj: Any) -> str:
    """'module:QualName' of an object's class."""
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(ref: str):
    """Inverse of class_ref; classes defined in a notebook live in `__main__`."""
    mod, _, qual = ref.partition(":")
    try:
        obj = importlib.import_module(mod)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ModelLoadError(
            f"cannot import model class {ref} here ({e}); define or import it first, or pass "
            "`into=` an instance to load the weights into"
        ) from None
    return obj


def _check_kwargs(kwargs: dict | None) -> dict:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidInputError("init_kwargs must be a dict with string keys")
    import json

    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        raise InvalidInputError(
            "init_kwargs must be JSON-serialisable (numbers, strings, lists)"
        ) from None
    return kwargs


def save(
    obj: Any, folder: Path, flavor: str, init_kwargs: dict | None = None, fmt: str = ""
) -> dict:
    """Write `obj` into the empty `folder`; return the metadata needed to load it back."""
    meta: dict[str, Any] = {}
    if flavor == "files":
        src = Path(obj)
        meta["file"] = src.name
        if src.is_dir():
            shutil.copytree(src, folder / "files" / src.name)
            meta["is_dir"] = True
        else:
            (folder / "files").mkdir()
            shutil.copy2(src, folder / "files" / src.name)
            meta["is_dir"] = False
    elif flavor == "torch":
        import torch

        meta.update(
            cls=class_ref(obj),
            init_kwargs=_check_kwargs(init_kwargs),
            training=bool(obj.training),
            torch=torch.__version__,
        )
        sd = {k: v.detach().cpu() for k, v in obj.state_dict().items()}
        torch.save(sd, folder / "weights.pt")
    elif flavor == "mlx":
        import mlx.core as mx

        fmt = fmt or "safetensors"
        if fmt not in ("safetensors", "npz"):
            raise InvalidInputError(
                f"MLX weights format must be 'safetensors' or 'npz', got {fmt!r}"
            )
        meta.update(
            cls=class_ref(obj),
            init_kwargs=_check_kwargs(init_kwargs),
            training=bool(obj.training),
            weights=f"weights.{fmt}",
            mlx=getattr(mx, "__version__", ""),
        )
        obj.save_weights(str(folder / f"weights.{fmt}"))
    elif flavor == "pickle":
        meta["cls"] = class_ref(obj)
        with open(folder / "object.pkl", "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    else:  # pragma: no cover - flavor_of only returns the above
        raise InvalidInputError(f"unknown flavor {flavor!r}")
    return meta


def load(folder: Path, flavor: str, meta: dict, into: Any = None, map_location: str = "cpu") -> Any:
    """Rebuild what `save` wrote. `into`: an existing module to load the weights into."""
    if flavor == "files":
        p = folder / "files" / meta["file"]
        if not p.exists():
            raise ModelLoadError(f"stored model file is missing: {p}")
        return p
    if flavor == "pickle":
        with open(folder / "object.pkl", "rb") as f:
            return pickle.load(f)
    if flavor == "torch":
        import torch

        model = into if into is not None else _construct(meta)
        sd = torch.load(folder / "weights.pt", map_location=map_location, weights_only=True)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ModelLoadError(f"stored weights do not fit {type(model).__name__}: {e}") from None
        model.train(meta.get("training", False))
        return model
    if flavor == "mlx":
        import mlx.core as mx

        model = into if into is not None else _construct(meta)
        try:
            model.load_weights(
                str(folder / meta.get("weights", "weights.safetensors")), strict=True
            )
        except ValueError as e:
            raise ModelLoadError(f"stored weights do not fit {type(model).__name__}: {e}") from None
        mx.eval(model.parameters())
        model.train(meta.get("training", False))
        return model
    raise ModelLoadError(f"unknown model flavor {flavor!r} (written by a newer version?)")


def _construct(meta: dict) -> Any:
    cls = import_class(meta["cls"])
    kwargs = meta.get("init_kwargs") or {}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ModelLoadError(
            f"cannot build {meta['cls']}({', '.join(kwargs)}): {e}. Register the model with "
            "init_kwargs={...}, or pass into=<an instance> to load_model"
        ) from None
