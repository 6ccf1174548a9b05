"""Shared fixtures: every test gets its own store: a real SQLite file in tmp_path, or, with
MLOPS_TEST_BACKEND=postgresql, a fresh database on a real PostgreSQL server the session
starts (the feature suites that touch the store run both ways in CI)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
BACKEND = os.environ.get("MLOPS_TEST_BACKEND", "sqlite")


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for this test session (stopped at the end)."""
    from pgserver import PgServer

    server = PgServer()
    yield server
    server.close()


@pytest.fixture
def pg_url(request) -> str:
    """URL of a fresh, empty database on the session's PostgreSQL server."""
    return request.getfixturevalue("pg_server").new_database()


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch, request):
    """Point the default store at a fresh file (or database) and leave no run active."""
    import mlops_jupyter as mj
    from mlops_jupyter.tracking import api

    if BACKEND == "postgresql":
        store = request.getfixturevalue("pg_url")
        monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(tmp_path / "mlops-artifacts"))
    else:
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
    if BACKEND == "postgresql":
        from mlops_jupyter.store.db import close_all

        close_all()  # each test has its own database: give the server its connections back


@pytest.fixture
def store_path(_isolated_store) -> Path | str:
    """Path of this test's store file (its URL on PostgreSQL)."""
    return _isolated_store


@pytest.fixture
def store_root(_isolated_store) -> Path:
    """Folder of this test's store files (artifacts, models, checkpoints)."""
    if BACKEND == "postgresql":
        return Path(os.environ["MLOPS_JUPYTER_ARTIFACTS"])
    return _isolated_store.parent


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
