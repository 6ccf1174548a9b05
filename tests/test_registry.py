"""Model registry on a real store: stage rules, aliases, audit log, CLI, and torch/MLX
models loaded back in a fresh process with identical outputs."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import mlops_jupyter as mj
from mlops_jupyter import registry as reg


def _register_file(tmp_path, name="m", text="v"):
    p = tmp_path / f"{name}-{text}.txt"
    p.write_text(text)
    return mj.register_model(name, p)


def test_stage_rules_and_single_production(tmp_path):
    v1 = _register_file(tmp_path, text="1")
    v2 = _register_file(tmp_path, text="2")
    assert (v1, v2) == (1, 2)
    assert mj.load_model("m").read_text() == "2"  # no production yet: newest
    with pytest.raises(reg.StageTransitionError, match="staging"):
        mj.promote_model("m", v1, "production")  # must pass through staging
    mj.promote_model("m", v1, "staging", reason="candidate")
    mj.promote_model("m", v1, "production", reason="first release")
    assert mj.load_model("m").read_text() == "1"  # production wins over newer versions
    mj.promote_model("m", v2, "staging")
    changes = mj.promote_model("m", v2, "production", reason="better")
    assert changes == [
        {"version": 1, "from": "production", "to": "archived", "reason": "replaced by v2: better"},
        {"version": 2, "from": "staging", "to": "production", "reason": "better"},
    ]
    df = reg.versions("m")
    assert dict(zip(df["version"], df["stage"])) == {1: "archived", 2: "production"}
    assert mj.load_model("m", stage="production").read_text() == "2"
    assert mj.load_model("m", stage="archived").read_text() == "1"
    with pytest.raises(reg.StageTransitionError, match="already"):
        mj.promote_model("m", v2, "production")
    # roll back: an archived version may return straight to production
    mj.promote_model("m", v1, "production", reason="rollback")
    assert mj.load_model("m").read_text() == "1"
    assert reg.model_version("m", stage="archived")["version"] == 2
    # several production versions only when asked for
    v3 = _register_file(tmp_path, text="3")
    mj.promote_model("m", v3, "staging")
    mj.promote_model("m", v3, "production", archive_existing=False)
    assert sorted(
        reg.versions("m").filter(reg.versions("m")["stage"] == "production")["version"]
    ) == [1, 3]
    assert reg.models().row(0, named=True) == {
        "name": "m",
        "latest": 3,
        "production": 3,
        "staging": None,
        "versions": 3,
    }


def test_audit_log_records_every_change(tmp_path):
    v1 = _register_file(tmp_path, text="a")
    v2 = _register_file(tmp_path, text="b")
    mj.promote_model("m", v1, "staging", reason="looks good")
    mj.promote_model("m", v1, "production")
    reg.set_alias("m", "champion", v1)
    mj.promote_model("m", v2, "staging")
    mj.promote_model("m", v2, "production", reason="v2 wins")
    assert reg.set_alias("m", "champion", v2) == 1
    reg.remove_alias("m", "champion")
    h = reg.history("m")
    assert set(h["user"]) == {getpass.getuser()}
    assert h["time"].is_sorted()
    got = [
        (r["version"], r["action"], r["from_stage"], r["to_stage"], r["alias"], r["reason"])
        for r in h.iter_rows(named=True)
    ]
    assert got == [
        (1, "register", None, "none", None, None),
        (2, "register", None, "none", None, None),
        (1, "transition", "none", "staging", None, "looks good"),
        (1, "transition", "staging", "production", None, None),
        (1, "alias", None, None, "champion", None),
        (2, "transition", "none", "staging", None, None),
        (1, "transition", "production", "archived", None, "replaced by v2: v2 wins"),
        (2, "transition", "staging", "production", None, "v2 wins"),
        (2, "alias", None, None, "champion", "moved from v1"),
        (None, "unalias", None, None, "champion", "was v2"),
    ]


def test_aliases_and_lookups(tmp_path):
    v1 = _register_file(tmp_path, text="x")
    _register_file(tmp_path, text="y")
    mj.register_model("m", tmp_path / "m-x.txt", alias="candidate")
    reg.set_alias("m", "champion", v1)
    assert mj.load_model("m", alias="champion").read_text() == "x"
    assert reg.model_version("m", alias="candidate")["version"] == 3
    assert mj.load_model("m", version=2).read_text() == "y"
    assert (
        reg.versions("m").filter(reg.versions("m")["version"] == 1)["aliases"].item() == "champion"
    )
    with pytest.raises(reg.ModelNotFoundError):
        mj.load_model("m", alias="nope")
    with pytest.raises(reg.ModelNotFoundError, match="known models: m"):
        mj.load_model("other")
    with pytest.raises(reg.ModelNotFoundError):
        mj.load_model("m", stage="production")
    with pytest.raises(mj.InvalidInputError):
        reg.set_alias("m", "production", 1)
    with pytest.raises(mj.InvalidInputError):
        mj.load_model("m", version=1, alias="champion")


def test_bad_input(tmp_path):
    with pytest.raises(mj.InvalidInputError):
        mj.register_model("bad name!", tmp_path)
    with pytest.raises(mj.InvalidInputError):
        mj.register_model("m", tmp_path / "missing.bin")
    with pytest.raises(mj.InvalidInputError):
        mj.register_model("m", {"a": 1}, metrics={"acc": "high"})
    _register_file(tmp_path)
    for bad in (0, -1, 1.5, "x", True):
        with pytest.raises(mj.InvalidInputError):
            mj.promote_model("m", bad, "staging")
    with pytest.raises(mj.InvalidInputError):
        mj.promote_model("m", 1, "prod")
    with pytest.raises(reg.ModelNotFoundError):
        mj.promote_model("m", 9, "staging")


def test_run_link_metrics_and_pickled_objects():
    with mj.start_run("fit", experiment="reg") as run:
        mj.log(step=0, acc=0.5)
        mj.log(step=1, acc=0.75)
        v = mj.register_model("lookup", {"weights": [1, 2, 3]})
    info = reg.model_version("lookup", version=v)
    assert info["run_id"] == run.id and info["metrics"] == {"acc": 0.75}
    assert info["flavor"] == "pickle"
    assert mj.load_model("lookup") == {"weights": [1, 2, 3]}


def test_tampered_files_are_refused(tmp_path):
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "a.bin").write_bytes(b"abc")
    mj.register_model("bundle", d)
    stored = mj.load_model("bundle")
    assert stored.is_dir() and (stored / "a.bin").read_bytes() == b"abc"
    (stored / "a.bin").write_bytes(b"abd")
    with pytest.raises(reg.ModelLoadError, match="changed"):
        mj.load_model("bundle")


def test_concurrent_promotions_leave_one_production(tmp_path):
    for i in range(4):
        _register_file(tmp_path, text=str(i))
        mj.promote_model("m", i + 1, "staging")
    errors = []

    def promote(v):
        try:
            mj.promote_model("m", v, "production")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=promote, args=(v,)) for v in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    df = reg.versions("m")
    assert (df["stage"] == "production").sum() == 1
    assert (df["stage"] == "archived").sum() == 3


NETS = textwrap.dedent(
    """
    import torch

    class TorchNet(torch.nn.Module):
        def __init__(self, hidden=8):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Linear(4, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(),
                torch.nn.Dropout(0.5), torch.nn.Linear(hidden, 2))
        def forward(self, x):
            return self.body(x)
    """
)

MLX_NETS = textwrap.dedent(
    """
    import mlx.core as mx, mlx.nn as nn

    class MlxNet(nn.Module):
        def __init__(self, hidden=8):
            super().__init__()
            self.l1 = nn.Linear(4, hidden)
            self.norm = nn.LayerNorm(hidden)
            self.l2 = nn.Linear(hidden, 2)
        def __call__(self, x):
            return self.l2(nn.gelu(self.norm(self.l1(x))))
    """
)

LOAD_IN_CHILD = textwrap.dedent(
    """
    import sys, numpy as np, mlops_jupyter as mj
    name, out = sys.argv[1], sys.argv[2]
    x = np.load(sys.argv[3])
    m = mj.load_model(name, stage="production")
    if "torch" in sys.modules and isinstance(m, sys.modules["torch"].nn.Module):
        import torch
        with torch.no_grad():
            y = m(torch.from_numpy(x)).numpy()
    else:
        import mlx.core as mx
        y = np.array(m(mx.array(x)))
    np.save(out, y)
    print(type(m).__module__, type(m).__name__, m.training)
    """
)


def _load_in_child(tmp_path, child_env, name, x):
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "load.py"
    script.write_text(LOAD_IN_CHILD)
    env = dict(child_env)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    p = subprocess.run(
        [sys.executable, str(script), name, str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return np.load(tmp_path / "y.npy"), p.stdout.split()


def test_torch_round_trip_identical_outputs(tmp_path, child_env, monkeypatch):
    torch = pytest.importorskip("torch")
    (tmp_path / "regnets_torch.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    from regnets_torch import TorchNet

    torch.manual_seed(0)
    model = TorchNet(hidden=16)
    model.train()
    for _ in range(3):  # move BatchNorm running stats away from their defaults
        model(torch.randn(32, 4))
    model.eval()
    v = mj.register_model("tnet", model, init_kwargs={"hidden": 16}, metrics={"acc": 0.9})
    mj.promote_model("tnet", v, "staging")
    mj.promote_model("tnet", v, "production")
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    got, (mod, cls, training) = _load_in_child(tmp_path, child_env, "tnet", x)
    assert (mod, cls, training) == ("regnets_torch", "TorchNet", "False")
    assert np.array_equal(expect, got)
    # loading into an existing instance works without init kwargs too
    other = mj.load_model("tnet", version=v, into=TorchNet(hidden=16))
    with torch.no_grad():
        assert np.array_equal(other(torch.from_numpy(x)).numpy(), expect)
    with pytest.raises(reg.ModelLoadError, match="do not fit"):
        mj.load_model("tnet", into=TorchNet(hidden=4))


def test_mlx_round_trip_identical_outputs(tmp_path, child_env, monkeypatch):
    mx = pytest.importorskip("mlx.core")
    (tmp_path / "regnets_mlx.py").write_text(MLX_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    from regnets_mlx import MlxNet

    mx.random.seed(0)
    model = MlxNet(hidden=12)
    model.eval()
    v = mj.register_model("mnet", model, init_kwargs={"hidden": 12})
    mj.promote_model("mnet", v, "staging")
    mj.promote_model("mnet", v, "production")
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    expect = np.array(model(mx.array(x)))
    got, (mod, cls, training) = _load_in_child(tmp_path, child_env, "mnet", x)
    assert (mod, cls, training) == ("regnets_mlx", "MlxNet", "False")
    assert np.array_equal(expect, got)
    v2 = mj.register_model("mnet", model, init_kwargs={"hidden": 12}, format="npz")
    again = mj.load_model("mnet", version=v2)
    assert np.array_equal(np.array(again(mx.array(x))), expect)


def test_containers_rebuild_without_init_kwargs(tmp_path, child_env):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    seq = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    seq.eval()
    v = mj.register_model("seq", seq)
    mj.promote_model("seq", v, "staging")
    mj.promote_model("seq", v, "production")
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    with torch.no_grad():
        expect = seq(torch.from_numpy(x)).numpy()
    got, (mod, cls, training) = _load_in_child(tmp_path, child_env, "seq", x)
    assert (cls, training) == ("Sequential", "False")
    assert np.array_equal(got, expect)
    stored = mj.load_model("seq")
    assert not any(p.is_meta for p in stored.parameters())

    mx = pytest.importorskip("mlx.core")
    import mlx.nn as nn

    mseq = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    mj.register_model("mseq", mseq)
    again = mj.load_model("mseq")
    xm = mx.array(x)
    assert type(again) is nn.Sequential
    assert np.array_equal(np.array(again(xm)), np.array(mseq(xm)))


def test_cli_ls_promote_history(tmp_path, child_env, store_path):
    _register_file(tmp_path, name="clim", text="1")

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "mlops_jupyter", "--store", str(store_path), "models", *args],
            env=child_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    out = cli("ls")
    assert out.returncode == 0 and "clim" in out.stdout and "none" in out.stdout
    bad = cli("promote", "clim", "1", "production")
    assert bad.returncode == 2 and "cannot go from 'none' to 'production'" in bad.stderr
    ok = cli("promote", "clim", "1", "staging", "--reason", "ready for QA")
    assert ok.returncode == 0 and "clim v1: none -> staging  (ready for QA)" in ok.stdout
    assert cli("promote", "clim", "1", "production").returncode == 0
    assert cli("alias", "clim", "champion", "1").returncode == 0
    rows = json.loads(cli("ls", "--json").stdout)
    assert rows[0]["stage"] == "production" and rows[0]["aliases"] == "champion"
    hist = cli("history", "clim")
    assert "ready for QA" in hist.stdout and getpass.getuser() in hist.stdout
    missing = cli("ls", "nosuch")
    assert missing.returncode == 2 and "no registered model" in missing.stderr


class _Plant:
    """Unpickling this creates the folder `marker`: a stand-in for arbitrary code."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def test_pickled_models_never_run_code_unless_trusted(tmp_path):
    marker = tmp_path / "code-ran"
    mj.register_model("planted", _Plant(marker))
    with pytest.raises(reg.UntrustedModelError, match="trusted=True") as err:
        mj.load_model("planted")
    assert "object.pkl" in str(err.value) and "posix.mkdir" in str(err.value)
    with pytest.raises(mj.InvalidInputError, match="trusted"):
        mj.load_model("planted", trusted=1)
    assert not marker.exists()
    mj.load_model("planted", trusted=True)  # the file really runs code when unpickled
    assert marker.is_dir()


