"""Run events and artifacts through a real `mlops-jupyter server` process (real tokens):
`run.add_event`, `run.log_artifact` (a file, a folder), `run.artifact_path`; the upload
limit, a read token, hostile names, and a server killed in the middle of an upload. One
server for the module (over its own store: SQLite, or PostgreSQL in the CI's suites)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
from pathlib import Path

import pytest
from trackserver_helpers import RemoteServer, Server, module_remote, request, use_remote

import mlops_jupyter as mj
from mlops_jupyter.artifacts import open_artifacts
from mlops_jupyter.errors import ArtifactNotFoundError, InvalidInputError, StoreError

pytestmark = pytest.mark.timeout(120)
LIMIT_MB = 1


Remote = RemoteServer


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, request):
    yield from module_remote(
        tmp_path_factory, request, "remote-files", "--max-upload-mb", str(LIMIT_MB)
    )


@pytest.fixture
def rs(remote_server, monkeypatch, tmp_path) -> Remote:
    return use_remote(monkeypatch, remote_server, tmp_path)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _rid(r: Remote, uid: str) -> int:
    return r.rows("SELECT id FROM runs WHERE uid=?", uid)[0][0]


def test_events_and_artifacts_round_trip(rs, tmp_path, monkeypatch):
    f = tmp_path / "model.bin"
    f.write_bytes(os.urandom(300_000))
    folder = tmp_path / "plots"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b" * 1000)
    (folder / "empty.txt").write_bytes(b"")
    with mj.start_run("files", experiment="remote") as run:
        mj.log(loss=1.0, step=0)
        eid = run.add_event("note", "first", data={"x": 1, "p": tmp_path}, start=1.5e9)
        assert isinstance(eid, int)
        assert mj.log_artifact(f) == "model.bin"
        assert run.log_artifact(folder, name="plots") == "plots"
        assert run.log_artifact(f, name="copy/model.bin") == "copy/model.bin"  # stored once
        got = run.artifact_path("model.bin")
        assert got.read_bytes() == f.read_bytes() and got != f
        assert run.artifact_path("plots/sub/b.txt").read_text() == "b" * 1000
        assert run.artifact_path("plots/empty.txt").read_bytes() == b""
        with pytest.raises(ArtifactNotFoundError, match="no artifact 'nope'"):
            run.artifact_path("nope")
        mj.log(loss=0.5, step=1)
    late = run.add_event("after", "the run ended", level="warning")  # as locally: allowed
    assert late > eid
    # the store, read directly: the rows a local run would have
    rid = _rid(rs, run.id)
    arts = rs.rows("SELECT name, digest, size FROM artifacts WHERE run_id=? ORDER BY name", rid)
    assert [(n, s) for n, _, s in arts] == [
        ("copy/model.bin", 300_000),
        ("model.bin", 300_000),
        ("plots/a.txt", 1),
        ("plots/empty.txt", 0),
        ("plots/sub/b.txt", 1000),
    ]
    assert arts[1][1] == _sha(f) and rs.blobs.has_blob(_sha(f))
    ev = rs.rows(
        "SELECT kind, message, level, start_time, data FROM run_events WHERE run_id=? ORDER BY id",
        rid,
    )
    assert [e[:3] for e in ev] == [("note", "first", "info"), ("after", "the run ended", "warning")]
    assert ev[0][3] == 1.5e9 and '"x": 1' in ev[0][4] and str(tmp_path) in ev[0][4]
    assert rs.rows("SELECT status FROM runs WHERE id=?", rid)[0][0] == "finished"
    # get_run through the server lists them, as on a local store
    detail = mj.get_run(run.id)
    assert [a["name"] for a in detail["artifacts"]] == [a[0] for a in arts]
    assert [e["kind"] for e in detail["events"]] == ["note", "after"]
    # another process (a read token) reads the artifact back, verified, through its cache
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.rtok)
    from mlops_jupyter.remote import files
    from mlops_jupyter.remote.api import remote_store

    other = files.artifact_path(remote_store(rs.srv.url), run.id, "model.bin")
    assert _sha(other) == _sha(f)


def test_an_event_reaches_the_server_after_what_was_logged_before_it(rs):
    run = mj.start_run("order", experiment="remote")
    mj.log(loss=1.0)
    held = threading.Event()

    def busy_sender() -> None:  # the sender is busy for a second (a slow request)
        with run._writer._lock:
            held.set()
            time.sleep(1.0)

    t = threading.Thread(target=busy_sender)
    t.start()
    held.wait()
    run.end("failed", wait=False)  # left to the background sender
    run.add_event("post-mortem", "after the end")
    # the point and the end were sent first, not whenever the sender would have run
    rid = _rid(rs, run.id)
    assert rs.rows("SELECT status FROM runs WHERE id=?", rid)[0][0] == "failed"
    assert rs.rows("SELECT n FROM metric_summary WHERE run_id=?", rid) == [(1,)]
    t.join()
    assert rs.rows("SELECT kind FROM run_events WHERE run_id=?", rid) == [("post-mortem",)]


def test_an_event_sent_twice_is_recorded_once(rs):
    with mj.start_run("twice", experiment="remote") as run:
        body = {"kind": "k", "message": "m", "key": "0123abcd"}
        path = f"/api/v1/runs/{run.id}/events"
        a = request(rs.srv.url, "POST", path, rs.wtok, body)
        b = request(rs.srv.url, "POST", path, rs.wtok, body)
        assert a[0] == b[0] == 200 and a[1]["id"] == b[1]["id"]
        assert request(rs.srv.url, "POST", path, rs.wtok, {"kind": "", "message": "m"})[0] == 400
    assert len(rs.rows("SELECT id FROM run_events WHERE run_id=?", _rid(rs, run.id))) == 1


def test_a_read_token_gets_a_clear_error(rs, tmp_path, monkeypatch):
    f = tmp_path / "x.txt"
    f.write_text("x")
    with mj.start_run("ro", experiment="remote") as run:
        run.log_artifact(f)
        run.flush()  # nothing waits in the queue: the token is what is refused below
        monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.rtok)
        with pytest.raises(StoreError, match="may not log artifact 'x.txt'.*scope write") as e:
            run.log_artifact(f)
        assert rs.rtok not in str(e.value)
        with pytest.raises(StoreError, match="may not add run events"):
            run.add_event("note", "x")
        assert run.artifact_path("x.txt").read_text() == "x"  # reading is allowed
        # a small refused upload is read, dropped and answered (no broken pipe)
        put = f"/api/v1/runs/{run.id}/blobs/{_sha(f)}"
        assert request(rs.srv.url, "PUT", put, rs.rtok, raw=b"x")[0] == 403
        assert request(rs.srv.url, "PUT", put.replace(run.id, "nope"), rs.wtok, raw=b"x")[0] == 404
        monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.wtok)
    assert rs.rows("SELECT count(*) FROM run_events WHERE run_id=?", _rid(rs, run.id))[0][0] == 0


def test_a_file_over_the_limit_is_refused_and_nothing_is_stored(rs, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom((LIMIT_MB << 20) + 1))
    small = tmp_path / "folder"
    small.mkdir()
    (small / "ok.txt").write_text("fits")
    os.link(big, small / "z-big.bin")
    with mj.start_run("big", experiment="remote") as run:
        with pytest.raises(InvalidInputError, match=r"big.bin.*up to 1048576 bytes"):
            run.log_artifact(big)
        with pytest.raises(InvalidInputError, match="z-big.bin"):
            run.log_artifact(small)  # a folder is all or nothing
    assert rs.rows("SELECT count(*) FROM artifacts WHERE run_id=?", _rid(rs, run.id))[0][0] == 0
    blobs = rs.blobs
    assert not blobs.has_blob(_sha(big)) and not blobs.has_blob(_sha(small / "ok.txt"))
    # a direct PUT over the limit is answered 413 from its headers, before any body byte
    conn = http.client.HTTPConnection("127.0.0.1", rs.srv.port, timeout=30)
    conn.putrequest("PUT", f"/api/v1/runs/{run.id}/blobs/{_sha(big)}")
    conn.putheader("Authorization", f"Bearer {rs.wtok}")
    conn.putheader("Content-Length", str(big.stat().st_size))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    conn.close()
    assert not blobs.has_blob(_sha(big))


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/../../x", "a//b", "./x", "a\\b", "x\x01y"]
)
def test_hostile_names_are_refused(rs, tmp_path, name):
    f = tmp_path / "f.txt"
    f.write_text("data")
    with mj.start_run("hostile", experiment="remote") as run:
        with pytest.raises(InvalidInputError, match="cannot be stored through a tracking"):
            run.log_artifact(f, name=name)
        # the server refuses them too, whatever the client checks
        body = {"files": [{"name": name, "sha256": _sha(f), "size": 4}]}
        st, out = request(rs.srv.url, "POST", f"/api/v1/runs/{run.id}/artifacts", rs.wtok, body)
        assert st == 400 and out["error_code"] == "INVALID_PARAMETER_VALUE", out
        # a body that does not hash to the digest it is put under is not stored
        st, out = request(
            rs.srv.url, "PUT", f"/api/v1/runs/{run.id}/blobs/{_sha(f)}", rs.wtok, raw=b"other"
        )
        assert st == 400 and out["error_code"] == "DIGEST_MISMATCH"
    assert rs.rows("SELECT count(*) FROM artifacts WHERE run_id=?", _rid(rs, run.id))[0][0] == 0


def test_server_killed_mid_upload_then_restarted(rs, tmp_path, monkeypatch):
    from mlops_jupyter.remote import files

    f = tmp_path / "weights.bin"
    f.write_bytes(os.urandom(900_000))
    real = files._chunks
    killed, restarted = threading.Event(), threading.Event()

    def kill_midway(path: Path, size: int):
        # the real stream; the server dies once part of it is sent, and comes back 1 s later
        for chunk in real(path, size):
            if killed.is_set():
                yield chunk
                continue
            killed.set()
            yield chunk[: len(chunk) // 2]
            time.sleep(0.2)
            rs.srv.kill()
            threading.Timer(1.0, lambda: (rs.restart(), restarted.set())).start()
            yield chunk[len(chunk) // 2 :]

    with mj.start_run("crash", experiment="remote") as run:
        mj.log(loss=1.0)
        run.flush()
        monkeypatch.setattr(files, "_chunks", kill_midway)
        assert run.log_artifact(f) == "weights.bin"  # retried until the server was back
        assert restarted.is_set()
        monkeypatch.setattr(files, "_chunks", real)
        got = run.artifact_path("weights.bin")
        assert _sha(got) == _sha(f)
    rows = rs.rows("SELECT name, digest, size FROM artifacts WHERE run_id=?", _rid(rs, run.id))
    assert rows == [("weights.bin", _sha(f), 900_000)]
    blobs = rs.blobs
    assert _sha(blobs.blob_file(_sha(f))) == _sha(f)
    # while the server is down, an event is a clear error (events are not spooled)
    rs.srv.kill()
    try:
        with pytest.raises(StoreError, match="not spooled"):
            run.add_event("note", "while away")
    finally:
        rs.restart()


def test_the_openapi_description_lists_the_routes(rs):
    st, spec = request(rs.srv.url, "GET", "/api/v1/openapi.json", rs.rtok)
    assert st == 200
    for p in (
        "/api/v1/runs/{id}/events",
        "/api/v1/runs/{id}/artifacts",
        "/api/v1/runs/{id}/artifact",
        "/api/v1/runs/{id}/blobs/{sha256}",
    ):
        assert p in spec["paths"], p


def test_artifacts_on_object_storage(remote_server, s3_url, monkeypatch, tmp_path):
    # a second server over the same store, its files in the real S3-compatible server
    # (os.environ now holds the S3 server's AWS_* variables)
    env = {**os.environ, "MLOPS_JUPYTER_CACHE": str(tmp_path / "server-cache")}
    for k in ("MLOPS_JUPYTER_STORE", "MLOPS_JUPYTER_TELEMETRY", "PYTHONPATH"):
        env[k] = remote_server.env[k]
    f = tmp_path / "ckpt.bin"
    f.write_bytes(os.urandom(200_000))
    with Server(env, tmp_path, "--artifacts", s3_url) as srv:
        monkeypatch.setenv("MLOPS_JUPYTER_STORE", srv.url)
        monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", remote_server.wtok)
        monkeypatch.setenv("MLOPS_JUPYTER_SPOOL_DIR", str(tmp_path / "spool"))
        with mj.start_run("s3", experiment="remote") as run:
            run.log_artifact(f)
            run.log_artifact(f, name="again.bin")  # the same content, already stored
            assert _sha(run.artifact_path("again.bin")) == _sha(f)
    assert open_artifacts(s3_url).has_blob(_sha(f))
    assert not remote_server.blobs.has_blob(_sha(f))
