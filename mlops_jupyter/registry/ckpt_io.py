"""File formats of training checkpoints: durable writes, the manifest, where a series lives
(`Series`: a local folder, mirrored to object storage when the store's artifacts are
remote), random-generator state, and the torch (`.pt`) and MLX (`.safetensors`) payloads."""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArtifactNotFoundError, InvalidInputError, MlopsJupyterError

if TYPE_CHECKING:
    from ..artifacts import ArtifactStore

MANIFEST = "manifest.json"
# The only file names the writer produces. Manifest entries are checked against it on read,
# so a tampered entry ("../../x") can never be loaded or deleted.
_FILE = re.compile(r"^ckpt-(\d+)-e(-?\d+|x)\.(pt|safetensors)$")


class CheckpointError(MlopsJupyterError):
    """A checkpoint cannot be written or read back."""


class UntrustedCheckpointError(CheckpointError):
    """Reading the checkpoint would unpickle arbitrary Python objects (which can run code);
    pass `trusted=True` for checkpoints you wrote yourself."""


# -- durable writes -----------------------------------------------------------------------
def fsync_dir(d: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write, suffix: str = "") -> None:
    """write(tmp_path) then fsync + rename over `path`: readers see old or new, never half."""
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def valid_name(name: Any) -> bool:
    """True for a checkpoint file name of the form the writer produces (no folders)."""
    return isinstance(name, str) and _FILE.fullmatch(name) is not None


def read_manifest(d: Path) -> dict[str, Any] | None:
    """The manifest of folder `d`, with entries whose file name the writer cannot have
    produced left out (with a warning); None when missing or unreadable."""
    try:
        m = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or not isinstance(m.get("entries"), list):
        return None
    ok, bad = [], []
    for e in m["entries"]:
        if isinstance(e, dict) and valid_name(e.get("file")) and _int(e.get("seq")):
            ok.append(e)
        else:
            bad.append(e.get("file") if isinstance(e, dict) else e)
    m["entries"] = ok
    for k in ("best", "latest"):
        if m.get(k) is not None and not valid_name(m[k]):
            bad.append(m[k])
            m[k] = None
    if bad:
        warnings.warn(
            f"mlops-jupyter: {d / MANIFEST}: ignored entries naming unexpected files "
            f"{', '.join(repr(b)[:80] for b in bad[:5])} (checkpoint files are named like "
            "ckpt-000001-e0.pt and live in the manifest's own folder)",
            RuntimeWarning,
            3,
        )
    return m


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def scan_files(d: Path) -> list[dict[str, Any]]:
    """Entries rebuilt from file names when the manifest is missing or unreadable."""
    return _entries(p.name for p in d.glob("ckpt-*"))


def _entries(names) -> list[dict[str, Any]]:
    out = []
    for name in names:
        m = _FILE.match(name)
        if m:
            ep = None if m.group(2) == "x" else int(m.group(2))
            out.append({"file": name, "seq": int(m.group(1)), "epoch": ep, "metrics": {}})
    return sorted(out, key=lambda e: e["seq"])


# -- where a series lives -----------------------------------------------------------------
class Series:
    """A checkpoint series: files are written to and read from the local `folder`. With a
    `remote` artifact store (object storage) the folder is a working copy: every saved file
    is uploaded under `prefix/`, the stored manifest is the one that counts, and a file to
    resume from is downloaded when the local copy is missing or differs."""

    def __init__(self, folder: Path, remote: ArtifactStore | None = None, prefix: str = "") -> None:
        self.folder, self.remote, self.prefix = folder, remote, prefix

    def __str__(self) -> str:
        return f"{self.remote.location}/{self.prefix}" if self.remote else str(self.folder)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def manifest(self) -> dict[str, Any] | None:
        """The series' manifest (the stored one, brought into the folder, when remote)."""
        if self.remote is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                self.remote.get_file(self._key(MANIFEST), self.folder / MANIFEST)
            except ArtifactNotFoundError:  # a new series, or one whose manifest was lost
                (self.folder / MANIFEST).unlink(missing_ok=True)
        return read_manifest(self.folder)

    def scan(self) -> list[dict[str, Any]]:
        """Entries rebuilt from the stored file names (no usable manifest)."""
        if self.remote is None:
            return scan_files(self.folder)
        return _entries(i.key.rsplit("/", 1)[-1] for i in self.remote.list(self.prefix))

    def stored(self, name: str) -> None:
        """`name` was written in the folder: upload it (remote series)."""
        if self.remote is None:
            return
        local = self.folder / name
        self.remote.put_file(self._key(name), local)
        if name != MANIFEST and (info := self.remote.head(self._key(name))) is not None:
            # the local copy carries the stored object's time: `fetch` knows it is that one
            os.utime(local, (info.modified, info.modified))

    def remove(self, name: str) -> None:
        """Delete a rotated-out checkpoint (the local copy and the stored one)."""
        (self.folder / name).unlink(missing_ok=True)
        if self.remote is not None:
            self.remote.delete(self._key(name))

    def fetch(self, name: str) -> Path:
        """A local file holding checkpoint `name`, downloaded if needed (remote series)."""
        local = self.folder / name
        if self.remote is None:
            return local
        info = self.remote.head(self._key(name))
        if info is None:
            raise CheckpointError(f"{name} is not stored in {self}")
        try:
            st = local.stat()
            if st.st_size == info.size and st.st_mtime == info.modified:
                return local
        except OSError:
            pass
        self.folder.mkdir(parents=True, exist_ok=True)
        self.remote.get_file(self._key(name), local)
        os.utime(local, (info.modified, info.modified))
        return local


