"""The loop's watcher on a real store: a tiny training script as the pipeline, real torch
models, a real local HTTP receiver for the notifications. A new data version retrains,
gates and promotes; a worse candidate is stopped and notified; a drift alert raised by
serving's own function and a schedule fire their rules; a signal is handled once across a
restart; approvals hold a promotion until decided."""

from __future__ import annotations

import sys
import textwrap
import threading
from http.server import HTTPServer

import numpy as np
import polars as pl
import pytest
from loop_helpers import Receiver as _Receiver
from loop_helpers import clf as _clf

import mlops_jupyter as mj
from mlops_jupyter.cli import main as cli_main
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.loop.triggers import load_config, parse_every
from mlops_jupyter.loop.watch import poll
from mlops_jupyter.store import loop_state
from mlops_jupyter.tracking.api import current_store

torch = pytest.importorskip("torch")  # the compatibility venvs have no torch

_RNG = np.random.default_rng(3)
N = 4000
X = _RNG.normal(size=(N, 2)).astype(np.float32)
Y = (X[:, 0] + 0.3 * _RNG.normal(size=N) > 0).astype(np.int64)

TRAIN = """
import os, sys
import torch
import mlops_jupyter as mj

w1 = float(sys.argv[1])
m = torch.nn.Linear(2, 2, bias=False)
with torch.no_grad():
    m.weight[:] = torch.tensor([[0.0, 0.0], [1.0, w1]])
with mj.start_run("train", tags={"loop.signal": os.environ["MLOPS_JUPYTER_LOOP_SIGNAL"]}):
    if len(sys.argv) > 2 and sys.argv[2]:
        mj.data.version(sys.argv[2], name="train-data")
    mj.register_model("clf", m)
"""


@pytest.fixture(scope="module")
def receiver():
    srv = HTTPServer(("127.0.0.1", 0), _Receiver)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


@pytest.fixture
def hook(receiver):
    _Receiver.got.clear()
    return f"http://127.0.0.1:{receiver.server_address[1]}/hook", _Receiver.got


@pytest.fixture
def files(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    pl.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "y": Y}).write_parquet(tmp_path / "eval.parquet")
    pl.DataFrame({"x0": X[:500, 0], "x1": X[:500, 1], "y": Y[:500]}).write_parquet(
        tmp_path / "train.parquet"
    )
    (tmp_path / "rules.toml").write_text(
        '[[rule]]\ntype = "not_worse"\nmetric = "accuracy"\nby = 0.01\n'
    )
    return tmp_path


def _config(tmp_path, url: str, body: str) -> str:
    p = tmp_path / "loop.toml"
    p.write_text(f'[[webhook]]\nurl = "{url}"\n\n' + textwrap.dedent(body))
    return str(p)


def _production(w1: float = 0.5) -> int:
    with mj.start_run("initial"):
        v = mj.register_model("clf", _clf(w1))
    mj.promote_model("clf", v, "staging")
    mj.promote_model("clf", v, "production")
    return v


def _prod() -> int:
    f = mj.registry.versions("clf")
    return f.filter(pl.col("stage") == "production")["version"].to_list()[0]


def _retrain_rule(w1: float, approval: bool = False) -> str:
    return f"""
    [[rule]]
    name = "fresh-data"
    on = "new_data"
    dataset = "train-data"
    model = "clf"
    retrain = ["{{python}}", "train.py", "{w1}", "{{data_path}}"]
    do = ["retrain", "register", "gate", "promote"]
    gate_rules = "rules.toml"
    gate_data = "eval.parquet"
    approval = {"true" if approval else "false"}
    """


def test_new_data_retrains_gates_promotes_once(files, hook, monkeypatch):
    url, got = hook
    monkeypatch.chdir(files)
    _production()
    mj.data.version(str(files / "train.parquet"), name="train-data")
    cfg = _config(files, url, _retrain_rule(0.0))
    out = poll(cfg)
    assert [o["state"] for o in out] == ["done"], loop_state.signals(current_store())
    assert _prod() == 2
    sig = out[0]["signal"]
    assert sig.startswith("data:")
    # every step is on a tracked run naming the signal, and the promotion says why
    (rid,) = mj.runs(experiment="loop")["id"].to_list()
    run = mj.get_run(rid)
    assert run["tags"]["loop.signal"] == sig and run["status"] == "finished"
    steps = [e["data"]["step"] for e in run["events"] if e["kind"] == "loop_step"]
    assert steps == ["retrain", "register", "gate", "promote"]
    hist = mj.model_history("clf").filter(pl.col("version") == 2)
    assert any(sig in (r or "") for r in hist["reason"].to_list())
    assert got == []
    # handled once: the same watcher, then a restarted one, do nothing more
    assert poll(cfg) == []
    assert poll(load_config(cfg)) == []
    # and a second claim of the same signal loses the compare-and-set
    assert not loop_state.claim(current_store(), "fresh-data", sig, {}, "other")


