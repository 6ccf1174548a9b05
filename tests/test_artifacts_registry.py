"""Registered models, checkpoints and `store copy` through the artifact-store contract, on a
shared local folder and on a real S3 server (SeaweedFS on 127.0.0.1): what goes in comes
back bit for bit, nothing is written under the store's own folder, and stored bytes that
changed are refused."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import mlops_jupyter as mj
from mlops_jupyter import registry as reg
from mlops_jupyter.artifacts import blob_key, open_artifacts
from mlops_jupyter.cli import main
from mlops_jupyter.errors import StoreError
from mlops_jupyter.registry.checkpoints import checkpoint_dir, checkpoints
from mlops_jupyter.store.copy import copy_runs
from mlops_jupyter.store.db import open_store
from mlops_jupyter.tracking.api import current_store

KEY = re.compile(r"^models/[A-Za-z0-9._-]+/[0-9a-f]{16}-[0-9a-f]{6}$")


@pytest.fixture(params=["folder", "s3"])
def where(request, tmp_path, monkeypatch) -> str:
    """MLOPS_JUPYTER_ARTIFACTS for this test: a shared folder, or a prefix on the S3 server."""
    if request.param == "s3":
        loc = request.getfixturevalue("s3_url")
    else:
        loc = str(tmp_path / "shared-artifacts")
        monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(tmp_path / "mlops-cache"))
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", loc)
    mj.set_store(None)
    return loc


def _own_folder_untouched(what: str) -> None:
    """Nothing of `what` ("models", "checkpoints") under the store's own folder, unless
    that folder is the artifact store itself (PostgreSQL with a shared folder)."""
    st = current_store()
    if st.artifacts.local_path("x") != st.root / "x":
        assert not (st.root / what).exists()


def _stored(prefix: str) -> dict[str, int]:
    return {i.key[len(prefix) + 1 :]: i.size for i in current_store().artifacts.list(prefix)}


def test_file_and_folder_models_round_trip(where, tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(np.random.default_rng(0).bytes(300_000))
    d = tmp_path / "bundle"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("alpha")
    (d / "sub" / "b.bin").write_bytes(b"\0\1\2" * 1000)
    with mj.start_run("fit"):
        v1 = mj.register_model("clf", f, alias="candidate")
        v2 = mj.register_model("clf", d)
    one, two = reg.model_version("clf", version=v1), reg.model_version("clf", version=v2)
    assert KEY.match(one["path"]) and KEY.match(two["path"])
    assert _stored(one["path"]) == {"files/weights.bin": 300_000}
    assert _stored(two["path"]) == {"files/bundle/a.txt": 5, "files/bundle/sub/b.bin": 3000}
    assert mj.load_model("clf", alias="candidate").read_bytes() == f.read_bytes()
    back = mj.load_model("clf", version=v2)
    assert (back / "a.txt").read_text() == "alpha"
    assert (back / "sub" / "b.bin").read_bytes() == b"\0\1\2" * 1000
    assert sorted(p.name for p in back.iterdir()) == ["a.txt", "sub"]
    assert reg.model_path("clf", version=v2) / "files" / "bundle" == back
    _own_folder_untouched("models")
    if where.startswith("s3://"):
        assert not str(back).startswith(where)  # a cached local copy
    # loading again is a cache hit: the same local copy
    assert mj.load_model("clf", version=v2) == back


def test_torch_model_round_trip_and_changed_bytes_are_refused(where, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    net.eval()
    v = mj.register_model("net", net)
    loaded = mj.load_model("net", version=v)
    x = torch.randn(4, 8)
    assert torch.equal(loaded(x), net(x)) and not loaded.training
    info = reg.model_version("net", version=v)
    assert set(_stored(info["path"])) >= {"weights.pt"}
    artifacts = current_store().artifacts

    if where.startswith("s3://"):
        # damage to the local cached copy only: downloaded again, and it loads
        (reg.model_path("net", version=v) / "weights.pt").write_bytes(b"garbage")
        assert torch.equal(mj.load_model("net", version=v)(x), net(x))

    # the stored object itself changed (on the server / in the folder): refused
    other = tmp_path / "other.pt"
    torch.save({k: v * 0 for k, v in net.state_dict().items()}, other)
    artifacts.put_file(f"{info['path']}/weights.pt", other)
    with pytest.raises(reg.ModelLoadError, match="changed since registration"):
        mj.load_model("net", version=v)
    assert not torch.equal(mj.load_model("net", version=v, verify=False)(x), net(x))

    # the stored files gone: a clear error naming the place, never a half-loaded model
    artifacts.delete_tree(info["path"])
    with pytest.raises(reg.ModelLoadError, match="stored files are missing"):
        mj.load_model("net", version=v)


def test_a_failed_upload_leaves_no_version(where, tmp_path, monkeypatch):
    f = tmp_path / "m.bin"
    f.write_bytes(b"model bytes")
    artifacts = current_store().artifacts

    def broken(*a, **k):
        raise OSError("disk full")

    # files are stored before the row is written: a failure leaves no version behind
    with monkeypatch.context() as m:
        if where.startswith("s3://"):
            m.setattr(type(artifacts), "put_tree", broken)
        else:
            m.setattr("mlops_jupyter.registry.os.replace", broken)
        with pytest.raises(OSError, match="disk full"):
            mj.register_model("m", f)
    assert mj.models().is_empty()
    assert not _stored("models")  # and no half-written folder either


def _train(torch, model, opt, epochs, start=0, **kw):
    losses = []
    for epoch in range(start, epochs):
        x = torch.randn(32, 4)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        mj.checkpoint(model=model, optimizer=opt, epoch=epoch, metrics={"val": float(epoch)}, **kw)
    return losses


def test_checkpoints_save_rotate_and_resume_elsewhere(where, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    with mj.start_run("job", experiment="ck"):
        assert not mj.resume(model=model, optimizer=opt)
        _train(torch, model, opt, 5, best="val", mode="max", keep_last=2)
        local = checkpoint_dir()
        listing = checkpoints()
    prefix = "checkpoints/ck/job"
    stored = _stored(prefix)
    # the last two and the best (the newest here) are kept, everywhere
    assert sorted(stored) == ["ckpt-000004-e3.pt", "ckpt-000005-e4.pt", "manifest.json"]
    assert sorted(p.name for p in local.glob("ckpt-*")) == sorted(stored)[:2]
    _own_folder_untouched("checkpoints")
    assert listing["epoch"].to_list() == [3, 4] and listing["is_latest"].to_list() == [False, True]

    # another machine: no local working copy at all
    if where.startswith("s3://"):
        shutil.rmtree(local)
    torch.manual_seed(99)
    fresh = torch.nn.Linear(4, 1)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    with mj.start_run("job", experiment="ck"):
        state = mj.resume(model=fresh, optimizer=fresh_opt)
        assert state and state.epoch == 4 and state.next_epoch == 5
        assert state.path.parent == local and state.path.name == "ckpt-000005-e4.pt"
        assert torch.equal(fresh.weight, model.weight)
        assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
        # a resumed run goes on with the numbering of the stored series
        _train(torch, fresh, fresh_opt, 6, start=5, best="val", mode="max", keep_last=2)
        assert sorted(_stored(prefix)) == [
            "ckpt-000005-e4.pt",
            "ckpt-000006-e5.pt",
            "manifest.json",
        ]
        earlier = mj.resume(which=4)
        assert earlier.epoch == 4 and earlier.model_state is not None

        # a checkpoint file lost from the store: resume falls back to the one before it
        current_store().artifacts.delete(f"{prefix}/ckpt-000006-e5.pt")
        if where.startswith("s3://"):
            shutil.rmtree(local)
        else:
            assert not (local / "ckpt-000006-e5.pt").exists()
        with pytest.warns(RuntimeWarning, match="skipped unreadable"):
            assert mj.resume().epoch == 4


def test_checkpoint_dir_argument_stays_a_plain_folder(where, tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 1)
    d = tmp_path / "mine"
    mj.checkpoint(model=model, epoch=0, dir=d)
    assert sorted(p.name for p in d.iterdir()) == ["ckpt-000001-e0.pt", "manifest.json"]
    assert not _stored("checkpoints")
    assert mj.resume(model=model, dir=d).epoch == 0


def _populate(tmp_path: Path, tag: str) -> tuple[str, bytes]:
    f = tmp_path / f"w-{tag}.bin"
    f.write_bytes(np.random.default_rng(len(tag)).bytes(50_000) + tag.encode())
    with mj.start_run(f"run-{tag}", experiment="e") as r:
        mj.log(step=0, loss=1.0)
        mj.log_artifact(f, name="weights.bin")
        mj.register_model("clf", f, alias="candidate")
    return r.id, f.read_bytes()


def _artifact(uid: str) -> bytes:
    (a,) = mj.get_run(uid)["artifacts"]
    return current_store().artifacts.blob_file(a["digest"]).read_bytes()


def test_store_copy_from_an_own_folder_into_a_store_with_shared_artifacts(
    where, tmp_path, store_path, monkeypatch, capsys
):
    # A: a SQLite store keeping its files in its own folder (no MLOPS_JUPYTER_ARTIFACTS)
    a = tmp_path / "a" / "store.db"
    monkeypatch.delenv("MLOPS_JUPYTER_ARTIFACTS")
    mj.set_store(a)
    uid, content = _populate(tmp_path, "a")
    mj.set_store(None)
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", where)

    # into this test's store (SQLite, or PostgreSQL) whose files are at `where`
    n = copy_runs(open_store(a), open_store(store_path), progress=False, src_artifacts=a.parent)
    assert (n["runs"], n["artifacts"]) == (1, 1)
    assert n["bytes"] == 2 * len(content)  # the blob and the model's one file
    mj.set_store(store_path)
    assert _artifact(uid) == content
    assert mj.load_model("clf", alias="candidate").read_bytes() == content
    path = reg.model_version("clf", alias="candidate")["path"]
    assert _stored(path) == {"files/w-a.bin": len(content)}
    # again: nothing more, not a byte
    again = copy_runs(open_store(a), open_store(store_path), progress=False, src_artifacts=a.parent)
    assert (again["runs"], again["skipped"], again["bytes"]) == (0, 1, 0)

    # and back out through the command line into a new SQLite store with its own folder
    c = tmp_path / "c" / "store.db"
    code = main(
        [
            "store",
            "copy",
            str(store_path),
            str(c),
            "--no-progress",
            "--dst-artifacts",
            str(c.parent),
        ]
    )
    assert code == 0
    assert "copied 1 run (0 already there)" in capsys.readouterr().out
    monkeypatch.delenv("MLOPS_JUPYTER_ARTIFACTS")
    mj.set_store(c)
    assert _artifact(uid) == content
    assert mj.load_model("clf", alias="candidate").read_bytes() == content
    assert (c.parent / path / "files" / "w-a.bin").read_bytes() == content


def test_store_copy_refuses_changed_bytes_and_stores_nothing(where, tmp_path, monkeypatch):
    # the source's files at `where`; one blob's bytes changed there, same size
    mj.set_store(tmp_path / "src" / "store.db")
    uid, content = _populate(tmp_path, "s")
    digest = mj.get_run(uid)["artifacts"][0]["digest"]
    src_files = open_artifacts(where)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(len(content)))
    src_files.put_file(blob_key(digest), bad)
    dst = tmp_path / "dst" / "store.db"
    with pytest.raises(StoreError, match="does not match its digest"):
        copy_runs(
            open_store(tmp_path / "src" / "store.db"),
            open_store(dst),
            progress=False,
            dst_artifacts=dst.parent,
        )
    assert not (dst.parent / "artifacts").exists() or not any(
        p.is_file() for p in (dst.parent / "artifacts").rglob("*")
    )
    monkeypatch.delenv("MLOPS_JUPYTER_ARTIFACTS")
    mj.set_store(dst)
    assert mj.runs().is_empty()


def test_model_files_missing_from_the_source_are_reported(where, tmp_path):
    mj.set_store(tmp_path / "src" / "store.db")
    _populate(tmp_path, "m")
    path = reg.model_version("clf")["path"]
    open_artifacts(where).delete_tree(path)
    dst = tmp_path / "dst" / "store.db"
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        n = copy_runs(
            open_store(tmp_path / "src" / "store.db"),
            open_store(dst),
            progress=False,
            dst_artifacts=dst.parent,
        )
    assert n["runs"] == 1
    assert any("model files" in str(w.message) and "missing" in str(w.message) for w in got)


def test_store_copy_completes_a_model_folder_a_stopped_copy_left_partial(
    where, tmp_path, monkeypatch
):
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "a.bin").write_bytes(b"a" * 5000)
    (d / "b.bin").write_bytes(b"b" * 7000)
    src = tmp_path / "src" / "store.db"
    mj.set_store(src)
    with mj.start_run("fit"):
        mj.register_model("bundle", d)
    path = reg.model_version("bundle")["path"]
    # a copy stopped after the first of the folder's files (its run row never written)
    dst = tmp_path / "dst" / "store.db"
    dst_files = open_artifacts(dst.parent)
    dst_files.put_file(f"{path}/files/bundle/a.bin", d / "a.bin")
    n = copy_runs(open_store(src), open_store(dst), progress=False, dst_artifacts=dst.parent)
    assert n["runs"] == 1 and n["bytes"] == 7000  # only what was missing
    files = {i.key[len(path) + 1 :]: i.size for i in dst_files.list(path)}
    assert files == {"files/bundle/a.bin": 5000, "files/bundle/b.bin": 7000}
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(dst.parent))
    mj.set_store(dst)
    back = mj.load_model("bundle")  # verified against the recorded digest
    assert (back / "b.bin").read_bytes() == b"b" * 7000
