"""The loop's watcher through a real `mlops-jupyter server` process (real tokens, real
watcher subprocesses): a new data version is retrained (the training job logs through the
server too), registered, gated, canaried and promoted; a read token cannot claim; two
watchers over the server run a signal once; a watcher killed mid-chain with SIGKILL leaves
its signal running, and `watch retry`, the automatic take-back by a watcher on the same
host and `watch abandon` (audited) recover it, over the server and on a direct store; drift
and metric-decay signals are read through the server. One server for the module (SQLite,
or PostgreSQL in the CI's suites)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from loop_helpers import clf as _clf
from trackserver_helpers import RemoteServer, module_remote, use_remote

import mlops_jupyter as mj
from mlops_jupyter.cli import main as cli_main
from mlops_jupyter.errors import StoreError
from mlops_jupyter.loop.watch import poll
from mlops_jupyter.remote import loop as rloop
from mlops_jupyter.serving import canary as cn
from mlops_jupyter.store import loop_state
from mlops_jupyter.store import registry as rstore

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(180)

RNG = np.random.default_rng(5)
N = 2000
X = RNG.normal(size=(N, 2)).astype(np.float32)
Y = (X[:, 0] + 0.3 * RNG.normal(size=N) > 0).astype(np.int64)

# the pipeline: waits (as a long training would) until the file `go` exists, then
# registers argv[1]'s model with weight argv[2]; it logs through the watcher's server
TRAIN = """
import os, sys, time
from pathlib import Path
if not Path("go").exists():
    Path("started").write_text(os.environ["MLOPS_JUPYTER_LOOP_SIGNAL"])
    time.sleep(120)
import torch
import mlops_jupyter as mj

m = torch.nn.Linear(2, 2, bias=False)
with torch.no_grad():
    m.weight[:] = torch.tensor([[0.0, 0.0], [1.0, float(sys.argv[2])]])
with mj.start_run("train", tags={"loop.signal": os.environ["MLOPS_JUPYTER_LOOP_SIGNAL"]}):
    mj.register_model(sys.argv[1], m)
