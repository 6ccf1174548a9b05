"""`mlops-jupyter models package NAME --target bentoml` with a real BentoML 1.4 (bentoml
1.4.40 in `.venv-bentoml`, built by `make bentoml` from .ci/bentoml-requirements.txt): a torch
MLP and a scikit-learn-style estimator (its class in a module shipped with --code) are
packaged, `bentoml build` builds them offline, `bentoml serve` serves them on 127.0.0.1 as
real processes (the torch one from the built Bento, the estimator from the package folder),
and their answers equal the local predictions of `mlops_jupyter.serving.model` exactly.
Bad input: unknown model, unknown target, existing folder, unsupported flavor, no trust.
Each test packages from its own store (SQLite; PostgreSQL in the second pass)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.cli import main  # noqa: E402
from mlops_jupyter.serving import model as smodel  # noqa: E402
from mlops_jupyter.serving.bentoml_pkg import PackagedModel, PackageError, package  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENTO_BIN = ROOT / ".venv-bentoml" / "bin"
SIG = {"x": {"shape": [4], "dtype": "float32"}}
FNS = """import numpy as np

class Scorer:
    '''A scikit-learn-style estimator: predict(X) on the columns as a 2-D array.'''
    def __init__(self, w):
        self.w = np.asarray(w, dtype=np.float64)
    def predict(self, X):
        return np.tanh(X @ self.w) / 3

def combine(a, b):
    return a * 1.5 - b.sum(axis=1, keepdims=True)
"""


@pytest.fixture(scope="module")
def bento_env(tmp_path_factory) -> dict[str, str]:
    """The environment of the BentoML processes: their own BENTOML_HOME, no telemetry;
    mlops_jupyter comes from this checkout through the venv's .pth."""
    if not (BENTO_BIN / "bentoml").exists():
        pytest.fail(f"no BentoML venv at {BENTO_BIN.parent}: run `make bentoml`")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        BENTOML_HOME=str(tmp_path_factory.mktemp("bentoml-home")),
        BENTOML_DO_NOT_TRACK="True",
        MLOPS_JUPYTER_TELEMETRY="0",
        PATH=f"{BENTO_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


