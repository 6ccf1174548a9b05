"""`import mlops_jupyter as mj` against a running `mlops-jupyter server`
(MLOPS_JUPYTER_STORE=http://..., MLOPS_JUPYTER_TOKEN): a real server process on 127.0.0.1
over the test's store (SQLite, or PostgreSQL in the CI's postgres suites), real client
processes, the store then read directly."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from trackserver_helpers import Server

import mlops_jupyter as mj
from mlops_jupyter.errors import StoreError
from mlops_jupyter.remote import RemoteUnsupportedError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(child_env, tmp_path):
    # a small body limit: the client's bigger batches are answered 413 and sent in halves
    with Server(child_env, tmp_path, "--max-body-mb", "1") as s:
        yield s


def _token(store_path, name: str, scope: str) -> str:
    # made in-process (the CLI's `server token add` is tested in test_trackserver.py):
    # a second interpreter per test would double the setup time
    from mlops_jupyter.store import open_store, tokens

    return tokens.add(open_store(store_path), name, scope)


@pytest.fixture
def wtok(store_path):
    return _token(store_path, "writer", "write")


@pytest.fixture
def remote_env(child_env, server, wtok, tmp_path) -> dict[str, str]:
    """Environment of a client process logging through the server."""
    env = dict(child_env)
    env.update(
        MLOPS_JUPYTER_STORE=server.url,
        MLOPS_JUPYTER_TOKEN=wtok,
        MLOPS_JUPYTER_SPOOL_DIR=str(tmp_path / "spool"),
        MLOPS_JUPYTER_EXIT_WAIT="1",
        MLOPS_JUPYTER_FLUSH_INTERVAL="0.05",
    )
    return env


@pytest.fixture
def remote(monkeypatch, remote_env):
    """This test process logs through the server until the test ends."""
    for k in ("MLOPS_JUPYTER_STORE", "MLOPS_JUPYTER_TOKEN", "MLOPS_JUPYTER_SPOOL_DIR"):
        monkeypatch.setenv(k, remote_env[k])
    yield remote_env["MLOPS_JUPYTER_STORE"]


def _client(env: dict[str, str], code: str, *args: str, timeout: float = 60) -> str:
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""


def _series(run_id: str, key: str) -> list[tuple[int, float]]:
    df = mj.metrics(run_id, key)
    return list(zip(df["step"].to_list(), df["value"].to_list()))


SCRIPT = """
import sys, mlops_jupyter as mj
with mj.start_run("job", experiment="remote", params={"lr": 0.01, "layers": [2, 3]},
                  tags={"team": "a"}) as run:
    for i in range(100_000):
        mj.log_metric("loss", 1.0 / (i + 1), step=i)
    mj.log(acc=0.5)
    mj.log(acc=float("nan"))
    mj.log_params({"bs": 32})
    mj.set_tags({"stage": "dev"})
print(run.id)
"""


def test_a_script_logs_through_the_server_exactly(remote_env, tmp_path):
    rid = _client(remote_env, SCRIPT)
    assert not list((tmp_path / "spool").rglob("*.spool"))  # never offline
    # the store, opened directly by this test process
    d = mj.get_run(rid)
    assert d["status"] == "finished" and d["experiment"] == "remote" and d["name"] == "job"
    assert d["params"] == {"lr": 0.01, "layers": [2, 3], "bs": 32}
    assert d["tags"] == {"team": "a", "stage": "dev"}
    assert _series(rid, "loss") == [(i, 1.0 / (i + 1)) for i in range(100_000)]
    acc = _series(rid, "acc")
    assert acc[0] == (0, 0.5) and acc[1][0] == 1 and math.isnan(acc[1][1])


TRAIN = """
import os, sys, time, mlops_jupyter as mj
stop = sys.argv[1]
worst = 0.0
n = 0
with mj.start_run("train", experiment="remote") as run:
    print(run.id, flush=True)
    while not os.path.exists(stop):
        for _ in range(1000):
            t = time.perf_counter()
            mj.log_metric("loss", float(n), step=n)
            worst = max(worst, time.perf_counter() - t)
            n += 1
