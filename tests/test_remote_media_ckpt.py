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
from trackserver_helpers import RemoteServer, module_remote, request, use_remote

import mlops_jupyter as mj

pytestmark = pytest.mark.timeout(120)


Remote = RemoteServer


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, request):
    yield from module_remote(tmp_path_factory, request, "remote-media")


@pytest.fixture
def rs(remote_server, monkeypatch, tmp_path) -> Remote:
    return use_remote(monkeypatch, remote_server, tmp_path)


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


# -- checkpoints -----------------------------------------------------------------------

_RESUME = """
import json, sys, torch
import mlops_jupyter as mj
torch.manual_seed(999)  # a different start: everything must come from the checkpoint
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
# no run: the series is named (a run of that name would find it the same way)
state = mj.resume(model=model, optimizer=opt, name=sys.argv[1])
after = torch.rand(3).tolist()
torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, sys.argv[2])
print(json.dumps({"epoch": state.epoch, "next": state.next_epoch, "rand": after}))
"""


def _train(name: str, epochs: int) -> tuple[Any, Any, list[float]]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    with mj.start_run(name):
        for epoch in range(epochs):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            # the best is epoch 1 (kept past rotation), later ones are worse
            mj.checkpoint(
                model, opt, epoch=epoch, metrics={"val": abs(epoch - 1)}, best="val", keep_last=2
            )
        after = torch.rand(3).tolist()
    return model, opt, after


def test_checkpoint_rotate_and_resume_in_a_fresh_process(rs, tmp_path):
    import json
    import subprocess
    import sys

    torch = pytest.importorskip("torch")
    model, opt, after = _train("ckpt-remote", 5)
    stored = sorted(
        i.key.rsplit("/", 1)[-1] for i in rs.blobs.list("checkpoints/default/ckpt-remote")
    )
    # the last two and the best (epoch 1) are kept on the server, the others rotated out
    assert stored == [
        "ckpt-000002-e1.pt",
        "ckpt-000004-e3.pt",
        "ckpt-000005-e4.pt",
        "manifest.json",
    ]
    # another machine: its own cache (no working copy), the same server and run name
    env = dict(os.environ, MLOPS_JUPYTER_CACHE=str(tmp_path / "other-cache"))
    env["MLOPS_JUPYTER_TELEMETRY"] = "0"
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = str(root)
    out_file = tmp_path / "resumed.pt"
    p = subprocess.run(
        [sys.executable, "-c", _RESUME, "ckpt-remote", str(out_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["epoch"] == 4 and got["next"] == 5
    assert got["rand"] == after  # the random generators continue where they were saved
    resumed = torch.load(out_file)
    for k, v in model.state_dict().items():
        assert torch.equal(resumed["model"][k], v), k
    want = opt.state_dict()
    for i, st in want["state"].items():
        assert torch.equal(resumed["opt"]["state"][i]["momentum_buffer"], st["momentum_buffer"])


def test_a_read_token_cannot_write_checkpoints_and_a_retry_stores_once(rs, monkeypatch):
    import hashlib

    from mlops_jupyter.errors import StoreError

    torch = pytest.importorskip("torch")

    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.rtok)
    model = torch.nn.Linear(2, 1)
    with pytest.raises(StoreError, match="scope write|read token"):
        mj.checkpoint(model, epoch=0, name="ro-series")
    assert not list(rs.blobs.list("checkpoints/default/ro-series"))

    data = b"checkpoint bytes"
    d = hashlib.sha256(data).hexdigest()
    key = "checkpoints/default/raw/ckpt-000001-e0.pt"
    path = f"/api/v1/checkpoints/files/{d}?key={key}"
    hdr = {"Content-Type": "application/octet-stream"}
    st, out = request(rs.srv.url, "PUT", path, rs.rtok, raw=data, headers=hdr)
    assert st == 403, out
    for _ in range(2):  # sent again after a lost answer: the same one file
        st, out = request(rs.srv.url, "PUT", path, rs.wtok, raw=data, headers=hdr)
        assert st == 200 and out["sha256"] == d, out
    st, out = request(
        rs.srv.url, "GET", "/api/v1/checkpoints/files?prefix=checkpoints/default/raw", rs.rtok
    )
    assert st == 200 and [f["key"] for f in out["files"]] == [key], out
    # a body that is not the declared digest, a key outside checkpoints/: nothing stored
    st, _ = request(
        rs.srv.url, "PUT", path.replace(key, key + "x"), rs.wtok, raw=b"other", headers=hdr
    )
    assert st == 400
    st, _ = request(
        rs.srv.url,
        "PUT",
        f"/api/v1/checkpoints/files/{d}?key=blobs/aa/x",
        rs.wtok,
        raw=data,
        headers=hdr,
    )
    assert st == 400
    st, _ = request(rs.srv.url, "DELETE", f"/api/v1/checkpoints/file?key={key}", rs.rtok)
    assert st == 403
    for _ in range(2):  # deleting again is harmless
        st, _ = request(rs.srv.url, "DELETE", f"/api/v1/checkpoints/file?key={key}", rs.wtok)
        assert st == 200
    assert [i.key for i in rs.blobs.list("checkpoints/default/raw")] == []
    # a folder is no file: not overwritten, not deleted, not served
    rs.blobs.put_file(key, Path(__file__))
    folder = "checkpoints/default/raw"
    st, _ = request(rs.srv.url, "DELETE", f"/api/v1/checkpoints/file?key={folder}", rs.wtok)
    assert st == 200 and rs.blobs.head(key) is not None
    st, _ = request(rs.srv.url, "GET", f"/api/v1/checkpoints/file?key={folder}", rs.rtok)
    assert st == 404
    st, _ = request(
        rs.srv.url,
        "PUT",
        f"/api/v1/checkpoints/files/{d}?key={folder}",
        rs.wtok,
        raw=data,
        headers=hdr,
    )
    assert st == 400
    st, _ = request(
        rs.srv.url,
        "PUT",
        f"/api/v1/checkpoints/files/{d}?key={key}/x",
        rs.wtok,
        raw=data,
        headers=hdr,
    )
    assert st == 400
    assert rs.blobs.head(key).size == Path(__file__).stat().st_size