def test_worse_candidate_is_stopped_and_notified(files, hook, monkeypatch):
    url, got = hook
    monkeypatch.chdir(files)
    _production()
    mj.data.version(str(files / "train.parquet"), name="train-data")
    out = poll(_config(files, url, _retrain_rule(3.0)))
    assert [o["state"] for o in out] == ["failed"]
    assert _prod() == 1  # not promoted
    (s,) = loop_state.signals(current_store())
    assert s["detail"]["reason"].startswith("gate failed")
    assert [e["event"]["kind"] for e in got] == ["gate_failed"]
    assert got[0]["event"]["version"] == 2 and got[0]["event"]["rule"] == "fresh-data"


def test_approval_waits_then_promotes_or_stops(files, hook, monkeypatch):
    url, got = hook
    monkeypatch.chdir(files)
    _production()
    mj.data.version(str(files / "train.parquet"), name="train-data")
    cfg = _config(files, url, _retrain_rule(0.0, approval=True))
    assert [o["state"] for o in poll(cfg)] == ["waiting"]
    assert _prod() == 1
    assert [e["event"]["kind"] for e in got] == ["approval_needed"]
    assert poll(cfg) == [] and len(got) == 1  # still waiting, notified once
    assert cli_main(["approve", "clf", "--version", "2", "--reason", "looks right"]) == 0
    assert [o["state"] for o in poll(cfg)] == ["done"]
    assert _prod() == 2
    # a rejected candidate stops its chain, audited
    pl.DataFrame({"x0": X[:300, 0], "x1": X[:300, 1], "y": Y[:300]}).write_parquet(
        files / "train.parquet"
    )
    mj.data.version(str(files / "train.parquet"), name="train-data")
    assert [o["state"] for o in poll(cfg)] == ["waiting"]
    mj.approve("clf", 3, reject=True, reason="not this week")
    assert [o["state"] for o in poll(cfg)] == ["rejected"]
    assert _prod() == 2
    actions = mj.model_history("clf")["action"].to_list()
    assert "approve" in actions and "reject" in actions


def test_drift_alert_and_schedule_fire_their_rules(files, hook, monkeypatch):
    from mlops_jupyter.serving.input_drift import alert

    url, got = hook
    monkeypatch.chdir(files)
    v = _production()
    body = """
    [[rule]]
    name = "on-drift"
    on = "drift"
    model = "clf"
    do = ["retrain"]
    retrain = ["{python}", "-c", "pass"]

    [[rule]]
    name = "hourly"
    on = "schedule"
    every = "1h"
    model = "clf"
    do = ["retrain"]
    retrain = ["{python}", "-c", "import sys; sys.exit(3)"]
    """
    cfg = load_config(_config(files, url, body))
    t = 1_800_000_000.0
    out = poll(cfg, now=t)
    assert [(o["rule"], o["state"]) for o in out] == [("hourly", "failed")]
    assert [e["event"]["kind"] for e in got] == ["loop_failed"]
    d = {"columns": [{"column": "x0", "drifted": True}, {"column": "x1", "drifted": False}]}
    assert alert(current_store(), "clf", v, "main", t - 60, t, d, "ref")
    out = poll(cfg, now=t + 10)
    assert [(o["rule"], o["state"]) for o in out] == [("on-drift", "done")]
    assert out[0]["signal"] == f"drift:{v}:main:{t - 60:.0f}"
    assert poll(cfg, now=t + 20) == []
    assert [o["rule"] for o in poll(cfg, now=t + 3600)] == ["hourly"]


