"""The model registry through a real `mlops-jupyter server` process (real tokens): a tiny
torch model registered over the server, loaded back (predicts identically), promoted,
aliased, listed and audited; the server's store opened directly shows the same versions;
a read token cannot register; a register request sent again makes one version. One server
for the module (over its own store: SQLite, or PostgreSQL in the CI's suites)."""

from __future__ import annotations

import os
from typing import Any

import polars as pl
import pytest
from trackserver_helpers import RemoteServer, Server, module_remote, request, use_remote

import mlops_jupyter as mj
from mlops_jupyter import registry
from mlops_jupyter.errors import InvalidInputError, StoreError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(120)


Remote = RemoteServer


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, request):
    yield from module_remote(tmp_path_factory, request, "remote-registry")


@pytest.fixture
def rs(remote_server, monkeypatch, tmp_path) -> Remote:
    return use_remote(monkeypatch, remote_server, tmp_path)


def _net(seed: int) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _direct(rs: Remote, monkeypatch) -> None:
    """From here on this process opens the server's store itself."""
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(rs.loc))
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(rs.artifacts))
    monkeypatch.delenv("MLOPS_JUPYTER_TOKEN")


def test_register_load_promote_alias_history(rs, monkeypatch):
    x = torch.randn(5, 4)
    nets = [_net(1), _net(2)]
    with mj.start_run("train", experiment="remote-registry") as run:
        mj.log(val_acc=0.9)
        v1 = mj.register_model("tiny", nets[0], alias="candidate", metadata={"team": "a"})
    v2 = mj.register_model("tiny", nets[1], metrics={"val_acc": 0.95}, description="second")
    assert (v1, v2) == (1, 2)
    # loaded back through the server: the same predictions
    for v, net in ((1, nets[0]), (2, nets[1])):
        got = mj.load_model("tiny", version=v)
        assert torch.equal(got(x), net(x))
    info = registry.model_version("tiny", alias="candidate")
    assert info["version"] == 1 and info["run_id"] == run.id
    assert info["metrics"] == {"val_acc": 0.9} and info["meta"]["metadata"] == {"team": "a"}
    assert (registry.model_path("tiny", version=2) / "weights.pt").is_file()
    # stages: into production needs an admin token
    assert mj.promote_model("tiny", 1, "staging")[0]["to"] == "staging"
    with pytest.raises(StoreError, match="may not move tiny v1 to 'production'.*admin") as e:
        mj.promote_model("tiny", 1, "production")
    assert rs.wtok not in str(e.value)
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.atok)
    mj.promote_model("tiny", 1, "production", reason="first release")
    mj.promote_model("tiny", 2, "staging")
    changes = mj.promote_model("tiny", 2, "production", reason="better")
    assert [(c["version"], c["to"]) for c in changes] == [(1, "archived"), (2, "production")]
    with pytest.raises(registry.StageTransitionError, match="cannot go from 'archived' to 'none'"):
        mj.promote_model("tiny", 1, "none")
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.wtok)
    assert torch.equal(mj.load_model("tiny", stage="production")(x), nets[1](x))
    assert torch.equal(mj.load_model("tiny")(x), nets[1](x))  # production by default
    # aliases
    assert registry.set_alias("tiny", "champion", 2) is None
    assert registry.set_alias("tiny", "candidate", 2) == 1
    assert torch.equal(mj.load_model("tiny", alias="champion")(x), nets[1](x))
    assert registry.remove_alias("tiny", "champion") == 2
    with pytest.raises(registry.ModelNotFoundError, match="no alias 'champion'"):
        registry.remove_alias("tiny", "champion")
    with pytest.raises(registry.ModelNotFoundError, match="no registered model named 'nope'"):
        mj.load_model("nope")
    with pytest.raises(InvalidInputError, match="stage name"):
        registry.set_alias("tiny", "production", 1)
    # tables as on a local store
    models = mj.models()
    assert models.row(by_predicate=pl.col("name") == "tiny", named=True) == {
        "name": "tiny",
        "latest": 2,
        "production": 2,
        "staging": None,
        "versions": 2,
    }
    vs = registry.versions("tiny")
    assert vs["version"].to_list() == [2, 1] and vs["aliases"].to_list() == ["candidate", ""]
    hist = mj.model_history("tiny")
    assert hist["action"].to_list() == [
        "register", "alias", "register", "transition", "transition", "transition",
        "transition", "transition", "alias", "alias", "unalias",
    ]  # fmt: skip
    users = hist["user"].to_list()
    assert users[0].endswith("(token writer)") and users[4].endswith("(token releaser)")
    remote_rows = registry.versions("tiny").drop("created")
    # the server's store opened directly: the same versions, loadable there too
    _direct(rs, monkeypatch)
    assert registry.versions("tiny").drop("created").equals(remote_rows)
    assert torch.equal(mj.load_model("tiny", version=1)(x), nets[0](x))
    assert mj.model_history("tiny")["user"].to_list() == users


