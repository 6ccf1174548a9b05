"""Shared by the serving tests: wait until the workers' background loggers have written
the prediction rows a test expects."""

from __future__ import annotations

import time
from collections.abc import Callable

from mlops_jupyter.store import open_store
from mlops_jupyter.store import serving as sstore


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
