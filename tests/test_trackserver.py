"""The standalone tracking server (`mlops-jupyter server`): a real server process on
127.0.0.1 over the test's store (SQLite here, PostgreSQL in the CI's postgres suites),
tokens made and revoked with the real CLI, requests with urllib."""

from __future__ import annotations

import gzip
import importlib.util
import json
import threading
import time

import pytest
from trackserver_helpers import Server, cli, request, token

import mlops_jupyter as mj

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def server(child_env, tmp_path):
    with Server(child_env, tmp_path, "--max-body-mb", "1") as s:
        yield s


@pytest.fixture
def wtok(child_env):
    return token(child_env, "writer", "write")


def _run(base: str, tok: str, experiment: str = "remote", **kw) -> str:
    st, out = request(base, "POST", "/api/v1/runs", tok, {"experiment": experiment, **kw})
    assert st == 200, out
    return out["id"]


def _points(run_id: str, key: str) -> list[tuple[int, float]]:
    df = mj.metrics(run_id, key)
    return list(zip(df["step"].to_list(), df["value"].to_list()))


def _chunk(key: str, seq: int, start: int, n: int) -> dict:
    return {
        "key": key,
        "seq": seq,
        "steps": list(range(start, start + n)),
        "values": [float(i) for i in range(start, start + n)],
        "timestamps": [1_700_000_000.0 + i for i in range(start, start + n)],
    }


def test_health_needs_no_token_and_shows_no_data(server):
    st, out = request(server.url, "GET", "/health")
    assert st == 200 and out == {"status": "ok"}


@pytest.mark.skipif(
    importlib.util.find_spec("optuna") is not None, reason="optuna is installed in this venv"
)
def test_without_optuna_the_server_runs_and_its_sweep_route_says_what_to_install(server, child_env):
    # optuna is an optional extra (the compatibility venvs leave it out)
    write = token(child_env, "sweeper", "write")
    st, out = request(server.url, "POST", "/api/v1/optuna/get_all_studies", write, {})
    assert st == 501 and "mlops-jupyter[optuna]" in out["message"], out
    assert request(server.url, "GET", "/api/v1/runs", write)[0] == 200


def test_tokens_scopes_expiry_and_revocation(server, child_env):
    url = server.url
    assert request(url, "GET", "/api/v1/runs")[0] == 401
    st, out = request(url, "GET", "/api/v1/runs", "mjt_not-a-token")
    assert st == 401 and out["error_code"] == "UNAUTHENTICATED"
    read = token(child_env, "reader", "read")
    write = token(child_env, "writer", "write")
    assert request(url, "GET", "/api/v1/runs", read)[0] == 200
    st, out = request(url, "POST", "/api/v1/runs", read, {"experiment": "x"})
    assert st == 403 and out["error_code"] == "PERMISSION_DENIED"
    assert request(url, "POST", "/api/v1/runs", write, {"experiment": "x"})[0] == 200
    # Bearer only, in any case of the scheme; a wrong scheme is refused
    hdr = {"Authorization": f"Basic {write}"}
    assert request(url, "GET", "/api/v1/runs", headers=hdr)[0] == 401

    short = token(child_env, "short", "write", expires="1s")
    time.sleep(1.3)
    st, out = request(url, "GET", "/api/v1/runs", short)
    assert st == 401 and "expired" in out["message"]

    ls = cli(child_env, "server", "token", "ls", "--json").stdout
    names = {t["name"]: t for t in json.loads(ls)}
    assert set(names) == {"reader", "writer", "short"} and names["short"]["expired"]
    assert write not in ls and read not in ls  # secrets are never listed
    cli(child_env, "server", "token", "revoke", "writer")
    assert request(url, "GET", "/api/v1/runs", write)[0] == 401
    assert cli(child_env, "server", "token", "revoke", "writer", check=False).returncode == 1
    # a second token with a taken name is refused
    dup = cli(child_env, "server", "token", "add", "reader", "--scope", "read", check=False)
    assert dup.returncode != 0 and "exists" in dup.stderr