# -- random generators -------------------------------------------------------------------
def rng_state(framework: str) -> dict[str, Any]:
    st = np.random.get_state()
    rng: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4])],
    }
    torch = sys.modules.get("torch")
    if framework == "torch" and torch is not None:
        rng["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
    mx = sys.modules.get("mlx.core")
    if mx is not None:
        rng["mlx"] = [int(x) for x in mx.random.state[0].tolist()]
    return rng


def set_rng_state(rng: dict[str, Any]) -> None:
    if "python" in rng:
        v, internal, gauss = rng["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in rng:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch = sys.modules.get("torch")
    if torch is not None and "torch" in rng:
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    mx = sys.modules.get("mlx.core")
    if mx is not None and "mlx" in rng:
        # mx.random.key(s) is [s >> 32, s & 0xffffffff], so seeding with the key's own words
        # puts the global generator back into exactly the saved state.
        hi, lo = rng["mlx"]
        mx.random.seed((int(hi) << 32) | int(lo))


# -- frameworks ---------------------------------------------------------------------------
def framework_of(*objs: Any) -> str:
    torch = sys.modules.get("torch")
    nn = sys.modules.get("mlx.nn")
    optim = sys.modules.get("mlx.optimizers")
    for o in objs:
        if o is None:
            continue
        if torch is not None and isinstance(o, (torch.nn.Module, torch.optim.Optimizer)):
            return "torch"
        if nn is not None and isinstance(o, nn.Module):
            return "mlx"
        if optim is not None and isinstance(o, optim.Optimizer):
            return "mlx"
    if any(o is not None for o in objs):
        raise InvalidInputError(
            "checkpoint(model=...) supports torch and MLX modules and optimizers; "
            f"got {', '.join(type(o).__name__ for o in objs if o is not None)}"
        )
    return "torch" if "torch" in sys.modules else "mlx" if "mlx.core" in sys.modules else ""


def save_torch(path: Path, model, optimizer, scheduler, meta: dict, rng: dict) -> None:
    import torch

    payload = {
        "format": "mlops-jupyter-checkpoint/1",
        "meta": meta,
        "rng": rng,
        "model": model.state_dict() if model is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_torch(path: Path, map_location, trusted: bool = False) -> dict:
    """Read a `.pt` checkpoint with torch's safe loader (tensors, containers, numbers).

    A file that needs a full unpickle (e.g. `extra=` held objects of your own classes) is
    refused unless `trusted`: unpickling can run any code the file names."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        if "weights_only" not in str(e) and "Unsupported global" not in str(e):
            raise
        if not trusted:
            raise UntrustedCheckpointError(
                f"{path} holds Python objects that only a full unpickle can read, and "
                "unpickling runs whatever code the file names. If you wrote this checkpoint "
                "yourself, load it with trusted=True (e.g. mj.resume(..., trusted=True)). "
                f"Safe loader: {str(e).splitlines()[0][:300]}"
            ) from None
        return torch.load(path, map_location=map_location, weights_only=False)


def save_mlx(path: Path, model, optimizer, meta: dict, rng: dict) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    arrays: dict[str, Any] = {}
    if model is not None:
        arrays.update({f"model.{k}": v for k, v in tree_flatten(model.parameters())})
    opt_scalars: dict[str, Any] = {}
    if optimizer is not None:
        for k, v in tree_flatten(optimizer.state):
            if isinstance(v, mx.array):
                arrays[f"optimizer.{k}"] = v
            else:
                opt_scalars[k] = v
    mx.eval(arrays)
    header = {"meta": meta, "rng": rng, "optimizer_scalars": opt_scalars}
    header["has"] = {"model": model is not None, "optimizer": optimizer is not None}
    text = json.dumps(header, default=str)
    atomic_write(
        path,
        lambda tmp: mx.save_safetensors(str(tmp), arrays, metadata={"mlops": text}),
        suffix=".safetensors",
    )


def load_mlx(path: Path) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    arrays, md = mx.load(str(path), return_metadata=True)
    header = json.loads(md["mlops"])
    model = [(k[6:], v) for k, v in arrays.items() if k.startswith("model.")]
    opt = [(k[10:], v) for k, v in arrays.items() if k.startswith("optimizer.")]
    opt += list(header.get("optimizer_scalars", {}).items())
    return {
        "meta": header["meta"],
        "rng": header["rng"],
        "model": tree_unflatten(model) if header["has"]["model"] else None,
        "optimizer": tree_unflatten(opt) if header["has"]["optimizer"] else None,
        "scheduler": None,
    }
