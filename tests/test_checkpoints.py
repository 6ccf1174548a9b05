"""Checkpoints and resume with real training processes: a process killed with SIGKILL (mid
epoch, mid save, or from outside) and resumed ends with the same weights as one that was
never interrupted (fixed seeds), for torch and MLX."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlops_jupyter as mj

MLX_TRAIN = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import mlx.core as mx, mlx.nn as nn, mlx.optimizers as optim
    import mlops_jupyter as mj

    run_name, epochs, kill_epoch, kill_mode, out = sys.argv[1:6]
    epochs, kill_epoch = int(epochs), int(kill_epoch)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(8, 32)
            self.drop = nn.Dropout(0.2)
            self.l2 = nn.Linear(32, 1)
        def __call__(self, x):
            return self.l2(self.drop(nn.relu(self.l1(x))))

    mx.random.seed(0)
    np.random.seed(0)
    rs = np.random.RandomState(1)
    X = mx.array(rs.randn(256, 8).astype(np.float32))
    y = X @ mx.array(rs.randn(8, 1).astype(np.float32))
    model = Net()
    mx.eval(model.parameters())
    sched = optim.step_decay(1e-2, 0.5, 16)
    opt = optim.Adam(learning_rate=sched)
    loss_and_grad = nn.value_and_grad(model, lambda m, a, b: ((m(a) - b) ** 2).mean())
    with mj.start_run(run_name, experiment="ckpt"):
        state = mj.resume(model=model, optimizer=opt)
        for epoch in range(state.next_epoch, epochs):
            perm = mx.random.permutation(256)
            for i, b in enumerate(range(0, 256, 32)):
                if kill_mode == "self" and epoch == kill_epoch and i == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                idx = perm[b : b + 32]
                loss, grads = loss_and_grad(model, X[idx], y[idx])
                opt.update(model, grads)
                mx.eval(model.parameters(), opt.state)
            mj.checkpoint(model=model, optimizer=opt, epoch=epoch,
                          metrics={"val_loss": loss.item()}, keep_last=2)
    model.save_weights(out)
    """
)