def test_our_api_round_trip(server, wtok):
    url = server.url
    st, out = request(url, "POST", "/api/v1/experiments", wtok, {"name": "remote"})
    assert st == 200 and out["name"] == "remote"
    rid = _run(url, wtok, name="job-1", params={"lr": 0.01, "layers": [2, 3]}, tags={"t": "a"})
    pts = [{"key": "loss", "value": 1.0 / (i + 1), "step": i * 10} for i in range(5)]
    st, out = request(url, "POST", f"/api/v1/runs/{rid}/metrics", wtok, {"points": pts})
    assert st == 200 and out["points"] == 5
    # no step: continues after the last one
    st, _ = request(
        url,
        "POST",
        f"/api/v1/runs/{rid}/metrics",
        wtok,
        {"points": [{"key": "loss", "value": 0.1}]},
    )
    assert st == 200
    assert (
        request(url, "POST", f"/api/v1/runs/{rid}/params", wtok, {"params": {"bs": 32}})[0] == 200
    )
    assert request(url, "POST", f"/api/v1/runs/{rid}/tags", wtok, {"tags": {"u": "b"}})[0] == 200
    st, out = request(url, "POST", f"/api/v1/runs/{rid}/end", wtok, {"status": "finished"})
    assert st == 200

    st, d = request(url, "GET", f"/api/v1/runs/{rid}", wtok)
    assert st == 200 and d["status"] == "finished" and d["name"] == "job-1"
    assert d["params"] == {"lr": 0.01, "layers": [2, 3], "bs": 32}
    assert d["tags"] == {"t": "a", "u": "b"}
    st, page = request(url, "GET", "/api/v1/runs?experiment=remote", wtok)
    assert st == 200 and [r["id"] for r in page["runs"]] == [rid]

    # the same run through the Python API over the same store
    df = mj.runs(experiment="remote")
    row = df.row(0, named=True)
    assert row["id"] == rid and row["params.lr"] == 0.01 and row["status"] == "finished"
    assert _points(rid, "loss") == [
        (0, 1.0),
        (10, 0.5),
        (20, 1 / 3),
        (30, 0.25),
        (40, 0.2),
        (41, 0.1),
    ]

    st, spec = request(url, "GET", "/api/v1/openapi.json", wtok)
    assert st == 200 and "/api/v1/ingest" in spec["paths"]