@pytest.fixture
def env(tmp_path, store_path, bento_env):
    """This test's store (SQLite, or PostgreSQL in the second pass) with a torch MLP, an
    estimator, a callable and a file registered."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "bento_fns.py").write_text(FNS)
    sys.path.insert(0, str(mods))
    try:
        import bento_fns

        torch.manual_seed(0)
        mlp = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        mj.register_model("mlp", mlp.eval(), signature=SIG)
        mj.promote_model("mlp", 1, "staging")
        scorer = bento_fns.Scorer([0.7, -0.013])
        cols = {"columns": {"age": "int64", "income": "float64"}}
        mj.register_model("scorer", scorer, signature=cols, alias="champion")
        sig2 = {"a": {"shape": [2], "dtype": "float64"}, "b": {"shape": [3], "dtype": "float64"}}
        mj.register_model("combine", bento_fns.combine, signature=sig2)
        (tmp_path / "notes.txt").write_text("not a model")
        mj.register_model("notes", tmp_path / "notes.txt")
    finally:
        sys.path.remove(str(mods))
        sys.modules.pop("bento_fns", None)
    return {"root": tmp_path, "store": store_path, "mods": mods, "env": bento_env}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict | list]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class BentoServer:
    """`bentoml serve TARGET` in its own process group on 127.0.0.1, stopped on exit."""

    def __init__(self, target: str, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [str(BENTO_BIN / "bentoml"), "serve", target, "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port)],
            cwd=cwd,
            env=env,
            stdout=open(log, "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers too are stopped with the group
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.3)
        pytest.fail(f"bentoml serve not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc.stdout and self.proc.stdout.close()

    def __enter__(self) -> BentoServer:
        self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _local(spec: str, fields: dict, mods: Path | None = None) -> np.ndarray:
    """What `mlops_jupyter.serving.model` (mj.serve's loader and predictor) answers."""
    if mods is not None:
        sys.path.insert(0, str(mods))
    try:
        return smodel.load(spec, trusted=mods is not None)(fields)
    finally:
        if mods is not None:
            sys.path.remove(str(mods))


def test_torch_package_builds_and_serves_exactly(env):
    out = env["root"] / "pkg-mlp"
    assert main(["--store", str(env["store"]), "models", "package", "mlp@staging",
                 "--target", "bentoml", "--out", str(out)]) == 0  # fmt: skip
    assert {p.name for p in out.iterdir()} >= {
        "service.py", "bentofile.yaml", "model", "model.json", "signature.json", "README.md"
    }  # fmt: skip
    assert json.loads((out / "signature.json").read_text())["fields"][0]["name"] == "x"
    assert '"torch==' in (out / "bentofile.yaml").read_text()
    build = subprocess.run(
        [str(BENTO_BIN / "bentoml"), "build", "--output", "tag"],
        cwd=out, env=env["env"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    tag = build.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("mlp:"), build.stdout

    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    want = _local("mlp:1", {"x": x})
    with BentoServer(tag, env["root"], env["env"], env["root"] / "serve-mlp.log") as srv:
        status, got = _post(f"{srv.url}/predict", {"x": x.tolist()})
        assert status == 200, got
        assert got["dtype"] == "float32" and (got["model"], got["version"]) == ("mlp", 1)
        assert np.array_equal(np.asarray(got["predictions"], np.float32), want)
        assert got["predictions"] == want.tolist()  # the same floats, bit for bit
        status, err = _post(f"{srv.url}/predict", {"x": [[1.0, 2.0, 3.0]]})
        assert status == 422
        assert "field 'x'" in err[0]["error"] and "x: float32[batch, 4]" in err[0]["error"]


def test_estimator_package_serves_from_its_folder(env):
    out = env["root"] / "pkg-scorer"
    assert main(["--store", str(env["store"]), "models", "package", "scorer@champion",
                 "--target", "bentoml", "--out", str(out), "--trusted",
                 "--code", str(env["mods"] / "bento_fns.py")]) == 0  # fmt: skip
    assert (out / "bento_fns.py").exists()
    age = np.array([18, 33, 47, 90, 5], np.int64)
    income = np.array([0.1, 1234.5678, -3.25, 1e6, 2.0 / 3.0])
    want = _local("scorer:1", {"age": age, "income": income}, env["mods"])
    with BentoServer(".", out, env["env"], env["root"] / "serve-scorer.log") as srv:
        status, got = _post(f"{srv.url}/predict", {"age": age.tolist(), "income": income.tolist()})
        assert status == 200, got
        assert got["dtype"] == "float64" and got["predictions"] == want.tolist()
        status, err = _post(f"{srv.url}/predict", {"age": [1.5], "income": [1.0]})
        assert status == 422 and "expected int64 values" in err[0]["error"]
        status, err = _post(f"{srv.url}/predict", {"age": [1]})
        assert status == 400 and "income" in json.dumps(err)


def test_callable_package_loads_as_served(env):
    """The Bento's loader, in this process: a two-field callable answers as served."""
    out = package("combine", env["root"] / "pkg-combine", trusted=True,
                  code=[env["mods"] / "bento_fns.py"])  # fmt: skip
    text = (out / "service.py").read_text()
    assert "def predict(" in text and "a: Annotated[list" in text and "b: Annotated" in text
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 2)), rng.normal(size=(3, 3))
    sys.path.insert(0, str(out))
    try:
        got = PackagedModel(out).predict({"a": a.tolist(), "b": b.tolist()})
    finally:
        sys.path.remove(str(out))
    want = _local("combine", {"a": a, "b": b}, env["mods"])
    assert got["predictions"] == want.tolist() and got["dtype"] == "float64"
    # a bundled wheel of mlops_jupyter replaces the requirement an index would have to serve
    whl = env["root"] / "mlops_jupyter-0.1.0-py3-none-any.whl"
    whl.write_bytes(b"PK")  # only copied here
    out2 = package("combine", env["root"] / "pkg-wheel", trusted=True, wheels=[whl],
                   code=[env["mods"] / "bento_fns.py"])  # fmt: skip
    bentofile = (out2 / "bentofile.yaml").read_text()
    assert '"wheels/mlops_jupyter-0.1.0-py3-none-any.whl"' in bentofile
    assert "mlops-jupyter" not in bentofile.partition("wheels:")[0]
    assert (out2 / "wheels" / whl.name).read_bytes() == b"PK"
    # fields that are no Python names: predict takes them as one `inputs` object
    sys.path.insert(0, str(env["mods"]))
    try:
        import bento_fns

        sig = {"a-1": {"shape": [2], "dtype": "float64"}, "b": {"shape": [3], "dtype": "float64"}}
        mj.register_model("combine-odd", bento_fns.combine, signature=sig)
    finally:
        sys.path.remove(str(env["mods"]))
    out3 = package("combine-odd", env["root"] / "pkg-odd", trusted=True,
                   code=[env["mods"] / "bento_fns.py"])  # fmt: skip
    text = (out3 / "service.py").read_text()
    compile(text, "service.py", "exec")
    assert "inputs: Annotated[dict" in text and "class CombineOdd:" in text
    assert 'name="combine-odd"' in text
    got = PackagedModel(out3).predict({"a-1": a.tolist(), "b": b.tolist()})
    assert got["predictions"] == want.tolist()
    # files changed after packaging are refused
    (out / "model" / "object.pkl").write_bytes(b"changed")
    with pytest.raises(PackageError, match="changed since packaging"):
        PackagedModel(out)


def test_bad_input(env, capsys):
    store = str(env["store"])
    out = env["root"] / "pkg-bad"

    def run(*args: str) -> tuple[int, str]:
        rc = main(["--store", store, "models", "package", *args])
        return rc, capsys.readouterr().err

    rc, err = run("nope", "--target", "bentoml", "--out", str(out))
    assert rc == 2 and "no registered model named 'nope'" in err
    rc, err = run("mlp:9", "--target", "bentoml", "--out", str(out))
    assert rc == 2 and "9" in err
    rc, err = run("mlp", "--target", "docker", "--out", str(out))
    assert rc == 2 and "unknown package target 'docker'" in err and "bentoml" in err
    rc, err = run("notes", "--target", "bentoml", "--out", str(out))
    assert rc == 2 and "flavor 'files'" in err
    rc, err = run("scorer", "--target", "bentoml", "--out", str(out),
                  "--code", str(env["mods"] / "bento_fns.py"))  # fmt: skip
    assert rc == 2 and "--trusted" in err
    (env["root"] / "service.py").write_text("x = 1\n")
    rc, err = run("mlp", "--target", "bentoml", "--out", str(out),
                  "--code", str(env["root"] / "service.py"))  # fmt: skip
    assert rc == 2 and "code 'service.py' would overwrite" in err
    rc, err = run("mlp", "--target", "bentoml", "--out", str(out), "--code", "missing.py")
    assert rc == 2 and "code 'missing.py' does not exist" in err
    rc, err = run("mlp", "--target", "bentoml", "--out", str(out), "--wheel", str(out.parent))
    assert rc == 2 and "must be a .whl file" in err
    assert not out.exists()  # nothing written by a refused package
    # an existing non-empty folder is kept unless --force
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, err = run("mlp", "--target", "bentoml", "--out", str(out))
    assert rc == 2 and "not empty" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    rc, _ = run("mlp", "--target", "bentoml", "--out", str(out), "--force")
    assert rc == 0 and not (out / "keep.txt").exists() and (out / "service.py").exists()
    assert not [p for p in env["root"].iterdir() if ".incoming-" in p.name]


@pytest.fixture
def on_s3(s3_url, monkeypatch):
    """Model files in object storage (the session's SeaweedFS on 127.0.0.1)."""
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", s3_url)
    return s3_url


def test_package_from_object_storage(on_s3, env):
    """Files registered in S3 reach the package through the registry's cached copy,
    checked against the digest, and answer as served."""
    from mlops_jupyter.tracking.api import current_store

    assert current_store().artifacts.location.startswith("s3://")
    out = package("mlp:1", env["root"] / "pkg-s3")
    assert {p.name for p in (out / "model").iterdir()} >= {"weights.pt"}
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    got = PackagedModel(out).predict({"x": x.tolist()})
    assert got["predictions"] == _local("mlp:1", {"x": x}).tolist()
