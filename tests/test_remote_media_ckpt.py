"""Media logging through a real `mlops-jupyter server` process (real tokens): an image and
a table logged over the server equal what a local store records (rows and bytes), the
sidebar's media routes on the server show them, a read token cannot log, a retried index
request stores once. One server for the module (SQLite, or PostgreSQL in the CI's suites)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from trackserver_helpers import Server, request

import mlops_jupyter as mj
from mlops_jupyter.artifacts import open_artifacts
from mlops_jupyter.store import open_store, tokens

pytestmark = pytest.mark.timeout(120)


class Remote:
    """The module's server, its store and tokens."""

    def __init__(self, loc: Any, artifacts: Path, tmp: Path) -> None:
        self.store = open_store(loc)
        self.blobs = open_artifacts(artifacts)
        self.wtok = tokens.add(self.store, "writer", "write")
        self.rtok = tokens.add(self.store, "reader", "read")
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ)
        env.update(
            MLOPS_JUPYTER_STORE=str(loc),
            MLOPS_JUPYTER_CACHE=str(tmp / "server-cache"),
            MLOPS_JUPYTER_TELEMETRY="0",
            PYTHONPATH=os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        self.srv = Server(env, tmp, "--artifacts", str(artifacts))
        self.env = env


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, request):
    from conftest import BACKEND

    tmp = tmp_path_factory.mktemp("remote-media")
    if BACKEND == "postgresql":
        loc: Any = request.getfixturevalue("pg_server").new_database()
    else:
        loc = tmp / "store.db"
    r = Remote(loc, tmp / "artifacts", tmp)
    r.srv.start()
    yield r
    r.srv.stop()


@pytest.fixture
def rs(remote_server, monkeypatch, tmp_path) -> Remote:
    """This test process logs through the module's server with the write token."""
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", remote_server.srv.url)
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", remote_server.wtok)
    monkeypatch.setenv("MLOPS_JUPYTER_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(tmp_path / "cache"))
    return remote_server


IMG = (np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3) * 3) % 255
TABLE = pl.DataFrame({"x": [1, 2, 3], "y": ["a", "b", None], "z": [0.5, float("nan"), 2.0]})


def _log(run_name: str) -> Any:
    with mj.start_run(run_name) as run:
        mj.log_image("sample", IMG, step=3)
        mj.log_image("sample", IMG[::-1])  # step None: one past the last (4)
        mj.log_table("preds", TABLE)
        mj.log_text("note", "hello")
        assert mj.flush_media(30)
    return run


def _rows(frame: pl.DataFrame) -> list[tuple]:
    return frame.select("key", "step", "kind", "mime", "digest", "size").rows()


def test_media_over_the_server_equal_a_local_stores(rs, monkeypatch, tmp_path):
    from mlops_jupyter.media.worker import WORKER

    failed = WORKER.failed
    run = _log("remote-media")
    assert WORKER.failed == failed
    remote = _rows(mj.media(run))
    assert [r[:2] for r in remote] == [("note", 0), ("preds", 0), ("sample", 3), ("sample", 4)]
    np.testing.assert_array_equal(mj.load_media(run, "sample", 3), IMG)
    np.testing.assert_array_equal(mj.load_media(run.id, "sample"), IMG[::-1])
    assert mj.load_media(run, "preds").equals(TABLE, null_equal=True)
    assert mj.load_media(run, "note") == "hello"

    # the same calls on a local store give the same rows and bytes
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(tmp_path / "local.db"))
    mj.set_store(None)
    local_run = _log("local-media")
    local = _rows(mj.media(local_run))
    assert remote == local
    for (_, _, _, _, digest, size), _ in zip(remote, local):
        data = rs.blobs.blob_file(digest).read_bytes()
        assert len(data) == size
        assert data == local_run.store.artifacts.blob_file(digest).read_bytes()

    # the sidebar's media routes on the server show the image (read token)
    st, out = request(rs.srv.url, "GET", f"/mlops/api/v1/runs/{run.id}/media", rs.rtok)
    assert st == 200, out
    shown = {(m["key"], m["step"]) for m in out["media"]}
    assert ("sample", 3) in shown and ("preds", 0) in shown


def test_a_read_token_cannot_index_media_and_a_retry_stores_once(rs, monkeypatch):
    from mlops_jupyter.remote import client

    run = _log("retry-media")
    path = f"/api/v1/runs/{run.id}/media"
    item = {"key": "sample", "step": 3, "kind": "image", "mime": "image/png"}
    item["name"] = "media/sample/3.png"
    st, out = request(rs.srv.url, "POST", path, rs.rtok, {"items": [item]})
    assert st == 403, out
    # an item naming a file the run never uploaded: 404, nothing indexed
    bad = {**item, "step": 9, "name": "media/sample/9.png"}
    st, out = request(rs.srv.url, "POST", path, rs.wtok, {"items": [bad]})
    assert st == 404, out
    st, out = request(rs.srv.url, "POST", path, rs.wtok, {"items": [{**item, "step": -1}]})
    assert st == 400, out

    real = client.Client.request

    def twice(self, method, p, body=None, **kw):
        out = real(self, method, p, body, **kw)
        if method == "POST" and p.endswith("/media"):
            out = real(self, method, p, body, **kw)  # as if the first answer was lost
        return out

    monkeypatch.setattr(client.Client, "request", twice)
    with mj.start_run("twice") as run2:
        mj.log_image("sample", IMG, step=0)
        assert mj.flush_media(30)
    monkeypatch.setattr(client.Client, "request", real)
    rid = rs.store.read("SELECT id FROM runs WHERE uid=?", (run2.id,))[0][0]
    assert rs.store.read("SELECT count(*) FROM media WHERE run_id=?", (rid,)) == [(1,)]
    np.testing.assert_array_equal(mj.load_media(run2, "sample", 0), IMG)
