"""How each kind of model is written to and read from a registry folder.

- torch `nn.Module`: `state_dict` in `weights.pt` (loaded with weights_only=True) plus the
  class reference, constructor kwargs and a weight-free pickle of the module structure, so
  loading rebuilds the module (containers like nn.Sequential included).
- MLX `nn.Module`: `weights.safetensors` (or `.npz`) plus the same three.
- a path: the file or folder is copied; loading returns the stored path.
- any other object: pickled.

Loading never runs code named by the stored files unless `trusted=True`: weights are read
with torch's safe loader, module structures and pickled objects with unpicklers that only
accept torch/MLX layer classes and plain data (containers, numbers, numpy arrays). Anything
else raises UntrustedModelError, naming the file and the `trusted=True` fix.

torch and mlx are never imported here unless the object comes from them."""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, MlopsJupyterError

_SAFE_GLOBALS_LOCK = threading.Lock()


class ModelLoadError(MlopsJupyterError):
    """A stored model cannot be rebuilt (class missing, weights not matching, ...)."""


class UntrustedModelError(ModelLoadError):
    """Loading would unpickle objects other than layers and plain data, which can run code;
    pass `trusted=True` for models you registered yourself."""


def _untrusted(path: Path, what: str) -> UntrustedModelError:
    return UntrustedModelError(
        f"{path} needs a full unpickle ({what}), and unpickling runs whatever code the file "
        "names. If you registered this model yourself, load it with "
        "mj.load_model(..., trusted=True)"
        + (", or pass into=<an instance> to load only the weights" if "module" in what else "")
    )


# Globals the restricted unpickler accepts for the "pickle" flavor: containers, numbers,
# dates and numpy arrays/scalars. None of them runs code beyond building the value.
_NP = ("numpy.core", "numpy._core")
_SAFE_GLOBALS = {
    *(("builtins", n) for n in ("complex", "set", "frozenset", "bytearray", "slice", "range")),
    *(("collections", n) for n in ("OrderedDict", "Counter", "deque")),
    *(("datetime", n) for n in ("date", "datetime", "time", "timedelta", "timezone")),
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    *((f"{c}.multiarray", n) for c in _NP for n in ("_reconstruct", "scalar")),
    *((f"{c}.numeric", "_frombuffer") for c in _NP),
}


