"""log_artifact: empty paths, special files and the store folder itself are refused or
skipped; regular files and directories are copied as before."""

from __future__ import annotations

import os
import warnings

import pytest

import mlops_jupyter as mj


def _artifacts(run) -> set[str]:
    return {a["name"] for a in mj.get_run(run.id)["artifacts"]}


def test_empty_path_is_refused():
    with mj.start_run() as run:
        with pytest.raises(mj.InvalidInputError, match="empty"):
            mj.log_artifact("")
        with pytest.raises(mj.InvalidInputError, match="name"):
            mj.log_artifact(__file__, name="")
    assert _artifacts(run) == set()


def test_devices_and_fifos_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with mj.start_run() as run:
        with pytest.raises(mj.InvalidInputError, match="character device"):
            mj.log_artifact("/dev/null")
        with pytest.raises(mj.InvalidInputError, match="FIFO"):
            mj.log_artifact(fifo)  # must not block waiting for a writer either
    assert _artifacts(run) == set()


def test_directory_walk_skips_store_folders_special_files_and_symlinked_dirs(tmp_path, monkeypatch):
    work = tmp_path / "work"
    store = work / ".mlops" / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    mj.set_store(None)
    (work / "sub").mkdir(parents=True)
    (work / "a.txt").write_text("a")
    (work / "sub" / "b.txt").write_text("b")
    os.mkfifo(work / "sub" / "pipe")
    (work / "other-project" / ".mlops").mkdir(parents=True)
    (work / "other-project" / ".mlops" / "store.db").write_text("not ours")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "c.txt").write_text("c")
    (work / "link").symlink_to(outside, target_is_directory=True)
    (work / "a-link.txt").symlink_to(work / "a.txt")
    monkeypatch.chdir(work)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mj.start_run() as run:
            assert mj.log_artifact(".", name="proj") == "proj"
    assert _artifacts(run) == {"proj/a.txt", "proj/a-link.txt", "proj/sub/b.txt"}
    assert any("skipped" in str(w.message) for w in caught)
    # the store's own files were not copied into the store
    assert not any("store.db" in n or n.startswith("proj/.mlops") for n in _artifacts(run))


def test_paths_inside_the_store_are_refused(store_path, store_root):
    with mj.start_run() as run:
        if not isinstance(store_path, str):  # the SQLite file itself
            with pytest.raises(mj.InvalidInputError, match="inside the store"):
                mj.log_artifact(store_path)
        with pytest.raises(mj.InvalidInputError, match="inside the store"):
            mj.log_artifact(store_root)
    assert _artifacts(run) == set()


def test_regular_file_and_directory_still_work(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"\x00" * 10)
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.txt").write_text("x")
    with mj.start_run() as run:
        assert mj.log_artifact(f) == "model.bin"
        assert mj.log_artifact(str(d)) == "d"
    assert _artifacts(run) == {"model.bin", "d/x.txt"}
    assert run.artifact_path("model.bin").read_bytes() == b"\x00" * 10