"""


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, request):
    yield from module_remote(tmp_path_factory, request, "remote-watch")


@pytest.fixture
def rs(remote_server, monkeypatch, tmp_path) -> RemoteServer:
    use_remote(monkeypatch, remote_server, tmp_path)
    root = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    (tmp_path / "train.py").write_text(TRAIN)
    pl.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "y": Y}).write_parquet(tmp_path / "eval.parquet")
    (tmp_path / "rules.toml").write_text(
        '[[rule]]\ntype = "not_worse"\nmetric = "accuracy"\nby = 0.01\n'
    )
    monkeypatch.chdir(tmp_path)
    return remote_server


def _as(monkeypatch, tok: str) -> None:
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", tok)


def _config(name: str, body: str) -> str:
    p = Path(f"{name}.toml")
    p.write_text(textwrap.dedent(body))
    return str(p.resolve())


def _new_data(name: str, n: int) -> str:
    """A new version of dataset `name` (n rows), made over the server."""
    p = Path(f"{name}-{n}.parquet")
    pl.DataFrame({"x0": X[:n, 0], "x1": X[:n, 1], "y": Y[:n]}).write_parquet(p)
    return mj.data.version(str(p), name=name).id


def _watcher(cfg: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "mlops_jupyter", "watch", "--config", cfg, "--once"]
    return subprocess.Popen(
        argv, env=dict(os.environ), stdout=subprocess.PIPE, start_new_session=True
    )


def _refused(argv: list[str], match: str, capsys) -> None:
    """The command exits 2 with an error naming `match`."""
    capsys.readouterr()
    assert cli_main(argv) == 2
    assert match in capsys.readouterr().err


def _kill_mid_retrain(cfg: str) -> tuple[str, str]:
    """Start a real watcher, SIGKILL it (and its retraining job) once the job runs: the
    signal's key and the dead watcher's owner."""
    Path("go").unlink(missing_ok=True)
    Path("started").unlink(missing_ok=True)
    p = _watcher(cfg)
    deadline = time.monotonic() + 60
    while not Path("started").exists():
        assert p.poll() is None and time.monotonic() < deadline, "the watcher ended early"
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)  # reaped: its pid is no longer alive
    return Path("started").read_text(), f"{socket.gethostname()}:{p.pid}"


def test_watcher_over_the_server_retrains_gates_canaries_promotes(rs, monkeypatch, capsys):
    with mj.start_run("initial"):
        v1 = mj.register_model("clf", _clf(0.5))
    mj.promote_model("clf", v1, "staging")
    _as(monkeypatch, rs.atok)  # the watcher promotes: admin, as moving into production is
    mj.promote_model("clf", v1, "production")
    _new_data("train-data", 500)
    Path("go").write_text("")
    cfg = _config(
        "fresh",
        """
        [[rule]]
        name = "fresh-data"
        on = "new_data"
        dataset = "train-data"
        model = "clf"
        retrain = ["{python}", "train.py", "clf", "0.0"]
        do = ["retrain", "register", "gate", "canary", "promote"]
        gate_rules = "rules.toml"
        gate_data = "eval.parquet"
        ramp = "10,100"
        """,
    )
    (out,) = poll(cfg)
    assert out["state"] == "waiting", loop_state.signals(rs.store)[0]["detail"].get("reason")
    row = rs.store and cn.show(rs.store, "clf")
    assert row["state"] == "ramping" and row["layout"]["canary"]["version"] == 2
    assert poll(cfg) == []  # still ramping
    cn.promote(rs.store, "clf", "serving controller")  # as the rollout controller would
    assert [o["state"] for o in poll(cfg)] == ["done"]
    # what the server's store holds: v2 in production, the signal done, the job's run
    prod = [
        r["version"] for r in rstore.list_versions(rs.store, "clf") if r["stage"] == "production"
    ]
    assert prod == [2]
    (s,) = loop_state.signals(rs.store, "fresh-data")
    assert s["state"] == "done" and s["signal"] == out["signal"] and s["detail"]["gate"]
    assert any(out["signal"] in (r[7] or "") for r in rstore.audit_log(rs.store, "clf"))
    # the retraining job logged through the server, its run naming the signal
    runs = mj.runs()
    jobs = [mj.get_run(i) for i, n in zip(runs["id"], runs["name"]) if n == "train"]
    assert [r["tags"].get("loop.signal") for r in jobs] == [out["signal"]]
    assert poll(cfg) == []  # handled once
    # a read token cannot claim a signal
    _as(monkeypatch, rs.rtok)
    with pytest.raises(StoreError, match="may not"):
        rloop.claim(rs.srv.url, "fresh-data", "data:other", {}, "someone:1")
    _refused(["watch", "retry", "fresh-data", out["signal"]], "may not", capsys)


def test_two_watchers_over_the_server_run_a_signal_once(rs, monkeypatch):
    cfg = _config(
        "race",
        """
        [[rule]]
        name = "tick"
        on = "schedule"
        every = "1d"
        model = "clf"
        do = ["retrain"]
        retrain = ["{python}", "-c", "import time; time.sleep(0.5)"]
        """,
    )
    procs = [_watcher(cfg) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum("tick: schedule:" in o for o in outs) == 1, outs
    (s,) = loop_state.signals(rs.store, "tick")
    assert s["state"] == "done" and len(s["detail"]["runs"]) == 1


def test_killed_watcher_retry_take_back_and_abandon(rs, monkeypatch, capsys):
    cfg = _config(
        "slow",
        """
        [[rule]]
        name = "slow"
        on = "new_data"
        dataset = "slow-data"
        model = "clf2"
        retrain = ["{python}", "train.py", "clf2", "0.0"]
        do = ["retrain", "register"]
        """,
    )
    # 1. killed mid-retrain: the signal stays running; `watch retry` hands it to the next poll
    _new_data("slow-data", 300)
    sig, dead = _kill_mid_retrain(cfg)
    (s,) = loop_state.signals(rs.store, "slow")
    assert (s["signal"], s["state"], s["owner"]) == (sig, "running", dead)
    capsys.readouterr()
    assert cli_main(["watch", "signals", "--rule", "slow", "--state", "running"]) == 0
    assert sig in capsys.readouterr().out
    assert cli_main(["watch", "retry", "slow", sig]) == 0
    assert "from step 1" in capsys.readouterr().out
    Path("go").write_text("")
    assert poll(cfg) == [{"rule": "slow", "signal": sig, "state": "done"}]
    assert [r["version"] for r in rstore.list_versions(rs.store, "clf2")] == [1]
    # who retried is in the signal's detail (and in the audit log once the model exists)
    (s,) = loop_state.signals(rs.store, "slow")
    assert [(r["action"], r["from"]) for r in s["detail"]["recovered"]] == [("retry", "running")]
    assert "token writer" in s["detail"]["recovered"][0]["user"]
    # 2. killed again: a watcher on the same host takes the signal back by itself
    _new_data("slow-data", 400)
    sig2, dead2 = _kill_mid_retrain(cfg)
    Path("go").write_text("")
    capsys.readouterr()
    (out,) = poll(cfg)
    assert (out["signal"], out["state"], out["taken_from"]) == (sig2, "done", dead2)
    assert f"taken back from {dead2}" in capsys.readouterr().out
    assert sorted(r["version"] for r in rstore.list_versions(rs.store, "clf2")) == [1, 2]
    # 3. a running signal of a watcher on another host is left alone; abandon it (write)
    assert rloop.claim(rs.srv.url, "slow", "data:stuck", {"step": 0, "model": "clf2"}, "far:7")
    assert poll(cfg) == []
    _refused(["watch", "abandon", "slow", "data:stuck"], "needs --reason", capsys)
    _as(monkeypatch, rs.rtok)
    _refused(["watch", "abandon", "slow", "data:stuck", "--reason", "bad data"], "may not", capsys)
    _as(monkeypatch, rs.wtok)
    assert cli_main(["watch", "abandon", "slow", "data:stuck", "--reason", "bad data"]) == 0
    s = next(x for x in loop_state.signals(rs.store, "slow") if x["signal"] == "data:stuck")
    assert s["state"] == "failed" and "bad data" in s["detail"]["reason"]
    (a,) = [r for r in rstore.audit_log(rs.store, "clf2") if r[3] == "loop_abandon"]
    assert "bad data" in a[7] and "token writer" in a[8]
    # a failed signal cannot be abandoned twice; unknown signals are clear errors
    _refused(["watch", "abandon", "slow", "data:stuck", "--reason", "again"], "is failed", capsys)
    _refused(["watch", "retry", "slow", "data:none"], "no signal", capsys)


def test_drift_and_decay_signals_over_the_server(rs, monkeypatch):
    from mlops_jupyter.serving.input_drift import alert

    with mj.start_run("train-clf3"):  # a drift alert is an event on the version's run
        v = mj.register_model("clf3", _clf(0.5))
    with mj.start_run("feedback-1", experiment="feedback3"):
        mj.log(acc=0.55)  # below the rule's threshold: decayed
    cfg = _config(
        "signals",
        """
        [[rule]]
        name = "on-drift"
        on = "drift"
        model = "clf3"
        do = ["retrain"]
        retrain = ["{python}", "-c", "pass"]

        [[rule]]
        name = "on-decay"
        on = "metric_decay"
        experiment = "feedback3"
        metric = "acc"
        threshold = 0.8
        model = "clf3"
        do = ["retrain"]
        retrain = ["{python}", "-c", "pass"]
        """,
    )
    assert [(o["rule"], o["state"]) for o in poll(cfg)] == [("on-decay", "done")]
    t = time.time()
    d = {"columns": [{"column": "x0", "drifted": True}]}
    assert alert(rs.store, "clf3", v, "main", t - 60, t, d, "ref")  # as serving raises it
    out = poll(cfg)
    assert [(o["rule"], o["signal"], o["state"]) for o in out] == [
        ("on-drift", f"drift:{v}:main:{t - 60:.0f}", "done")
    ]
    assert poll(cfg) == []


def test_recovery_on_a_direct_store(rs, monkeypatch, capsys):
    """The same commands and the take-back with the store opened directly."""
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(rs.loc))
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(rs.artifacts))
    monkeypatch.delenv("MLOPS_JUPYTER_TOKEN")
    mj.register_model("clf4", _clf(0.5))
    cfg = _config(
        "direct",
        """
        [[rule]]
        name = "direct"
        on = "new_data"
        dataset = "never-versioned"
        model = "clf4"
        do = ["retrain"]
        retrain = ["{python}", "-c", "pass"]
        """,
    )
    dead = f"{socket.gethostname()}:{_dead_pid()}"
    detail = {"step": 0, "model": "clf4"}
    assert loop_state.claim(rs.store, "direct", "data:dead", detail, dead)
    assert loop_state.claim(rs.store, "direct", "data:far", detail, "far:7")
    (out,) = poll(cfg)  # the dead owner's signal is taken back; the far one left alone
    assert (out["signal"], out["state"], out["taken_from"]) == ("data:dead", "done", dead)
    assert cli_main(["watch", "abandon", "direct", "data:far", "--reason", "stale"]) == 0
    assert cli_main(["watch", "retry", "direct", "data:far"]) == 0  # failed -> waiting
    assert poll(cfg) == [{"rule": "direct", "signal": "data:far", "state": "done"}]
    actions = [r[3] for r in rstore.audit_log(rs.store, "clf4")]
    assert actions[-2:] == ["loop_abandon", "loop_retry"]
    capsys.readouterr()
    assert cli_main(["watch", "signals", "--rule", "direct", "--json"]) == 0
    assert '"state": "done"' in capsys.readouterr().out


def _dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
