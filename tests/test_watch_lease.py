"""The watcher's lease, on a real store (SQLite, or PostgreSQL in the CI's pass) and
through a real tracking server: a running signal whose owner on another host sent no
heartbeat for longer than the lease is taken back and its chain goes on from its step;
one whose owner beats is left alone; two watchers take a stale signal once; a real
watcher process keeps its signal fresh through a step longer than the lease; bad leases
are refused."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from loop_helpers import clf as _clf
from trackserver_helpers import RemoteServer, module_remote, use_remote

import mlops_jupyter as mj
from mlops_jupyter.cli import main as cli_main
from mlops_jupyter.loop.watch import poll
from mlops_jupyter.remote import loop_watch as lw
from mlops_jupyter.store import loop_state
from mlops_jupyter.tracking.api import current_store

torch = pytest.importorskip("torch")  # the compatibility venvs have no torch
pytestmark = pytest.mark.timeout(180)

# step 1 (retrain) fails if it runs: a chain taken back at step 1 must go on from step 2
RULE = """
[[rule]]
name = "far"
on = "new_data"
dataset = "never-versioned"
model = "lease-clf"
retrain = ["{python}", "-c", "raise SystemExit(3)"]
do = ["retrain", "register"]
"""


def _config(tmp_path: Path, body: str = RULE, name: str = "loop.toml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return str(p)


def _claim(store, signal: str, owner: str) -> None:
    """`signal` claimed by the watcher `owner`, which finished the retrain step."""
    detail = {"step": 1, "before": 0, "model": "lease-clf"}
    assert lw.claim(store, "far", signal, detail, owner)


def _signal(store, signal: str) -> dict:
    (s,) = [x for x in lw.signals(store, "far") if x["signal"] == signal]
    return s


def _stale_and_fresh(store, cfg: str, capsys) -> None:
    """The checks shared by a direct store and the tracking server."""
    with mj.start_run("initial"):
        mj.register_model("lease-clf", _clf(0.5))  # what the far watcher's retrain made
    _claim(store, "data:stale", "far:7")
    _claim(store, "data:fresh", "far:8")
    time.sleep(1.2)
    assert lw.beat(store, "far", "data:fresh", "far:8")  # the far watcher of it is alive
    assert poll(cfg) == []  # the default lease (600 s): both left alone
    capsys.readouterr()
    (out,) = poll(cfg, lease=1.0)
    assert (out["signal"], out["state"], out["taken_from"]) == ("data:stale", "done", "far:7")
    printed = capsys.readouterr().out
    assert "far: data:stale: taken back from far:7 (no heartbeat for 1 s), from step 2" in printed
    s = _signal(store, "data:stale")
    assert s["state"] == "done" and s["detail"]["version"] == 1  # register ran, retrain not
    assert not lw.beat(store, "far", "data:stale", "far:7")  # its old owner lost it
    # ...and cannot record a final state over the new owner's (were it alive but silent)
    assert not lw.update(store, "far", "data:stale", "failed", {"step": 1}, "far:7")
    assert _signal(store, "data:stale")["state"] == "done"
    new_owner = _signal(store, "data:stale")["owner"]
    assert lw.update(store, "far", "data:stale", "done", s["detail"], new_owner)
    f = _signal(store, "data:fresh")
    assert (f["state"], f["owner"]) == ("running", "far:8")


def test_stale_signal_taken_back_fresh_one_left_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _stale_and_fresh(current_store(), _config(tmp_path), capsys)


def test_take_back_is_compare_and_set_on_staleness(tmp_path):
    store = current_store()
    _claim(store, "data:race", "far:7")
    time.sleep(0.05)
    before = time.time()
    assert loop_state.beat(store, "far", "data:race", "far:7")
    # a beat that landed first wins: the signal is not stale before `before`
    assert (
        loop_state.take_back(store, "far", "data:race", "far:7", "a:1", stale_before=before) is None
    )
    # eight watchers at once, all seeing it stale: one takes it
    got: list = []
    go = threading.Barrier(8)

    def take(i: int) -> None:
        go.wait()
        stale = time.time() + 1
        got.append(loop_state.take_back(store, "far", "data:race", "far:7", f"w:{i}", None, stale))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(d is not None for d in got) == 1
    owner = _signal(store, "data:race")["owner"]
    assert owner.startswith("w:") and not loop_state.beat(store, "far", "data:race", "far:7")
    assert loop_state.beat(store, "far", "data:race", owner)


def test_two_watcher_processes_take_a_stale_signal_once(tmp_path, monkeypatch, child_env):
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path)
    mj.register_model("lease-clf", _clf(0.5))
    _claim(current_store(), "data:stale", "far:7")
    time.sleep(1.2)
    code = "import sys; from mlops_jupyter.loop.watch import poll; poll(sys.argv[1], lease=1.0)"
    argv = [sys.executable, "-c", code, cfg]
    procs = [
        subprocess.Popen(argv, env=child_env, cwd=tmp_path, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum("taken back from far:7" in o for o in outs) == 1, outs
    s = _signal(current_store(), "data:stale")
    assert s["state"] == "done" and len(s["detail"]["runs"]) == 1


def test_watcher_process_beats_through_a_step_longer_than_its_lease(
    tmp_path, monkeypatch, child_env
):
    monkeypatch.chdir(tmp_path)
    body = """
    [[rule]]
    name = "slow"
    on = "schedule"
    every = "1d"
    model = "lease-clf"
    do = ["retrain"]
    retrain = ["{python}", "-c", "import time; time.sleep(16)"]
    """
    cfg = _config(tmp_path, body)
    argv = [sys.executable, "-m", "mlops_jupyter", "watch", "--config", cfg, "--once"]
    p = subprocess.Popen(
        [*argv, "--lease", "10"], env=child_env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    store = current_store()
    deadline = time.monotonic() + 60
    while not loop_state.signals(store, "slow"):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.1)
    (s,) = loop_state.signals(store, "slow")
    time.sleep(max(0.0, s["created"] + 12 - time.time()))  # past the lease, step running
    (s,) = loop_state.signals(store, "slow")
    assert s["state"] == "running" and p.poll() is None
    assert s["updated"] > s["created"] + 2 and time.time() - s["updated"] < 10
    # another watcher with the same lease leaves it with its owner
    assert poll(cfg, lease=10.0) == []
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "slow: schedule:" in out.decode() and "no longer held" not in err.decode()
    (s,) = loop_state.signals(store, "slow")
    assert (s["state"], s["owner"].rsplit(":", 1)[1]) == ("done", str(p.pid))


def test_bad_leases_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path)
    for lease in ("5", "nan", "-1"):
        capsys.readouterr()
        assert cli_main(["watch", "--config", cfg, "--once", "--lease", lease]) == 2
        assert "--lease must be a number of seconds of at least 10" in capsys.readouterr().err
    for value in ("3", '"10 minutes"', "true"):
        bad = _config(tmp_path, f"lease = {value}\n" + RULE, "bad.toml")
        assert cli_main(["watch", "--config", bad, "--once"]) == 2
        assert "lease must be a number of seconds" in capsys.readouterr().err
    ok = _config(tmp_path, "lease = 30\n" + RULE, "ok.toml")
    assert cli_main(["watch", "--config", ok, "--once"]) == 0


# -- through a real tracking server -------------------------------------------------------


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, request):
    yield from module_remote(tmp_path_factory, request, "watch-lease")


@pytest.fixture
def rs(remote_server, monkeypatch, tmp_path) -> RemoteServer:
    use_remote(monkeypatch, remote_server, tmp_path)
    monkeypatch.chdir(tmp_path)
    return remote_server


def test_lease_over_the_tracking_server(rs, tmp_path, monkeypatch, capsys):
    from mlops_jupyter.remote import loop as rloop

    store = lw.open_watch_store()
    _stale_and_fresh(store, _config(tmp_path), capsys)
    # the server's signal rows are the ones the watcher changed
    assert loop_state.signals(rs.store, "far", "done")[0]["signal"] == "data:stale"
    # bad leases and beats without write scope are refused by the server
    body = {"rule": "far", "signal": "data:fresh", "from_owner": "far:8", "owner": "x:1"}
    for lease in (0, -5, "10", True):
        with pytest.raises(Exception, match="stale_after"):
            rloop._call(rs.srv.url, "POST", "/api/v1/loop/signals/take-back",
                        {**body, "stale_after": lease}, "take back", False)  # fmt: skip
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.rtok)
    with pytest.raises(Exception, match="may not|scope"):
        lw.beat(lw.open_watch_store(), "far", "data:fresh", "far:8")
    assert _signal(rs.store, "data:fresh")["owner"] == "far:8"
    assert os.environ["MLOPS_JUPYTER_STORE"] == rs.srv.url
