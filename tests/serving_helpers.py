"""Shared by the serving tests: a module's store (SQLite, or a PostgreSQL database in the
PostgreSQL pass) with its artifact folder, and waiting until the workers' background loggers
have written the prediction rows a test expects."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

import mlops_jupyter as mj
from mlops_jupyter.store import open_store
from mlops_jupyter.store import serving as sstore

# the small torch model several serving tests register (4 inputs, 2 outputs) and a batch
SIG = {"x": {"shape": [4], "dtype": "float32"}}
X = np.arange(8, dtype=np.float32).reshape(2, 4) / 10


def linear(seed: int):
    """A torch Linear(4, 2) in eval mode, its weights drawn from `seed`."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Linear(4, 2).eval()


def wait_logged(
    store_path, model: str, keep: Callable[[dict], bool], n: int, timeout: float = 15
) -> list[dict]:
    """The logged predictions of `model` that `keep` selects, once there are `n` of them
    (or whatever is there after `timeout` s)."""
    store = open_store(store_path)
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in sstore.predictions(store, model) if keep(r)]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


@contextlib.contextmanager
def module_store(root: Path, request, name: str) -> Iterator[tuple[object, dict[str, str]]]:
    """Set up a module's store under `root` (its PostgreSQL database `name` in the
    PostgreSQL pass) and artifact folder; inside the block both are the current ones (the
    artifact folder through MLOPS_JUPYTER_ARTIFACTS), afterwards both are put back. Yields
    (store, the environment a server needs to find the artifacts)."""
    store: object = root / "store.db"
    art = {"MLOPS_JUPYTER_ARTIFACTS": str(root / "artifacts")}
    if os.environ.get("MLOPS_TEST_BACKEND") == "postgresql":
        store = request.getfixturevalue("pg_server").new_database(name)
    saved = os.environ.get("MLOPS_JUPYTER_ARTIFACTS")
    os.environ.update(art)
    mj.set_store(store)
    try:
        yield store, art
    finally:
        mj.set_store(None)
        if saved is None:
            os.environ.pop("MLOPS_JUPYTER_ARTIFACTS", None)
        else:
            os.environ["MLOPS_JUPYTER_ARTIFACTS"] = saved