def test_metric_decay_fires_once_per_decayed_value(files, hook, monkeypatch):
    url, got = hook
    monkeypatch.chdir(files)
    _production()
    body = """
    [[rule]]
    name = "decay"
    on = "metric_decay"
    model = "clf"
    experiment = "feedback"
    metric = "accuracy"
    threshold = 0.8
    do = ["retrain"]
    retrain = ["{python}", "-c", "pass"]
    """
    cfg = load_config(_config(files, url, body))
    with mj.start_run("feedback-1", experiment="feedback"):
        mj.log(0, accuracy=0.9)
    assert poll(cfg) == []  # not decayed
    with mj.start_run("feedback-2", experiment="feedback"):
        mj.log(0, accuracy=0.7)
    assert [o["state"] for o in poll(cfg)] == ["done"]
    assert poll(cfg) == []
    (s,) = loop_state.signals(current_store(), "decay")
    assert s["detail"]["info"]["value"] == pytest.approx(0.7)


def test_canary_step_waits_for_the_rollout(files, hook, monkeypatch):
    """The canary goes through serving's rollout API; its end (here by hand, as
    `mlops-jupyter rollout promote` / `rollback`) lets the chain promote or stop it."""
    url, got = hook
    monkeypatch.chdir(files)
    _production()
    body = """
    [[rule]]
    name = "canary"
    on = "schedule"
    every = "1h"
    model = "clf"
    do = ["retrain", "register", "canary", "promote"]
    retrain = ["{python}", "train.py", "0.0", ""]
    ramp = "10,50,100"
    canary_every = "1m"
    """
    cfg = load_config(_config(files, url, body))
    t = 1_800_000_000.0
    assert [o["state"] for o in poll(cfg, now=t)] == ["waiting"]  # v2 at 10 %
    assert cli_main(["rollout", "show", "clf"]) == 0
    assert poll(cfg, now=t + 1) == []  # still ramping
    assert cli_main(["rollout", "promote", "clf"]) == 0
    assert [o["state"] for o in poll(cfg, now=t + 2)] == ["done"]
    assert _prod() == 2
    # a rolled-back canary stops the chain, notified
    assert [o["state"] for o in poll(cfg, now=t + 3600)] == ["waiting"]  # v3
    assert cli_main(["rollout", "rollback", "clf", "--reason", "errors"]) == 0
    assert [o["state"] for o in poll(cfg, now=t + 3601)] == ["failed"]
    assert _prod() == 2
    assert [e["event"]["kind"] for e in got] == ["loop_failed"]
    assert "rolled back" in got[0]["event"]["reason"] or "rollback" in got[0]["event"]["reason"]


def test_two_watchers_run_a_signal_once(files, hook, monkeypatch, child_env, python):
    import subprocess

    url, _ = hook
    monkeypatch.chdir(files)
    body = """
    [[rule]]
    name = "tick"
    on = "schedule"
    every = "1d"
    model = "clf"
    do = ["retrain"]
    retrain = ["{python}", "-c", "import time; time.sleep(0.5)"]
    """
    cfg = _config(files, url, body)
    _production()
    argv = [python, "-m", "mlops_jupyter", "watch", "--config", cfg, "--once"]
    procs = [subprocess.Popen(argv, env=child_env, stdout=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum("tick: schedule:" in o for o in outs) == 1, outs
    assert len(loop_state.signals(current_store(), "tick")) == 1
    assert mj.runs(experiment="loop").height == 1


def test_cli_once_and_bad_config(files, hook, monkeypatch, capsys):
    url, _ = hook
    monkeypatch.chdir(files)
    _production()
    body = """
    [[rule]]
    name = "tick"
    on = "schedule"
    every = "30s"
    model = "clf"
    do = ["retrain"]
    retrain = ["{python}", "-c", "pass"]
    """
    assert cli_main(["watch", "--config", _config(files, url, body), "--once"]) == 0
    assert "tick: schedule:" in capsys.readouterr().out
    assert parse_every("2m") == 120.0
    with pytest.raises(InvalidInputError, match="every"):
        parse_every("soon")
    with pytest.raises(InvalidInputError, match="on must be one of"):
        load_config(_config(files, url, '[[rule]]\non = "rain"\nmodel = "clf"\n'))
    bad = '[[rule]]\non = "new_data"\nmodel = "clf"\ndo = ["retrain"]\n'
    with pytest.raises(InvalidInputError, match="retrain"):
        load_config(_config(files, url, bad))
    assert sys.executable