def test_plain_data_loads_without_trusted():
    import collections
    import datetime

    value = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "names": np.array(["a", "b"]),
        "scalar": np.float64(0.5),
        "ordered": collections.OrderedDict(a=1, b=[1, 2]),
        "when": datetime.datetime(2025, 1, 2, 3, 4, 5),
        "z": 1 + 2j,
        "tags": {"x", "y"},
        "raw": b"\x00\x01",
    }
    mj.register_model("plain", value)
    back = mj.load_model("plain")
    assert back.keys() == value.keys()
    assert np.array_equal(back["w"], value["w"]) and back["w"].dtype == np.float32
    assert np.array_equal(back["names"], value["names"])
    assert {k: back[k] for k in value if k not in ("w", "names")} == {
        k: value[k] for k in value if k not in ("w", "names")
    }


def test_planted_module_structure_never_runs_code(tmp_path):
    torch = pytest.importorskip("torch")
    seq = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    mj.register_model("seq", seq)
    structure = reg.model_path("seq") / "module.pt"
    marker = tmp_path / "code-ran"
    torch.save(_Plant(marker), structure)
    with pytest.raises(reg.UntrustedModelError, match="trusted=True") as err:
        mj.load_model("seq", verify=False)
    assert "module.pt" in str(err.value)
    assert not marker.exists()
    # the weights still load into an instance the caller builds
    into = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    loaded = mj.load_model("seq", verify=False, into=into)
    assert torch.equal(loaded[0].weight, seq[0].weight)
    assert not marker.exists()