def test_ingest_is_idempotent_and_takes_gzip(server, wtok):
    url = server.url
    a, b = _run(url, wtok), _run(url, wtok)
    batch = {
        "runs": [
            {
                "id": a,
                "params": {"p": 1},
                "chunks": [_chunk("loss", 0, 0, 100), _chunk("acc", 0, 0, 50)],
            },
            {"id": b, "chunks": [_chunk("loss", 0, 0, 10)]},
        ]
    }
    st, out = request(url, "POST", "/api/v1/ingest", wtok, batch, gz=True)
    assert st == 200 and out == {"points": 160, "duplicate_chunks": 0, "runs": 2}
    # the same batch again (a client retrying after a lost answer): nothing new
    st, out = request(url, "POST", "/api/v1/ingest", wtok, batch, gz=True)
    assert st == 200 and out["points"] == 0 and out["duplicate_chunks"] == 3
    st, out = request(url, "POST", "/api/v1/ingest", wtok, batch)  # also uncompressed
    assert out["points"] == 0
    # the next chunk of the series, then a replay of all of it
    nxt = {"runs": [{"id": a, "chunks": [_chunk("loss", 1, 100, 100)], "status": "finished"}]}
    assert request(url, "POST", "/api/v1/ingest", wtok, nxt)[1]["points"] == 100
    assert request(url, "POST", "/api/v1/ingest", wtok, nxt)[1]["points"] == 0
    # numpy arrays packed as base64 (a client with arrays): same points, same idempotency
    import base64

    import numpy as np

    def b64(a, dt):
        return base64.b64encode(np.asarray(a, dt).tobytes()).decode()

    packed = {
        "key": "packed",
        "seq": 0,
        "values_b64": b64([0.5, float("nan"), float("inf")], "<f8"),
        "steps_b64": b64([5, 6, 7], "<i8"),
        "timestamps_b64": b64([1_700_000_000.0, 1_700_000_000.5, 1_700_000_001.0], "<f8"),
    }
    for expect in (3, 0):
        st, out = request(
            url, "POST", "/api/v1/ingest", wtok, {"runs": [{"id": b, "chunks": [packed]}]}
        )
        assert st == 200 and out["points"] == expect
    df = mj.metrics(b, "packed")
    assert (
        df["step"].to_list() == [5, 6, 7]
        and df["value"][0] == 0.5
        and df["value"][2] == float("inf")
    )
    for bad in ({"values_b64": "!!"}, {"values_b64": b64([1.0], "<f8")[:-4]}, {"values_b64": 5}):
        chunk = {"key": "packed", "seq": 1, **bad}
        st, out = request(
            url, "POST", "/api/v1/ingest", wtok, {"runs": [{"id": b, "chunks": [chunk]}]}
        )
        assert st == 400, bad
    chunk = {**packed, "seq": 1, "steps_b64": b64([1, 2], "<i8")}
    st, out = request(url, "POST", "/api/v1/ingest", wtok, {"runs": [{"id": b, "chunks": [chunk]}]})
    assert st == 400 and "3 steps" in out["message"]
    chunk = {**packed, "seq": 1, "steps_b64": b64([-1, 2, 3], "<i8")}
    assert (
        request(url, "POST", "/api/v1/ingest", wtok, {"runs": [{"id": b, "chunks": [chunk]}]})[0]
        == 400
    )

    pts = _points(a, "loss")
    assert [s for s, _ in pts] == list(range(200))
    assert len(_points(a, "acc")) == 50 and len(_points(b, "loss")) == 10
    assert mj.get_run(a)["status"] == "finished" and mj.get_run(a)["params"] == {"p": 1}
    ts = mj.metrics(a, "loss")["ts"].dt.epoch("ms").to_list()
    assert ts[:2] == [1_700_000_000_000, 1_700_000_001_000]