def test_a_read_token_cannot_register_but_can_load(rs, monkeypatch):
    mj.register_model("ro", _net(3))
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.rtok)
    with pytest.raises(StoreError, match="may not register model 'ro'.*scope write") as e:
        mj.register_model("ro", _net(4))
    assert rs.rtok not in str(e.value)
    with pytest.raises(StoreError, match="may not set alias"):
        registry.set_alias("ro", "x", 1)
    assert isinstance(mj.load_model("ro"), torch.nn.Module)  # reading is allowed
    assert rs.store.read(
        "SELECT count(*) FROM model_versions v JOIN models m ON m.id=v.model_id WHERE m.name=?",
        ("ro",),
    ) == [(1,)]


def test_a_register_sent_again_makes_one_version(rs, monkeypatch):
    from mlops_jupyter.remote import client

    sent: list = []
    real = client.Client.request

    def twice(self, method, path, body=None, **kw):
        out = real(self, method, path, body, **kw)
        if method == "POST" and path.endswith("/versions") and "version" in (out or {}):
            sent.append(out)
            out = real(self, method, path, body, **kw)  # as if the first answer was lost
            sent.append(out)
        return out

    monkeypatch.setattr(client.Client, "request", twice)
    assert mj.register_model("retry", _net(5)) == 1
    assert sent[0] == sent[1]
    monkeypatch.setattr(client.Client, "request", real)
    assert registry.versions("retry")["version"].to_list() == [1]
    assert mj.register_model("retry", _net(5)) == 2  # a new call is a new version