def test_own_module_class_rebuilds_without_unpickling(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    (tmp_path / "regnets_own.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    from regnets_own import TorchNet

    torch.manual_seed(0)
    model = TorchNet().eval()
    mj.register_model("own", model)  # no init_kwargs: default constructor
    x = torch.randn(3, 4)
    back = mj.load_model("own")
    assert type(back) is TorchNet and not back.training
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    # a class the default constructor cannot rebuild needs trusted=True (or into=)
    wide = TorchNet(hidden=16).eval()
    mj.register_model("wide", wide)
    with pytest.raises(reg.UntrustedModelError, match="trusted=True"):
        mj.load_model("wide")
    with torch.no_grad():
        assert torch.equal(mj.load_model("wide", trusted=True)(x), wide(x))


def test_stored_class_reference_must_be_a_module(tmp_path):
    torch = pytest.importorskip("torch")
    from mlops_jupyter.registry import flavors

    marker = tmp_path / "code-ran"
    meta = {"cls": "os:mkdir", "init_kwargs": {"path": str(marker)}, "torch": torch.__version__}
    with pytest.raises(reg.ModelLoadError, match="not a Module class"):
        flavors._construct(meta)
    assert not marker.exists()


def test_planted_mlx_structure_never_runs_code(tmp_path):
    pytest.importorskip("mlx.core")
    import pickle

    import mlx.nn as nn

    mseq = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    mj.register_model("mseq", mseq)
    structure = reg.model_path("mseq") / "module.pkl"
    marker = tmp_path / "code-ran"
    structure.write_bytes(pickle.dumps(_Plant(marker)))
    with pytest.raises(reg.UntrustedModelError, match="trusted=True") as err:
        mj.load_model("mseq", verify=False)
    assert "module.pkl" in str(err.value)
    assert not marker.exists()


def test_torch_models_load_in_parallel_threads():
    """torch's weights-only allowlist is process-wide: loads in several threads (a serving
    worker loading its variants, a user's thread pool) must not hide layer classes from one
    another."""
    torch = pytest.importorskip("torch")
    for i in range(2):
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, i + 1))
        mj.register_model(f"par{i}", net)
    errors: list[str] = []

    def load(name: str) -> None:
        for _ in range(25):
            try:
                reg.load_model(name)
            except Exception as e:  # collected: the assertion below names them
                errors.append(repr(e)[:200])

    threads = [threading.Thread(target=load, args=(f"par{i % 2}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
