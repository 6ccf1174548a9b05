"""Global random state passed from one stage to the next, as in the notebook's process.

A stage that draws from `random`, numpy's legacy global generator, torch (CPU and CUDA)
or MLX depends on every draw made before it. The runner saves these states after each
stage next to its outputs and restores them before the next stage, so a stage draws the
same numbers whether the pipeline runs cold, comes from the cache, or runs one stage
alone (`--force STAGE`, `--stage`, an Airflow task). Generators without a saved state
(before the first stage, or a library first imported later) get a fixed seed: unseeded
draws in a notebook have no value to reproduce, and a fixed start keeps the cache stable.

Libraries are only captured when already imported; restoring imports one only when its
state was saved (the stage that saved it had imported it)."""

from __future__ import annotations

import hashlib
import pickle
import random
import sys
from pathlib import Path
from typing import Any

FILE = "rng_state.pkl"
SEED = 0


def capture() -> dict[str, Any]:
    """The current global generator states, as plain Python values."""
    state: dict[str, Any] = {"random": random.getstate()}
    np = sys.modules.get("numpy")
    if np is not None and hasattr(np, "random"):
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = (name, keys.tolist(), int(pos), int(has_gauss), float(gauss))
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_rng_state"):
        state["torch"] = bytes(torch.get_rng_state().tolist())
        cuda = getattr(torch, "cuda", None)
        # reading CUDA state would initialise CUDA: only when the stages already did
        if cuda is not None and cuda.is_available() and cuda.is_initialized():
            state["torch_cuda"] = [bytes(s.tolist()) for s in cuda.get_rng_state_all()]
    mx = sys.modules.get("mlx.core")
    if mx is not None and hasattr(mx, "random"):
        state["mlx"] = [int(v) for v in mx.random.state[0].tolist()]
    return state


def save(state: dict[str, Any], folder: Path) -> dict[str, str]:
    """Write the state into a stage's cache folder; its manifest entry {file, version}."""
    data = pickle.dumps(state, protocol=4)
    (folder / FILE).write_bytes(data)
    return {"file": FILE, "version": hashlib.sha256(data).hexdigest()}


def load(folder: Path, entry: dict[str, str]) -> dict[str, Any]:
    with open(folder / entry["file"], "rb") as f:
        return pickle.load(f)


def restore(state: dict[str, Any] | None) -> None:
    """Set the global generators to `state` (None: the fixed start of a pipeline run)."""
    state = state or {}
    if "random" in state:
        random.setstate(state["random"])
    else:
        random.seed(SEED)
    np = sys.modules.get("numpy")
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    elif np is not None and hasattr(np, "random"):
        np.random.seed(SEED)
    if "torch" in state:
        import torch

        torch.set_rng_state(torch.tensor(list(state["torch"]), dtype=torch.uint8))
        if "torch_cuda" in state and torch.cuda.is_available():
            cuda = [torch.tensor(list(s), dtype=torch.uint8) for s in state["torch_cuda"]]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
    elif sys.modules.get("torch") is not None and hasattr(sys.modules["torch"], "manual_seed"):
        # torch seeds itself at random on import: a fixed start, as for the others
        sys.modules["torch"].manual_seed(SEED)
    mx = sys.modules.get("mlx.core")
    if "mlx" in state:
        import mlx.core as mx

        hi, lo = state["mlx"]
        mx.random.seed((hi << 32) | lo)  # MLX's key for a seed is [seed >> 32, seed & 0xffffffff]
    elif mx is not None and hasattr(mx, "random"):
        mx.random.seed(SEED)
