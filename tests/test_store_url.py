"""Store locations with a URL scheme are parsed as URLs, never taken as folder names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlops_jupyter as mj
from mlops_jupyter.config import redact_url, store_path_from
from mlops_jupyter.errors import StoreError
from mlops_jupyter.tracking.api import current_store


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ana:s3cret@db.example:5432/mlops",
        "postgres://ana:s3cret@db/mlops",
        "gopher://ana:s3cret@host/x",
    ],
)
def test_url_stores_are_refused_without_creating_a_folder(tmp_path, monkeypatch, url):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", url)
    with pytest.raises(StoreError) as e:
        mj.runs()
    assert "s3cret" not in str(e.value)
    assert "***" in str(e.value)
    monkeypatch.delenv("MLOPS_JUPYTER_STORE")
    before = mj.set_store(None)
    with pytest.raises(StoreError):
        mj.set_store(url)
    assert current_store() is before, "a refused location keeps the store in use"
    assert [p.name for p in work.iterdir()] == [".mlops"], "nothing made for the URL"


def test_an_unreachable_tracking_server_is_a_clear_error_without_its_password(
    tmp_path, monkeypatch
):
    """An https:// store is a tracking server's client (docs/server.md): set_store accepts
    it without a connection; reads and writes then fail with a StoreError that hides the
    password, and nothing is made in the working folder."""
    url = "https://ana:s3cret@tracking.invalid:5000"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", url)
    monkeypatch.delenv("MLOPS_JUPYTER_TOKEN", raising=False)
    with pytest.raises(StoreError) as e:
        mj.runs()
    assert "s3cret" not in str(e.value) and "***" in str(e.value)
    with pytest.raises(StoreError, match="MLOPS_JUPYTER_TOKEN") as e:
        mj.start_run("x")
    assert "s3cret" not in str(e.value)
    assert list(work.iterdir()) == [], "nothing made for the URL"
    monkeypatch.delenv("MLOPS_JUPYTER_STORE")
    mj.set_store(None)


def test_cli_store_url_is_refused(tmp_path):
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    url = "postgresql://ana:s3cret@127.0.0.1:1/mlops"
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_JUPYTER_STORE"}
    for args in (["runs"], ["show", "x"]):
        out = subprocess.run(
            [sys.executable, "-m", "mlops_jupyter", "--store", url, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode != 0
        assert "postgresql" in out.stderr and "s3cret" not in out.stderr + out.stdout
    assert list(tmp_path.iterdir()) == []


def test_file_and_sqlite_urls_name_a_sqlite_file(tmp_path):
    db = tmp_path / "team" / "store.db"
    db.parent.mkdir()
    for url in (f"file://{db}", f"sqlite://{db}"):
        assert store_path_from(url) == db
        mj.set_store(url)
        try:
            with mj.start_run("via-url"):
                mj.log_metric("x", 1.0)
            assert "via-url" in mj.runs()["name"].to_list()
        finally:
            mj.set_store(None)
    assert db.is_file()


def test_plain_paths_are_unchanged(tmp_path):
    assert store_path_from(str(tmp_path / "a.db")) == tmp_path / "a.db"
    assert store_path_from(Path("rel/x.db")) == Path("rel/x.db")
    assert store_path_from("~/x.db") == Path("~/x.db").expanduser()


def test_redact_url():
    assert redact_url("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