class _NeedsTrust(Exception):
    pass


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise _NeedsTrust(f"{module}.{name}")


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
        if _torch_skeleton(obj, folder / "module.pt"):
            meta["structure"] = "module.pt"
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
        if _mlx_skeleton(obj, folder / "module.pkl"):
            meta["structure"] = "module.pkl"
    elif flavor == "pickle":
        meta["cls"] = class_ref(obj)
        with open(folder / "object.pkl", "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    else:  # pragma: no cover - flavor_of only returns the above
        raise InvalidInputError(f"unknown flavor {flavor!r}")
    return meta


def load(
    folder: Path,
    flavor: str,
    meta: dict,
    into: Any = None,
    map_location: str = "cpu",
    trusted: bool = False,
) -> Any:
    """Rebuild what `save` wrote. `into`: an existing module to load the weights into.
    `trusted`: allow full unpickling (only for models you registered yourself)."""
    if flavor == "files":
        p = folder / "files" / meta["file"]
        if not p.exists():
            raise ModelLoadError(f"stored model file is missing: {p}")
        return p
    if flavor == "pickle":
        path = folder / "object.pkl"
        with open(path, "rb") as f:
            if trusted:
                return pickle.load(f)
            try:
                return _DataUnpickler(f).load()
            except _NeedsTrust as e:
                raise _untrusted(path, f"it holds a {e} object") from None
    if flavor == "torch":
        import torch

        sd = torch.load(folder / "weights.pt", map_location=map_location, weights_only=True)
        if into is None and not meta.get("init_kwargs") and meta.get("structure"):
            return _torch_from_skeleton(folder / meta["structure"], sd, meta, trusted)
        model = into if into is not None else _construct(meta)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ModelLoadError(f"stored weights do not fit {type(model).__name__}: {e}") from None
        model.train(meta.get("training", False))
        return model
    if flavor == "mlx":
        import mlx.core as mx

        refused = None  # the structure file, when it was not unpickled for lack of trust
        if into is None and not meta.get("init_kwargs") and meta.get("structure"):
            model = _mlx_from_skeleton(folder / meta["structure"], meta, trusted)
            if model is None:
                refused = folder / meta["structure"]
                model = _untrusted_rebuild(refused, meta, lambda m: None)
        else:
            model = into if into is not None else _construct(meta)
        try:
            model.load_weights(
                str(folder / meta.get("weights", "weights.safetensors")), strict=True
            )
        except ValueError as e:
            if refused is not None:
                what = f"a module structure built from {meta['cls']}: {e}"
                raise _untrusted(refused, what) from None
            raise ModelLoadError(f"stored weights do not fit {type(model).__name__}: {e}") from None
        mx.eval(model.parameters())
        model.train(meta.get("training", False))
        return model
    raise ModelLoadError(f"unknown model flavor {flavor!r} (written by a newer version?)")


def _module_base(meta: dict) -> Any:
    if "mlx" in meta:
        return importlib.import_module("mlx.nn").Module
    import torch

    return torch.nn.Module


def _construct(meta: dict) -> Any:
    cls = import_class(meta["cls"])
    base = _module_base(meta)
    # the class name comes from the store: never call anything but a module class
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ModelLoadError(f"stored model class {meta['cls']} is not a {base.__name__} class")
    kwargs = meta.get("init_kwargs") or {}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ModelLoadError(
            f"cannot build {meta['cls']}({', '.join(kwargs)}): {e}. Register the model with "
            "init_kwargs={...}, or pass into=<an instance> to load_model"
        ) from None


# -- module structure without weights --------------------------------------------------------
# Containers such as nn.Sequential cannot be rebuilt from a class name alone, so the module
# object is also pickled with every tensor replaced by a data-free stand-in (a few KB);
# loading unpickles it and fills in the stored weights. Unpicklable modules fall back to
# class + init_kwargs.
def _torch_skeleton(model: Any, path: Path) -> bool:
    import copy

    import torch

    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        e = torch.empty_like(t, device="meta")
        memo[id(t)] = (
            torch.nn.Parameter(e, requires_grad=t.requires_grad)
            if isinstance(t, torch.nn.Parameter)
            else e
        )
    try:
        torch.save(copy.deepcopy(model, memo), path)
        return True
    except Exception:
        path.unlink(missing_ok=True)
        return False


def _torch_layer_classes(path: Path) -> list[type] | None:
    """The classes the skeleton names, when every one is a layer class of torch itself
    (torch.nn...); None when it names anything else (the user's own classes included)."""
    import torch

    names = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if names is None:  # torch < 2.5: cannot inspect without unpickling
        return None
    out = []
    for n in names(path):
        mod, _, qual = n.rpartition(".")
        if not mod.startswith("torch.nn."):
            return None
        cls = getattr(sys.modules.get(mod) or importlib.import_module(mod), qual, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            return None
        out.append(cls)
    return out


def _torch_from_skeleton(path: Path, sd: dict, meta: dict, trusted: bool = False) -> Any:
    import itertools

    import torch

    try:
        if trusted:
            model = torch.load(path, weights_only=False)
        else:
            # torch's allowlist (safe_globals) is process-wide state, and the check of
            # which globals a file needs reads it too: another thread inside its own
            # safe_globals block would hide classes from the check, or unset them mid-load
            with _SAFE_GLOBALS_LOCK:
                layers = _torch_layer_classes(path)
                if layers is not None:
                    with torch.serialization.safe_globals(layers):
                        model = torch.load(path, weights_only=True)
            if layers is None:
                return _untrusted_rebuild(path, meta, lambda m: m.load_state_dict(sd))
    except (ImportError, AttributeError) as e:
        raise ModelLoadError(
            f"cannot rebuild {meta.get('cls')} here ({e}); import its module first, or pass "
            "`into=` an instance to load the weights into"
        ) from None
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise ModelLoadError(f"stored weights do not fit {meta.get('cls')}: {e}") from None
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        # non-persistent buffers are not in a state_dict: rebuild from the class instead
        model = _construct(meta)
        model.load_state_dict(sd, strict=True)
    model.train(meta.get("training", False))
    return model


class _MlxPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        mx = sys.modules["mlx.core"]
        if isinstance(obj, mx.array):
            return ("mlx.array", tuple(obj.shape), str(obj.dtype).rsplit(".", 1)[-1])
        return None


def _untrusted_rebuild(path: Path, meta: dict, fill) -> Any:
    """Without trust, a structure naming the user's own classes is not unpickled: build the
    registered class with no arguments instead and fill in the weights (`fill(model)`)."""
    try:
        model = _construct(meta)
        fill(model)
    except Exception as e:
        raise _untrusted(path, f"a module structure built from {meta.get('cls')}: {e}") from None
    model.train(meta.get("training", False))
    return model


class _MlxUnpickler(pickle.Unpickler):
    trusted = False

    def find_class(self, module: str, name: str) -> Any:
        if not self.trusted:
            nn = importlib.import_module("mlx.nn")
            cls = None
            if module.startswith("mlx.nn."):
                cls = getattr(importlib.import_module(module), name, None)
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise _NeedsTrust(f"{module}.{name}")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        import mlx.core as mx

        _, shape, dtype = pid
        dt = getattr(mx, str(dtype), None)
        if not isinstance(dt, mx.Dtype):  # a name from the file: only ever a dtype
            raise _NeedsTrust(f"mlx array of dtype {dtype!r}")
        return mx.zeros(shape, dtype=dt)  # lazy: never computed


def _mlx_skeleton(model: Any, path: Path) -> bool:
    try:
        with open(path, "wb") as f:
            _MlxPickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(model)
        return True
    except Exception:
        path.unlink(missing_ok=True)
        return False


def _mlx_from_skeleton(path: Path, meta: dict, trusted: bool = False) -> Any:
    """The unpickled module structure; None when it names classes other than MLX layers
    and `trusted` is False (nothing was built from it)."""
    try:
        with open(path, "rb") as f:
            u = _MlxUnpickler(f)
            u.trusted = trusted
            return u.load()
    except _NeedsTrust:
        return None
    except (ImportError, AttributeError) as e:
        raise ModelLoadError(
            f"cannot rebuild {meta.get('cls')} here ({e}); import its module first, or pass "
            "`into=` an instance to load the weights into"
        ) from None