def test_bad_requests_are_refused_and_nothing_is_recorded(rs, tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    import hashlib

    d = hashlib.sha256(b"weights").hexdigest()
    url, tok = rs.srv.url, rs.wtok
    assert request(url, "PUT", f"/api/v1/models/bad/blobs/{d}", tok, raw=b"weights")[0] == 200
    body = {
        "key": "0123456789abcdef",
        "digest": "0" * 64,  # not the digest of the files sent
        "flavor": "files",
        "files": [{"name": "files/w.bin", "sha256": d, "size": 7}],
        "meta": {"file": "w.bin", "is_dir": False},
    }
    st, out = request(url, "POST", "/api/v1/models/bad/versions", tok, body)
    assert st == 400 and out["error_code"] == "DIGEST_MISMATCH", out
    for bad in (
        {"key": "x"},
        {"flavor": "exe"},
        {"files": [{"name": "../x", "sha256": d, "size": 7}]},
        {"meta": {"metadata": "x"}},
        {"meta": {"signature": 5}},
        {"metrics": {"acc": "high"}},
        {"run": "no-such-run"},
    ):
        st, out = request(url, "POST", "/api/v1/models/bad/versions", tok, {**body, **bad})
        assert st in (400, 404), (bad, out)
    assert request(url, "POST", "/api/v1/models/..%2Fx/versions", tok, body)[0] == 400
    assert request(url, "GET", "/api/v1/models/bad/find", tok)[0] == 404
    assert rs.store.read("SELECT count(*) FROM models WHERE name='bad'") == [(0,)]
    st, spec = request(url, "GET", "/api/v1/openapi.json", rs.rtok)
    assert "/api/v1/models/{name}/versions" in spec["paths"]


class _Mine:  # a class of the user's own: unpickling it needs trust, as locally
    def __init__(self) -> None:
        self.w = [1.0, 2.0]


def test_trust_tampering_and_the_cli(rs, monkeypatch):
    import json
    import subprocess
    import sys

    from mlops_jupyter.serving.signature import normalize

    sig = {"x": {"shape": [4], "dtype": "float32"}}
    mj.register_model("plain", {"a": [1, 2]}, signature=sig)
    assert mj.load_model("plain") == {"a": [1, 2]}  # plain data: no trust needed
    assert registry.model_version("plain")["meta"]["signature"] == normalize(sig)
    mj.register_model("mine", _Mine())
    with pytest.raises(registry.UntrustedModelError, match="trusted=True"):
        mj.load_model("mine")
    assert mj.load_model("mine", trusted=True).w == [1.0, 2.0]
    # a stored file changed on the server after registration: refused, as locally
    info = registry.model_version("plain")
    stored = rs.artifacts / info["path"] / "object.pkl"
    stored.write_bytes(stored.read_bytes() + b"x")
    with pytest.raises(registry.ModelLoadError, match="changed since registration"):
        mj.load_model("plain")
    assert mj.load_model("plain", verify=False) == {"a": [1, 2]}  # pickle ignores the tail
    # the CLI goes through the server too
    p = subprocess.run(
        [sys.executable, "-m", "mlops_jupyter", "models", "ls", "mine", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert [r["version"] for r in json.loads(p.stdout)] == [1]


def test_a_server_over_object_storage(remote_server, s3_url, monkeypatch, tmp_path):
    # a second server over the same store, its files in the real S3-compatible server
    # (os.environ now holds the S3 server's AWS_* variables)
    from mlops_jupyter.artifacts import open_artifacts

    env = {**os.environ, "MLOPS_JUPYTER_CACHE": str(tmp_path / "server-cache")}
    for k in ("MLOPS_JUPYTER_STORE", "MLOPS_JUPYTER_TELEMETRY", "PYTHONPATH"):
        env[k] = remote_server.srv.env[k]
    x = torch.randn(3, 4)
    net = _net(7)
    with Server(env, tmp_path, "--artifacts", s3_url) as srv:
        monkeypatch.setenv("MLOPS_JUPYTER_STORE", srv.url)
        monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", remote_server.wtok)
        monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(tmp_path / "client-cache"))
        v = mj.register_model("on-s3", net)
        assert torch.equal(mj.load_model("on-s3", version=v)(x), net(x))
        path = registry.model_version("on-s3", version=v)["path"]
    names = sorted(i.key for i in open_artifacts(s3_url).list(path))
    assert names and all(k.startswith(path + "/") for k in names)
    assert f"{path}/weights.pt" in names


def test_the_same_register_request_racing_itself_makes_one_version(rs, tmp_path):
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    data = b"some weights"
    d = hashlib.sha256(data).hexdigest()
    url, tok = rs.srv.url, rs.wtok
    assert request(url, "PUT", f"/api/v1/models/race/blobs/{d}", tok, raw=data)[0] == 200
    version = tmp_path / "version"
    (version / "files").mkdir(parents=True)
    (version / "files" / "w.bin").write_bytes(data)
    digest, size = registry._digest(version)
    body = {
        "key": "feedfacecafebeef",
        "digest": digest,
        "flavor": "files",
        "files": [{"name": "files/w.bin", "sha256": d, "size": size}],
        "meta": {"file": "w.bin", "is_dir": False},
    }
    with ThreadPoolExecutor(4) as ex:
        outs = list(
            ex.map(
                lambda _: request(url, "POST", "/api/v1/models/race/versions", tok, body), range(4)
            )
        )
    assert {st for st, _ in outs} == {200} and {o["version"] for _, o in outs} == {1}, outs
    assert registry.versions("race")["version"].to_list() == [1]
    assert mj.load_model("race").read_bytes() == data
