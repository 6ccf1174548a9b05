"""Shared fixtures: every test gets its own store: a real SQLite file in tmp_path, or, with
MLOPS_TEST_BACKEND=postgresql, a fresh database on a real PostgreSQL server the session
starts, copied from a database the real migrations made into a store once per session (the
feature suites that touch the store run both ways in CI)."""

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


@pytest.fixture(scope="session")
def pg_store_template(pg_server) -> str:
    """Name of a database on the session's server holding a new, empty store (made by the
    real migrations once): each test's default store is a copy of it. On an idle machine the
    copy costs about what an empty database plus the migrations cost (0.33 s against 0.39 s
    here); on a loaded one the migrations' many round trips take far longer (0.5 s and more).
    `pg_url` stays an empty database for the tests of store creation."""
    from mlops_jupyter.store import open_store
    from mlops_jupyter.store.db import close_all

    pg_server.sql("CREATE DATABASE store_template")
    open_store(pg_server.url("store_template"))
    close_all()  # a template must have no open connections when it is copied
    return "store_template"


# Databases made for the running test: dropped when its store is put away (_isolated_store's
# teardown, after the test's runs are ended and its connections closed).
_TEST_DATABASES: list[tuple[object, str]] = []


@pytest.fixture
def pg_url(request) -> str:
    """URL of a fresh, empty database on the session's PostgreSQL server (dropped after)."""
    server = request.getfixturevalue("pg_server")
    url = server.new_database()
    _TEST_DATABASES.append((server, url))
    return url


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (SeaweedFS on 127.0.0.1) for this test session."""
    from s3server import S3Server

    server = S3Server()
    yield server
    server.close()


# Variables of a developer's own AWS setup that must not leak into a test's client.
_AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture
def s3_url(request, monkeypatch, tmp_path):
    """A fresh `s3://bucket/<unique prefix>` on the session's S3 server, with the AWS_*
    variables pointing at it for this test, retries bounded to a few seconds and the
    read-through cache in tmp_path. Use it as
    `monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", s3_url)`."""
    import uuid

    server = request.getfixturevalue("s3_server")
    for var in _AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS_RETRY_S", "3")
    monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(tmp_path / "mlops-cache"))
    yield server.url(f"t-{uuid.uuid4().hex[:12]}")
    from mlops_jupyter.artifacts import forget

    forget()  # the next test's store reads its own environment


@pytest.fixture(scope="session")
def az_server():
    """Azurite (Microsoft's local Azure Storage server) on 127.0.0.1 for this session."""
    from s3server import AzuriteServer

    server = AzuriteServer()
    yield server
    server.close()


@pytest.fixture
def az_url(request, monkeypatch, tmp_path):
    """A fresh `az://container/<unique prefix>` on the session's Azurite, with the AZURE_*
    variables pointing at it for this test (as s3_url does for S3)."""
    import uuid

    server = request.getfixturevalue("az_server")
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS_RETRY_S", "3")
    monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(tmp_path / "mlops-cache"))
    yield server.url(f"t-{uuid.uuid4().hex[:12]}")
    from mlops_jupyter.artifacts import forget

    forget()


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch, request):
    """Point the default store at a fresh file (or database) and leave no run active."""
    import mlops_jupyter as mj
    from mlops_jupyter.tracking import api

    if BACKEND == "postgresql":
        template = request.getfixturevalue("pg_store_template")
        server = request.getfixturevalue("pg_server")
        store = server.new_database(template=template)
        _TEST_DATABASES.append((server, store))
        monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(tmp_path / "mlops-artifacts"))
    else:
        store = tmp_path / "mlops-store" / "store.db"
        # set, then removed: teardown restores the variable's absence even where a test
        # (or the server extension's setdefault) set it without monkeypatch
        monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", "")
        monkeypatch.delenv("MLOPS_JUPYTER_ARTIFACTS")
    # downloads and remembered digests go to this test's folder, not the user's cache
    monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(tmp_path / "mlops-cache"))
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    # Telemetry samples would add sys/* metrics to every run; tests of telemetry opt in
    # with monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "1").
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    mj.set_store(None)
    yield store
    for _ in range(100):  # bounded: a run whose end failed half-way must not hang the suite
        if api.active_run() is None:
            break
        api.active_run().end("killed")
    mj.set_store(None)
    if _TEST_DATABASES:
        from mlops_jupyter.store.db import close_all

        close_all()  # each test has its own database: give the server its connections back
        while _TEST_DATABASES:
            server, url = _TEST_DATABASES.pop()
            server.drop_database(url)


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
