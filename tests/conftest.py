"""Shared fixtures: every test gets its own store file (a real SQLite file in tmp_path)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """Point the default store at a fresh file and leave no run active afterwards."""
    import mlops_jupyter as mj
    from mlops_jupyter.tracking import api

    store = tmp_path / "mlops-store" / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    # Telemetry samples would add sys/* metrics to every run; tests of telemetry opt in
    # with monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "1").
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    mj.set_store(None)
    yield store
    while api.active_run() is not None:
        api.active_run().end("killed")
    mj.set_store(None)


@pytest.fixture
def store_path(_isolated_store) -> Path:
    """Path of this test's store file."""
    return _isolated_store


@pytest.fixture
def child_env(store_path) -> dict[str, str]:
    """Environment for a subprocess that should write to this test's store."""
    env = dict(os.environ)
    env["MLOPS_JUPYTER_STORE"] = str(store_path)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (for subprocesses)."""
    return sys.executable
