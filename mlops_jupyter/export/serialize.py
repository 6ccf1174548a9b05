"""Saving stage outputs between stages: parquet for polars/pandas frames, .npy for numpy
arrays, torch.save / mlx's own format for their objects, pickle as the last resort.

torch, mlx, pandas and pyarrow are never imported here unless the object is one of theirs."""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

from ..errors import MlopsJupyterError


class SerializeError(MlopsJupyterError):
    """A stage output cannot be written or read back."""


def _root_module(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def _is_torch(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return isinstance(obj, (torch.Tensor, torch.nn.Module)) or (
        isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _is_mlx(obj: Any) -> bool:
    mx = sys.modules.get("mlx.core")
    return mx is not None and isinstance(obj, mx.array)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: the version of a stage output."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def save(obj: Any, folder: Path, name: str) -> dict[str, str]:
    """Write `obj` into `folder`; return its manifest entry {file, format, version}."""
    mod = _root_module(obj)
    attempts: list[tuple[str, str]] = []
    if mod == "polars" and type(obj).__name__ == "DataFrame":
        attempts.append(("polars-parquet", ".parquet"))
    elif (
        mod == "pandas"
        and type(obj).__name__ == "DataFrame"
        # parquet would turn other column labels into strings: keep those frames exact
        and all(isinstance(c, str) for c in obj.columns)
    ):
        attempts.append(("pandas-parquet", ".parquet"))
    elif mod == "numpy" and type(obj).__name__ == "ndarray" and obj.dtype != object:
        attempts.append(("npy", ".npy"))
    elif _is_mlx(obj):
        attempts.append(("mlx", ".npy"))
    elif _is_torch(obj):
        attempts.append(("torch", ".pt"))
    attempts.append(("pickle", ".pkl"))
    last: Exception | None = None
    for fmt, ext in attempts:
        path = folder / f"{name}{ext}"
        try:
            _write(fmt, obj, path)
        except Exception as e:  # e.g. a pandas frame with non-string column names
            last = e
            if path.exists():
                path.unlink()
            continue
        return {"file": path.name, "format": fmt, "version": file_digest(path)}
    raise SerializeError(
        f"output `{name}` ({type(obj).__module__}.{type(obj).__qualname__}) cannot be saved: "
        f"{last}. Objects passed between stages must be picklable: define their classes and "
        "functions at the top level of a cell (not inside another function)."
    )


_GROUP_FORMATS = ("pickle-group", "torch-group")


def _native(obj: Any) -> bool:
    """Frames and arrays: written in their own format, one file each."""
    mod, kind = _root_module(obj), type(obj).__name__
    return (
        (mod == "polars" and kind == "DataFrame")
        or (mod == "pandas" and kind == "DataFrame")
        or (mod == "numpy" and kind == "ndarray" and obj.dtype != object)
        or _is_mlx(obj)
    )


def save_all(outputs: dict[str, Any], folder: Path) -> dict[str, dict[str, str]]:
    """Write a stage's outputs; return their manifest entries. Frames and arrays get files
    of their own; the other objects share one file, so objects that share state (a model
    and the optimizer holding its parameters) still share it in the stage that loads them.
    Each object's version is the hash of its own serialisation."""
    entries: dict[str, dict[str, str]] = {}
    shared: dict[str, Any] = {}
    for name, obj in outputs.items():
        if _native(obj):
            try:
                entries[name] = save(obj, folder, name)
                continue
            except SerializeError:
                pass
        shared[name] = obj
    if len(shared) == 1:
        name, obj = next(iter(shared.items()))
        entries[name] = save(obj, folder, name)
    elif shared:
        use_torch = any(_is_torch(o) or _root_module(o) == "torch" for o in shared.values())
        fmt = "torch-group" if use_torch else "pickle-group"
        path = folder / ("objects.pt" if use_torch else "objects.pkl")
        for name, obj in shared.items():  # per object: its version, and a clear error
            try:
                data = _dumps(obj, fmt)
            except Exception as e:
                raise SerializeError(
                    f"output `{name}` ({type(obj).__module__}.{type(obj).__qualname__}) cannot "
                    f"be saved: {e}. Objects passed between stages must be picklable: define "
                    "their classes and functions at the top level of a cell (not inside "
                    "another function)."
                ) from None
            entries[name] = {
                "file": path.name,
                "format": fmt,
                "key": name,
                "version": hashlib.sha256(data).hexdigest(),
            }
        path.write_bytes(_dumps(shared, fmt))
    return {n: entries[n] for n in outputs}


def _dumps(obj: Any, fmt: str) -> bytes:
    if fmt == "torch-group":
        import io

        import torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def load_all(items: dict[str, tuple[Path, dict[str, str]]]) -> dict[str, Any]:
    """Read inputs back by name; objects of one shared file are read together, once, so
    the state they shared is shared again."""
    groups: dict[Path, dict[str, Any]] = {}
    out: dict[str, Any] = {}
    for name, (folder, entry) in items.items():
        if entry.get("format") in _GROUP_FORMATS:
            path = folder / entry["file"]
            if path not in groups:
                groups[path] = _read_group(path, entry["format"])
            out[name] = groups[path][entry["key"]]
        else:
            out[name] = load(folder, entry)
    return out


def _read_group(path: Path, fmt: str) -> dict[str, Any]:
    if not path.is_file():
        raise SerializeError(f"cached output {path} is missing")
    if fmt == "torch-group":
        import torch

        where = None if torch.cuda.is_available() else "cpu"
        return torch.load(path, weights_only=False, map_location=where)
    with open(path, "rb") as f:
        return pickle.load(f)


def _write(fmt: str, obj: Any, path: Path) -> None:
    if fmt == "polars-parquet":
        obj.write_parquet(path)
    elif fmt == "pandas-parquet":
        obj.to_parquet(path)
    elif fmt == "npy":
        import numpy as np

        np.save(path, obj, allow_pickle=False)
    elif fmt == "mlx":
        import mlx.core as mx

        mx.save(str(path), obj)
    elif fmt == "torch":
        import torch

        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def load(folder: Path, entry: dict[str, str]) -> Any:
    """Read back an output written by `save`."""
    path = folder / entry["file"]
    fmt = entry["format"]
    if fmt in _GROUP_FORMATS:
        return _read_group(path, fmt)[entry["key"]]
    if not path.is_file():
        raise SerializeError(f"cached output {path} is missing")
    if fmt == "polars-parquet":
        import polars as pl

        return pl.read_parquet(path)
    if fmt == "pandas-parquet":
        import pandas as pd

        return pd.read_parquet(path)
    if fmt == "npy":
        import numpy as np

        return np.load(path, allow_pickle=False)
    if fmt == "mlx":
        import mlx.core as mx

        return mx.load(str(path))
    if fmt == "torch":
        import torch

        # the cache is written by this pipeline itself, so full unpickling is trusted here;
        # CUDA tensors read on a machine without CUDA (another worker) land on the CPU
        where = None if torch.cuda.is_available() else "cpu"
        return torch.load(path, weights_only=False, map_location=where)
    with open(path, "rb") as f:
        return pickle.load(f)


def atomic_dir(final: Path) -> Path:
    """A fresh temporary folder next to `final`, to be renamed onto it when complete."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    """Move a completed temporary folder into place (a concurrent writer may have won)."""
    import shutil

    try:
        os.replace(tmp, final)
    except OSError:
        if final.exists():  # same key written by another process: identical content
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            warnings.warn(f"could not store cache folder {final}", RuntimeWarning, stacklevel=2)
            shutil.rmtree(tmp, ignore_errors=True)