def test_bad_input_is_a_json_4xx_and_changes_nothing(server, wtok):
    url = server.url
    rid = _run(url, wtok)
    ok = {"runs": [{"id": rid, "chunks": [_chunk("loss", 0, 0, 3)]}]}
    assert request(url, "POST", "/api/v1/ingest", wtok, ok)[1]["points"] == 3
    bad_bodies = [
        b"{not json",
        b"[1, 2]",
        b'"text"',
        json.dumps({"runs": "x"}).encode(),
        json.dumps({"runs": [{"id": 5}]}).encode(),
        json.dumps(
            {"runs": [{"id": rid, "chunks": [{"key": "k", "seq": "1", "values": [1]}]}]}
        ).encode(),
        json.dumps(
            {"runs": [{"id": rid, "chunks": [{"key": "k", "seq": 1, "values": ["1"]}]}]}
        ).encode(),
        json.dumps(
            {"runs": [{"id": rid, "chunks": [{"key": "k", "seq": 1, "values": [True]}]}]}
        ).encode(),
        json.dumps(
            {"runs": [{"id": rid, "chunks": [{"key": "k", "seq": -1, "values": [1]}]}]}
        ).encode(),
        json.dumps(
            {
                "runs": [
                    {"id": rid, "chunks": [{"key": "k", "seq": 1, "values": [1, 2], "steps": [1]}]}
                ]
            }
        ).encode(),
        json.dumps(
            {
                "runs": [
                    {"id": rid, "chunks": [{"key": "k", "seq": 1, "values": [1], "steps": [2**70]}]}
                ]
            }
        ).encode(),
        json.dumps(
            {"runs": [{"id": rid, "chunks": [{"key": "", "seq": 1, "values": [1]}]}]}
        ).encode(),
        # the second run is bad: the first one's points must not be written either
        json.dumps(
            {
                "runs": [
                    ok["runs"][0] | {"chunks": [_chunk("loss", 9, 50, 3)]},
                    {"id": rid, "status": "weird"},
                ]
            }
        ).encode(),
    ]
    for raw in bad_bodies:
        st, out = request(url, "POST", "/api/v1/ingest", wtok, raw=raw)
        assert 400 <= st < 500, (raw, st, out)
        assert isinstance(out, dict) and out["error_code"] and out["message"], raw
    st, out = request(url, "POST", "/api/v1/ingest", wtok, {"runs": [{"id": "nope"}]})
    assert st == 404 and out["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    st, out = request(
        url,
        "POST",
        "/api/v1/runs",
        wtok,
        raw=b"\x1f\x8b broken",
        headers={"Content-Encoding": "gzip"},
    )
    assert st == 400 and "gzip" in out["message"]
    # over the limit (1 MiB here): 413, as is a small gzip body that inflates past it
    big = json.dumps({"runs": [], "pad": "x" * (2 << 20)}).encode()
    st, out = request(url, "POST", "/api/v1/ingest", wtok, raw=big)
    assert st == 413 and out["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    st, out = request(url, "POST", "/api/v1/ingest", wtok, raw=big, gz=True)
    assert st == 413
    st, out = request(url, "GET", "/api/v1/no-such-route", wtok)
    assert st == 404 and out["error_code"] == "ENDPOINT_NOT_FOUND"
    st, out = request(url, "DELETE", f"/api/v1/runs/{rid}", wtok)
    assert 400 <= st < 500 and "error_code" in out
    # the store holds exactly what the one good request wrote
    assert _points(rid, "loss") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert mj.metrics(rid)["key"].unique().to_list() == ["loss"]
    # and the server still answers
    assert request(url, "GET", "/health")[0] == 200


def test_two_server_processes_share_one_store(child_env, tmp_path, wtok):
    with Server(child_env, tmp_path) as s1, Server(child_env, tmp_path) as s2:
        rid = _run(s1.url, wtok)
        errors: list = []

        def push(base: str, seqs: range) -> None:
            for seq in seqs:
                body = {"runs": [{"id": rid, "chunks": [_chunk("loss", seq, seq * 10, 10)]}]}
                st, out = request(base, "POST", "/api/v1/ingest", wtok, body)
                if st != 200:
                    errors.append((st, out))

        # both servers append to the same run/key at once, each chunk sent to both
        threads = [
            threading.Thread(target=push, args=(s.url, range(i, 40, 2)))
            for i, s in enumerate((s1, s2))
        ] + [threading.Thread(target=push, args=(s.url, range(0, 40))) for s in (s2, s1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        # a run started on one server is seen by the other
        st, d = request(s2.url, "GET", f"/api/v1/runs/{rid}", wtok)
        assert st == 200
    steps = sorted(s for s, _ in _points(rid, "loss"))
    assert steps == list(range(400))


def test_sigkill_and_restart_lose_no_acknowledged_batch(child_env, tmp_path, wtok):
    srv = Server(child_env, tmp_path).start()
    rid = _run(srv.url, wtok)
    acked = []
    try:
        for seq in range(5):
            body = {"runs": [{"id": rid, "chunks": [_chunk("loss", seq, seq * 100, 100)]}]}
            assert request(srv.url, "POST", "/api/v1/ingest", wtok, body)[0] == 200
            acked.append(body)
        srv.kill()
        srv = Server(child_env, tmp_path, port=srv.port).start()
        # the client does not know whether its last batch made it: it sends it again
        assert request(srv.url, "POST", "/api/v1/ingest", wtok, acked[-1])[1]["points"] == 0
        for seq in range(5, 8):
            body = {"runs": [{"id": rid, "chunks": [_chunk("loss", seq, seq * 100, 100)]}]}
            assert request(srv.url, "POST", "/api/v1/ingest", wtok, body)[0] == 200
    finally:
        srv.stop()
    assert [s for s, _ in _points(rid, "loss")] == list(range(800))


def test_workers_share_the_port_and_stop_together(child_env, tmp_path, wtok):
    import psutil

    with Server(child_env, tmp_path, "--workers", "2") as srv:
        kids = psutil.Process(srv.proc.pid).children()
        assert len(kids) == 2
        rid = _run(srv.url, wtok)
        for seq in range(10):
            body = {"runs": [{"id": rid, "chunks": [_chunk("x", seq, seq, 1)]}]}
            assert request(srv.url, "POST", "/api/v1/ingest", wtok, body)[0] == 200
    assert srv.proc.returncode == 0
    time.sleep(0.5)
    assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kids)
    assert len(_points(rid, "x")) == 10


def test_gzip_body_from_a_file_of_many_runs(server, wtok):
    """Many runs and keys in one compressed request (what a remote client batches)."""
    url = server.url
    ids = [_run(url, wtok, experiment="many") for _ in range(20)]
    body = {
        "runs": [{"id": r, "chunks": [_chunk(f"k{j}", 0, 0, 200) for j in range(5)]} for r in ids]
    }
    raw = gzip.compress(json.dumps(body).encode())
    st, out = request(
        url, "POST", "/api/v1/ingest", wtok, raw=raw, headers={"Content-Encoding": "gzip"}
    )
    assert st == 200 and out["points"] == 20 * 5 * 200
    assert mj.metrics(ids).height == 20_000


def test_tls_with_certfile_and_keyfile(child_env, tmp_path, wtok):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    ctx = ssl.create_default_context(cafile=str(cert))
    with Server(
        child_env, tmp_path, "--certfile", str(cert), "--keyfile", str(key), ctx=ctx
    ) as srv:
        assert srv.url.startswith("https://")
        st, out = request(srv.url, "GET", "/api/v1/runs", wtok, ctx=ctx)
        assert st == 200 and "runs" in out
        # plain HTTP on the TLS port gets no answer
        with pytest.raises(OSError):
            request(srv.url.replace("https://", "http://"), "GET", "/health")


def test_a_quiet_remote_run_shows_crashed_until_it_logs_again(server, wtok, monkeypatch):
    url = server.url
    rid = _run(url, wtok)
    body = {"runs": [{"id": rid, "chunks": [_chunk("loss", 0, 0, 5)]}]}
    assert request(url, "POST", "/api/v1/ingest", wtok, body)[0] == 200
    # the server's process is not the run's owner: only its heartbeat tells it is alive
    assert mj.get_run(rid)["status"] == "running"
    monkeypatch.setenv("MLOPS_JUPYTER_STALE_AFTER", "2")
    time.sleep(2.5)
    assert mj.runs()["status"].to_list() == ["crashed"]
    body = {"runs": [{"id": rid, "chunks": [_chunk("loss", 1, 5, 5)]}]}
    assert request(url, "POST", "/api/v1/ingest", wtok, body)[0] == 200
    d = mj.get_run(rid)
    assert d["status"] == "running" and d["end_time"] is None
    assert request(url, "POST", f"/api/v1/runs/{rid}/end", wtok, {})[0] == 200
    monkeypatch.delenv("MLOPS_JUPYTER_STALE_AFTER")
    assert mj.get_run(rid)["status"] == "finished" and len(_points(rid, "loss")) == 10


def test_cli_errors_are_clear(server, child_env, tmp_path):
    busy = cli(child_env, "server", "--port", str(server.port), check=False)
    assert busy.returncode == 2 and "cannot listen" in busy.stderr
    for args in (["--certfile", str(tmp_path / "no.pem")], ["--keyfile", "k"]):
        p = cli(child_env, "server", "--port", "0", *args, check=False)
        assert p.returncode == 2 and "certfile" in p.stderr and "Traceback" not in p.stderr
    p = cli(child_env, "server", "--port", "0", "--certfile", "a", "--keyfile", "b", check=False)
    assert p.returncode == 2 and "cannot load" in p.stderr
    p = cli(
        child_env, "server", "token", "add", "x", "--scope", "read", "--expires", "3q", check=False
    )
    assert p.returncode == 2 and "duration" in p.stderr