print(n, worst, flush=True)
"""


def test_server_killed_and_restarted_mid_training(server, remote_env, tmp_path):
    stop = tmp_path / "stop"
    env = dict(remote_env, MLOPS_JUPYTER_EXIT_WAIT="30")
    p = subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(stop)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rid = p.stdout.readline().strip()
        assert rid, p.stderr.read()
        time.sleep(0.5)
        server.kill()  # SIGKILL mid-training: the client keeps logging at full speed
        time.sleep(1.0)
        server.start()
        time.sleep(0.5)
        stop.touch()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    n, worst = out.split()
    n, worst = int(n), float(worst)
    assert p.returncode == 0, err
    # never blocked on the network: the worst call is a local pack of the buffer
    assert worst < 0.25, worst
    pts = _series(rid, "loss")
    assert len(pts) == n and pts == [(i, float(i)) for i in range(n)]
    assert mj.get_run(rid)["status"] == "finished"
    print(f"points: {n}, worst log call: {worst * 1e3:.2f} ms")


SPOOLER = """
import os, sys, time, mlops_jupyter as mj
go = sys.argv[1]
run = mj.start_run("offline", experiment="remote", params={"a": 1})
print(run.id, flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
for i in range(5000):
    run.log_metric("loss", float(i))
mj.log_params({"b": 2})
run.end("finished")
"""


def test_a_process_exiting_while_the_server_is_down_is_replayed_by_the_next(
    server, remote_env, tmp_path, store_path
):
    go = tmp_path / "go"
    p = subprocess.Popen(
        [sys.executable, "-c", SPOOLER, str(go)],
        env=remote_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rid = p.stdout.readline().strip()
    assert rid, p.stderr.read()
    server.stop()
    go.touch()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "sent by the next process" in err  # the exit warning names the spool
    spools = list((tmp_path / "spool").rglob("*.spool"))
    assert len(spools) == 1 and spools[0].stat().st_size > 0
    assert mj.get_run(rid)["status"] != "finished"  # the end did not reach the store yet

    server.start()
    # a client whose token may only read leaves it alone, and does not wait for it at exit
    reader = dict(remote_env, MLOPS_JUPYTER_TOKEN=_token(store_path, "reader", "read"))
    reader.pop("MLOPS_JUPYTER_EXIT_WAIT")  # the default, 30 s
    t = time.monotonic()
    _client(reader, "import mlops_jupyter as mj; print(mj.runs().height)")
    assert time.monotonic() - t < 20 and list((tmp_path / "spool").rglob("*.spool"))
    # any later client of the same server replays what it finds (here: a read)
    _client(remote_env, "import mlops_jupyter as mj; print(mj.runs().height)")
    assert not list((tmp_path / "spool").rglob("*.spool"))
    d = mj.get_run(rid)
    assert d["status"] == "finished" and d["params"] == {"a": 1, "b": 2}
    assert _series(rid, "loss") == [(i, float(i)) for i in range(5000)]
    # a second replay (the file is gone) and a second client change nothing
    _client(remote_env, "import mlops_jupyter as mj; print(mj.runs().height)")
    assert len(_series(rid, "loss")) == 5000


def test_a_second_process_logging_to_the_same_run_is_not_skipped(remote_env):
    rid = _client(
        remote_env,
        """
        import mlops_jupyter as mj
        run = mj.start_run("shared", experiment="remote")
        for i in range(100):
            run.log_metric("loss", float(i), step=i)
        mj.flush()
        print(run.id)
        import os; os._exit(0)  # leaves the run open
        """,
    )
    # another process appends to it through the raw API: its seqs start elsewhere
    _client(
        remote_env,
        f"""
        import mlops_jupyter as mj
        from mlops_jupyter.remote.api import RemoteRun, remote_store
        from mlops_jupyter.remote.sender import remote_writer
        import os
        store = remote_store(os.environ["MLOPS_JUPYTER_STORE"])
        w = remote_writer(store)
        run = RemoteRun(store, w, w.register({rid!r}), {rid!r}, "shared", "remote")
        for i in range(100, 200):
            run.log_metric("loss", float(i), step=i)
        run.end("finished")
        """,
    )
    assert _series(rid, "loss") == [(i, float(i)) for i in range(200)]


def test_wrong_and_read_tokens_are_clear_errors(remote, store_path, monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", "mjt_wrong-secret")
    with pytest.raises(StoreError, match="refused the token") as e:
        mj.start_run("x")
    assert remote in str(e.value) and "wrong-secret" not in str(e.value)
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", _token(store_path, "reader", "read"))
    with pytest.raises(StoreError, match="may not log.*scope write"):
        mj.start_run("x")
    monkeypatch.delenv("MLOPS_JUPYTER_TOKEN")
    with pytest.raises(StoreError, match="MLOPS_JUPYTER_TOKEN is not set"):
        mj.start_run("x")
    assert mj.active_run() is None


def test_a_refused_batch_warns_once_and_is_dropped(remote):
    from mlops_jupyter.remote.api import remote_store
    from mlops_jupyter.remote.sender import remote_writer

    w = remote_writer(remote_store(remote))
    ghost = w.register("no-such-run")  # the server answers 404 for it
    w.q.stage.append((ghost, "loss", None, 1.0, time.time()))
    t = time.monotonic()
    with pytest.warns(RuntimeWarning, match="refused.*no-such-run"):
        w.flush()
    assert time.monotonic() - t < 5 and not w.backlog()
    w.flush()  # nothing is left to send again
    assert not w.backlog() and w.pending() == 0


def test_reads_through_the_server_equal_the_store(remote_env, monkeypatch):
    rid = _client(remote_env, SCRIPT)
    _client(
        remote_env,
        """
        import mlops_jupyter as mj
        with mj.start_run("other", experiment="b") as r:
            mj.log(loss=1.0, step=3)
        print(r.id)
        """,
    )
    local_runs, local_pts = mj.runs(), mj.metrics(rid)
    local_b = mj.runs(experiment="b")
    local_detail = mj.get_run("job")
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", remote_env["MLOPS_JUPYTER_STORE"])
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", remote_env["MLOPS_JUPYTER_TOKEN"])
    assert mj.runs().equals(local_runs)
    assert mj.runs(experiment="b").equals(local_b)
    assert mj.metrics(rid).equals(local_pts)
    assert mj.metrics(rid, "acc").height == 2
    remote_detail = mj.get_run("job")  # a name, as locally
    for k in ("id", "name", "experiment", "status", "params", "tags"):
        assert remote_detail[k] == local_detail[k]
    # the CLI's read commands too
    p = subprocess.run(
        [sys.executable, "-m", "mlops_jupyter", "runs", "--json"],
        env=remote_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert [r["id"] for r in json.loads(p.stdout)] == local_runs["id"].to_list()


def test_features_that_need_the_store_refuse_clearly(remote, monkeypatch):
    from mlops_jupyter import registry

    with mj.start_run("r", experiment="remote") as run:
        # artifacts and events go through the server (tests/test_remote_files.py)
        assert mj.log_artifact(__file__) == Path(__file__).name
        assert isinstance(run.add_event("note", "x"), int)
        mj.log(loss=1.0)
    # the model registry goes through the server (tests/test_remote_registry.py)
    assert registry.models().columns[0] == "name"
    # the server resolves run references (tests/test_remote_data_more.py); a store row id
    # of this process's own is still refused
    assert mj.tracking.resolve_run("r") > 0
    with pytest.raises(RemoteUnsupportedError, match="store_id"):
        run.store_id  # noqa: B018
    with pytest.raises(RemoteUnsupportedError, match="postgresql://"):
        run.store.artifacts  # noqa: B018
    # the sidebar forwards to the server instead (tests/test_sidebar_remote.py)
    assert mj.runs()["status"].to_list() == ["finished"]
    # nested runs are children of the active run, as locally
    with mj.start_run("parent", experiment="remote") as parent:
        with mj.start_run("child", experiment="remote") as child:
            mj.log(loss=2.0)
    assert mj.get_run(child.id)["parent_id"] == parent.id
    # a quiet run sends heartbeats (every minute; here at every flush)
    from mlops_jupyter.remote import sender

    monkeypatch.setattr(sender, "BEAT_S", 0.0)
    with mj.start_run("quiet", experiment="remote") as quiet:
        quiet.flush()
        quiet.flush()
        assert mj.get_run(quiet.id)["status"] == "running"


def _self_signed(cert: Path, key: Path) -> None:
    """A certificate for 127.0.0.1 and its key, made with the `cryptography` package."""
    import datetime
    import ipaddress

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(k, hashes.SHA256())
    )
    cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_https_with_a_private_ca(child_env, tmp_path, wtok, monkeypatch):
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    _self_signed(cert, key)
    ctx = ssl.create_default_context(cafile=str(cert))
    with Server(child_env, tmp_path, "--certfile", str(cert), "--keyfile", str(key), ctx=ctx) as s:
        monkeypatch.setenv("MLOPS_JUPYTER_STORE", s.url)
        monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", wtok)
        monkeypatch.setenv("MLOPS_JUPYTER_SPOOL_DIR", str(tmp_path / "spool"))
        with pytest.raises(StoreError, match="TLS"):
            mj.start_run("untrusted")  # the self-signed cert is not a system CA
        monkeypatch.setenv("MLOPS_JUPYTER_CA", str(cert))
        with mj.start_run("tls", experiment="remote") as run:
            mj.log(loss=0.5)
        assert mj.runs()["name"].to_list() == ["tls"]
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(child_env["MLOPS_JUPYTER_STORE"]))
    assert _series(run.id, "loss") == [(0, 0.5)]
    assert mj.get_run(run.id)["status"] == "finished"
