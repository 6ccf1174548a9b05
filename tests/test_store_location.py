"""Where the default store is found: a `.mlops/` folder owned by another user (e.g. a
world-writable one planted in a shared parent folder) is never adopted unless named."""

from __future__ import annotations

import os

import pytest

import mlops_jupyter as mj
from mlops_jupyter.config import find_store_path

OTHER_UID = 54321

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root"
)


def _foreign_store(parent):
    d = parent / ".mlops"
    d.mkdir(parents=True)
    os.chown(d, OTHER_UID, OTHER_UID)
    os.chmod(d, 0o777)
    return d


@needs_root
def test_foreign_store_in_a_parent_folder_is_skipped(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_JUPYTER_STORE")
    foreign = _foreign_store(tmp_path / "shared")
    work = tmp_path / "shared" / "project" / "nb"
    work.mkdir(parents=True)
    with pytest.warns(RuntimeWarning, match=f"owned by uid {OTHER_UID}.*MLOPS_JUPYTER_STORE"):
        assert find_store_path(work) == work / ".mlops" / "store.db"
    # through the API: runs land in the working folder's own new store
    monkeypatch.chdir(work)
    mj.set_store(None)
    with mj.start_run("here"):
        mj.log(loss=1.0)
    assert (work / ".mlops" / "store.db").exists()
    assert list(foreign.iterdir()) == []
    # the nearest own store wins from then on, without warnings
    assert find_store_path(work / "deeper") == work / ".mlops" / "store.db"


@needs_root
def test_foreign_store_is_used_when_named(tmp_path, monkeypatch):
    foreign = _foreign_store(tmp_path / "shared")
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(foreign))
    assert find_store_path(tmp_path / "shared") == foreign / "store.db"
    monkeypatch.delenv("MLOPS_JUPYTER_STORE")
    store = mj.set_store(foreign / "store.db")
    with mj.start_run("named"):
        mj.log(loss=1.0)
    assert store.path == foreign / "store.db" and (foreign / "store.db").exists()


@needs_root
def test_foreign_store_in_the_working_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_JUPYTER_STORE")
    foreign = _foreign_store(tmp_path)
    with pytest.raises(mj.StoreError, match=f"owned by uid {OTHER_UID}.*set_store"):
        find_store_path(tmp_path)
    assert list(foreign.iterdir()) == []


def test_own_store_in_a_parent_folder_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_JUPYTER_STORE")
    (tmp_path / ".mlops").mkdir()
    os.chmod(tmp_path / ".mlops", 0o777)  # own folder: still ours, whatever its mode
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert find_store_path(tmp_path / "a" / "b") == tmp_path / ".mlops" / "store.db"