def _train(script: Path, env, run_name: str, epochs: int, kill_epoch: int, mode: str, out: Path):
    return subprocess.run(
        [sys.executable, str(script), run_name, str(epochs), str(kill_epoch), mode, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _torch_equal(a: Path, b: Path) -> None:
    import torch

    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


EPOCHS = 6


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory):
    """Final weights of an uninterrupted run (its own store)."""
    pytest.importorskip("torch")
    from checkpoints_helpers import run_training

    d = tmp_path_factory.mktemp("reference")
    out = d / "ref.pt"
    p = run_training(str(d / "store.db"), "reference", EPOCHS, -1, "none", str(out))
    p.join(120)
    assert p.exitcode == 0
    return out


def _run(store_path, name, kill_epoch, mode, out):
    from checkpoints_helpers import run_training

    p = run_training(str(store_path), name, EPOCHS, kill_epoch, mode, str(out))
    p.join(120)
    return p.exitcode


def _progress(out: Path) -> str:
    return Path(str(out) + ".progress").read_text()


@pytest.mark.parametrize("mode", ["self", "save"])
def test_torch_killed_and_resumed_matches_uninterrupted(
    torch_reference, tmp_path, store_path, store_root, mode
):
    out = tmp_path / "resumed.pt"
    assert _run(store_path, "job", 3, mode, out) == -signal.SIGKILL
    assert not out.exists()
    ckdir = store_root / "checkpoints" / "ckpt" / "job"
    manifest = json.loads((ckdir / "manifest.json").read_text())
    # killed during epoch 3 (or while saving it): the latest complete checkpoint is epoch 2
    assert manifest["entries"][-1]["epoch"] == 2
    if mode == "save":
        # the interrupted write left only a temp file, never a named checkpoint
        assert not list(ckdir.glob("ckpt-*-e3.pt"))
        assert list(ckdir.glob(".*tmp*"))
    assert _run(store_path, "job", -1, "none", out) == 0
    assert "resumed 2" in _progress(out)
    _torch_equal(torch_reference, out)
    # the resumed run is linked to the one that wrote the checkpoint
    runs = mj.runs(experiment="ckpt")
    jobs = runs.filter(runs["name"] == "job")
    assert set(jobs["status"]) == {"crashed", "finished"}
    resumed = mj.get_run(jobs.filter(jobs["status"] == "finished")["id"][0])
    crashed_id = jobs.filter(jobs["status"] == "crashed")["id"][0]
    assert resumed["tags"]["resumed_from.run"] == crashed_id
    assert resumed["tags"]["resumed_from.epoch"] == 2
    assert any(e["kind"] == "resume" for e in resumed["events"])


def test_torch_killed_from_outside(torch_reference, tmp_path, store_path):
    from checkpoints_helpers import run_training

    out = tmp_path / "resumed.pt"
    p = run_training(str(store_path), "ext", EPOCHS, -1, "outside", str(out))
    deadline = time.monotonic() + 120
    # kill it at an arbitrary moment after its second checkpoint
    while "epoch 1" not in (_progress(out) if Path(str(out) + ".progress").exists() else ""):
        assert time.monotonic() < deadline and p.is_alive()
        time.sleep(0.01)
    time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    assert _run(store_path, "ext", -1, "none", out) == 0
    assert "resumed 1" in _progress(out) or "resumed 2" in _progress(out)
    _torch_equal(torch_reference, out)


def test_mlx_killed_and_resumed_matches_uninterrupted(tmp_path, child_env):
    pytest.importorskip("mlx.core")
    script = tmp_path / "train_mlx.py"
    script.write_text(MLX_TRAIN)
    epochs = 5
    ref = _train(script, child_env, "reference", epochs, -1, "none", tmp_path / "ref.safetensors")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "resumed.safetensors"
    first = _train(script, child_env, "job", epochs, 2, "self", out)
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = _train(script, child_env, "job", epochs, -1, "none", out)
    assert second.returncode == 0, second.stderr
    import mlx.core as mx

    a, b = mx.load(str(tmp_path / "ref.safetensors")), mx.load(str(out))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(np.array(a[k]), np.array(b[k])), k


def test_retention_best_and_listing(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = [5.0, 3.0, 1.0, 2.0, 4.0, 6.0]
    with mj.start_run("retain", experiment="ckpt") as run:
        for epoch, loss in enumerate(losses):
            with torch.no_grad():
                model.weight.fill_(float(epoch))
            path = mj.checkpoint(
                model=model, optimizer=opt, epoch=epoch, metrics={"val_loss": loss}, keep_last=2
            )
            assert path.exists()
        files = sorted(p.name for p in path.parent.glob("ckpt-*"))
        # last two (epochs 4, 5) and the best (epoch 2, val_loss 1.0)
        assert [f.split("-e")[1].split(".")[0] for f in files] == ["2", "4", "5"]
        assert not list(path.parent.glob(".*tmp*"))
        df = mlops_checkpoints()
        assert df["epoch"].to_list() == [2, 4, 5]
        assert df.filter(df["is_best"])["epoch"].item() == 2
        assert df.filter(df["is_latest"])["epoch"].item() == 5

        fresh = torch.nn.Linear(3, 1)
        best = mj.resume(model=fresh, which="best")
        assert best.epoch == 2 and best.metrics == {"val_loss": 1.0}
        assert torch.all(fresh.weight == 2.0)
        latest = mj.resume(model=fresh)
        assert latest.epoch == 5 and latest.next_epoch == 6 and torch.all(fresh.weight == 5.0)
        raw = mj.resume(which=4)
        assert torch.all(raw.model_state["weight"] == 4.0)
    events = [e for e in mj.get_run(run.id)["events"] if e["kind"] == "checkpoint"]
    assert len(events) == len(losses)


def mlops_checkpoints():
    from mlops_jupyter.registry.checkpoints import checkpoints

    return checkpoints()


def test_nothing_to_resume_and_bad_input(tmp_path):
    torch = pytest.importorskip("torch")
    state = mj.resume(dir=tmp_path / "none")
    assert not state and state.next_epoch == 0 and state.epoch is None
    with pytest.raises(mj.InvalidInputError):
        mj.checkpoint(model=object(), epoch=1, dir=tmp_path)
    with pytest.raises(mj.InvalidInputError):
        mj.checkpoint(model=torch.nn.Linear(1, 1), epoch=1, keep_last=0, dir=tmp_path)
    with pytest.raises(mj.InvalidInputError):
        mj.checkpoint(model=torch.nn.Linear(1, 1), epoch="3", dir=tmp_path)
    with pytest.raises(mj.InvalidInputError):
        mj.checkpoint(model=torch.nn.Linear(1, 1), metrics={"a": "x"}, dir=tmp_path)


def test_damaged_manifest_falls_back_to_files(tmp_path):
    torch = pytest.importorskip("torch")
    m = torch.nn.Linear(2, 2)
    for epoch in range(3):
        mj.checkpoint(model=m, epoch=epoch, dir=tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    # the newest file is truncated as by a disk failure: resume takes the previous one
    newest = sorted(tmp_path.glob("ckpt-*"))[-1]
    newest.write_bytes(newest.read_bytes()[:40])
    with pytest.warns(RuntimeWarning, match="skipped unreadable"):
        state = mj.resume(model=torch.nn.Linear(2, 2), dir=tmp_path)
    assert state.epoch == 1
    # with a good manifest, a latest file deleted by hand also falls back to the previous
    d2 = tmp_path / "second"
    for epoch in range(3):
        mj.checkpoint(model=m, epoch=epoch, dir=d2)
    sorted(d2.glob("ckpt-*"))[-1].unlink()
    with pytest.warns(RuntimeWarning, match="skipped unreadable"):
        assert mj.resume(model=torch.nn.Linear(2, 2), dir=d2).epoch == 1
    with pytest.raises(mj.MlopsJupyterError, match="cannot read"):
        mj.resume(dir=d2, which=2)


def test_rng_state_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    import random

    m = torch.nn.Linear(2, 2)
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    mj.checkpoint(model=m, epoch=0, dir=tmp_path)
    expect = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(10), np.random.rand(10), random.random()
    mj.resume(model=m, dir=tmp_path)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0])
    assert np.array_equal(expect[1], got[1]) and expect[2] == got[2]


class _Plant:
    """Unpickling this creates the folder `marker`: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _plant_latest(torch, d: Path, extra) -> Path:
    """A checkpoint file with `extra` in it, named in the manifest as the latest one (what
    anyone able to write into the folder could do)."""
    payload = torch.load(sorted(d.glob("ckpt-*"))[0], weights_only=True)
    payload["meta"]["extra"] = extra
    payload["meta"]["epoch"] = 1
    planted = d / "ckpt-000002-e1.pt"
    torch.save(payload, planted)
    man = json.loads((d / "manifest.json").read_text())
    man["entries"].append({**man["entries"][0], "file": planted.name, "seq": 2, "epoch": 1})
    man["latest"] = planted.name
    (d / "manifest.json").write_text(json.dumps(man))
    return planted


def test_planted_checkpoint_never_runs_code(tmp_path):
    torch = pytest.importorskip("torch")
    from mlops_jupyter.registry.checkpoints import UntrustedCheckpointError

    d = tmp_path / "ck"
    mj.checkpoint(model=torch.nn.Linear(2, 2), epoch=0, dir=d)
    marker = tmp_path / "code-ran"
    planted = _plant_latest(torch, d, _Plant(marker))
    # refused with the file and the fix named, never a silent fall back to epoch 0
    with pytest.raises(UntrustedCheckpointError, match="trusted=True") as err:
        mj.resume(model=torch.nn.Linear(2, 2), dir=d)
    assert str(planted) in str(err.value)
    with pytest.raises(UntrustedCheckpointError):
        mj.resume(which=str(planted))
    with pytest.raises(UntrustedCheckpointError):
        mj.resume(dir=d, which=1)
    with pytest.raises(mj.InvalidInputError, match="trusted"):
        mj.resume(dir=d, trusted="yes")
    assert not marker.exists()
    # the file really runs code when fully unpickled: what trusted=True allows
    mj.resume(model=torch.nn.Linear(2, 2), dir=d, trusted=True)
    assert marker.is_dir()


def test_own_objects_in_extra_need_trusted(tmp_path):
    torch = pytest.importorskip("torch")
    from fractions import Fraction

    from mlops_jupyter.registry.checkpoints import UntrustedCheckpointError

    m = torch.nn.Linear(2, 2)
    mj.checkpoint(model=m, epoch=0, dir=tmp_path, extra={"plain": [1, 2.5, "x"]})
    assert mj.resume(model=m, dir=tmp_path).extra == {"plain": [1, 2.5, "x"]}
    mj.checkpoint(model=m, epoch=1, dir=tmp_path, extra=Fraction(1, 3))
    with pytest.raises(UntrustedCheckpointError, match="trusted=True"):
        mj.resume(model=m, dir=tmp_path)
    state = mj.resume(model=m, dir=tmp_path, trusted=True)
    assert state.epoch == 1 and state.extra == Fraction(1, 3)


def test_tampered_manifest_never_touches_files_outside(tmp_path):
    torch = pytest.importorskip("torch")
    d = tmp_path / "a" / "ck"
    m = torch.nn.Linear(2, 2)
    for epoch in range(2):
        mj.checkpoint(model=m, epoch=epoch, dir=d, keep_last=1, metrics={"val_loss": 1.0})
    victims = [tmp_path / "victim.txt", tmp_path / "a" / "ckpt-000001-e0.pt"]
    for v in victims:
        v.write_text("keep me")
    man = json.loads((d / "manifest.json").read_text())
    tampered = [
        {"file": "../../victim.txt", "seq": 0, "epoch": 0, "metrics": {}},
        {"file": str(victims[0]), "seq": 0, "epoch": 0, "metrics": {}},
        {"file": "../ckpt-000001-e0.pt", "seq": 0, "epoch": 0, "metrics": {}},
        {"file": 7, "seq": 0},
        "ckpt-000001-e0.pt",
    ]
    man["entries"] = tampered + man["entries"]
    man["best"] = "../../victim.txt"
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.warns(RuntimeWarning, match="unexpected files"):
        listed = mlops_checkpoints_in(d)
    assert listed["file"].to_list() == [
        e["file"] for e in man["entries"] if isinstance(e, dict) and str(e["file"]).startswith("ck")
    ]
    with pytest.warns(RuntimeWarning, match="unexpected files"):
        with pytest.raises(mj.MlopsJupyterError, match="no best"):
            mj.resume(dir=d, which="best")
    with pytest.warns(RuntimeWarning, match="unexpected files"):
        mj.checkpoint(model=m, epoch=2, dir=d, keep_last=1)
    assert all(v.read_text() == "keep me" for v in victims)
    # the rewritten manifest names only the folder's own files
    assert all(
        "/" not in e["file"] for e in json.loads((d / "manifest.json").read_text())["entries"]
    )
    assert mj.resume(model=m, dir=d).epoch == 2


def mlops_checkpoints_in(d: Path):
    from mlops_jupyter.registry.checkpoints import checkpoints

    return checkpoints(dir=d)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.from_regex(
            r"(\.\./|/|x/)?ckpt-\d{1,7}-e(-?\d{1,3}|x)\.(pt|safetensors)\n?", fullmatch=True
        ),
    )
)
def test_accepted_manifest_names_stay_in_the_folder(name):
    from mlops_jupyter.registry.ckpt_io import valid_name

    if valid_name(name):
        folder = Path("/ck/folder")
        assert (folder / name).parent == folder and name == Path(name).name
        assert "\n" not in name and not name.startswith(".")
