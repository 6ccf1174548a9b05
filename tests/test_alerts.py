"""Andon alerts: rule logic with synthetic readings, and end to end through the real
sampler and store (alerts stored with the run, start/end times, mj.alerts frame)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError, RunNotFoundError
from mlops_jupyter.telemetry import alerts as al
from mlops_jupyter.telemetry import sampler


@pytest.fixture(autouse=True)
def default_rules_after():
    yield
    al.set_rules(al.default_rules())


@pytest.fixture
def telemetry_on(monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "1")
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY_INTERVAL", "0.05")


def _new(**series):
    return {k: (len(v), np.arange(len(v)), np.asarray(v, float)) for k, v in series.items()}


def test_default_rules_on_synthetic_samples():
    rs = al.default_rules()
    hot = {"sys/gpu0/temp_c": 88.0, "sys/gpu1/temp_c": 60.0, "sys/mem/percent": 95.0}
    conds = al.AlertEngine.sample_conditions(hot, rs)
    assert set(conds) == {"gpu_temp:sys/gpu0/temp_c", "memory:sys/mem/percent"}
    assert conds["gpu_temp:sys/gpu0/temp_c"][0] == "GPU temperature 88 C > 85 C (sys/gpu0/temp_c)"
    assert al.AlertEngine.sample_conditions({"sys/disk/free_percent": 3.0}, rs)
    assert not al.AlertEngine.sample_conditions({"sys/disk/free_percent": 30.0}, rs)
    assert al.level_of("disk:sys/disk/free_percent", rs) == "critical"


def test_nonfinite_and_rising_rules_over_batches():
    rs = al.default_rules(loss_rising_n=4)
    eng = al.AlertEngine()
    assert eng.metric_conditions(_new(loss=[5, 4, 3], acc=[0.1, 0.2]), rs) == {}
    # rises carry over from one batch to the next
    assert eng.metric_conditions(_new(loss=[3.5, 3.6]), rs) == {}
    c = eng.metric_conditions(_new(loss=[3.7, 3.8]), rs)
    assert (
        list(c) == ["loss_rising:loss"]
        and "rose for 4 consecutive logs" in c["loss_rising:loss"][0]
    )
    assert eng.metric_conditions(_new(loss=[1.0]), rs) == {}  # a drop clears it
    c = eng.metric_conditions(_new(acc=[0.3, float("inf"), 0.4]), rs)
    assert "nonfinite:acc" in c and "became inf at step 1" in c["nonfinite:acc"][0]
    assert eng.metric_conditions(_new(acc=[0.5]), rs) == {}  # finite again: episode over
    assert "nonfinite:loss" in eng.metric_conditions(_new(loss=[float("nan")]), rs)


def test_custom_rules_and_configuration():
    al.add_rule(
        al.CallableRule("busy", lambda s: "busy!" if s.get("sys/cpu/percent", 0) > 50 else None)
    )
    assert "busy" in [r.name for r in al.rules()]
    assert (
        al.AlertEngine.sample_conditions({"sys/cpu/percent": 70.0}, al.rules())["busy"][0]
        == "busy!"
    )
    al.remove_rule("busy")
    with pytest.raises(InvalidInputError, match="no alert rule"):
        al.remove_rule("busy")
    al.configure(memory_percent=50)
    mem = next(r for r in al.rules() if r.name == "memory")
    assert mem.threshold == 50
    with pytest.raises(InvalidInputError):
        al.configure(memory=50)
    with pytest.raises(InvalidInputError, match="op"):
        al.ThresholdRule("x", "sys/*", "!=", 1)
    with pytest.raises(InvalidInputError, match="level"):
        al.ThresholdRule("x", "sys/*", ">", 1, level="loud")
    with pytest.raises(InvalidInputError, match="n must be"):
        al.RisingRule(n=1)
    with pytest.raises(InvalidInputError, match="unique"):
        al.set_rules([al.NonFiniteRule(), al.NonFiniteRule()])
    with pytest.raises(InvalidInputError, match="not an alert rule"):
        al.set_rules(["memory > 90"])


def test_a_broken_custom_rule_is_reported_not_raised():
    rule = al.CallableRule("oops", lambda s: 1 / 0)
    conds = al.AlertEngine.sample_conditions({"sys/cpu/percent": 1.0}, [rule])
    assert "division by zero" in conds["oops:error"][0]


def test_nan_metric_raises_an_alert_stored_with_the_run(telemetry_on):
    with mj.start_run("diverged") as run:
        for i in range(20):
            mj.log(step=i, loss=1.0 / (i + 1))
        mj.log(step=20, loss=float("nan"))
        # the sampler sees the point after the writer's next flush
        deadline = time.monotonic() + 10
        while mj.alerts(run).height == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        live = mj.alerts(run)
        assert live.filter(live["rule"] == "nonfinite")["active"].to_list() == [True]
    df = mj.alerts(run)
    row = df.filter(df["rule"] == "nonfinite").row(0, named=True)
    assert row["level"] == "critical" and row["kind"] == "alert"
    assert row["message"] == "loss became nan at step 20"
    assert row["end_time"] is not None and row["active"] is False
    assert row["run_id"] == run.id and row["run_name"] == "diverged"


def test_nan_logged_just_before_the_end_is_still_caught(telemetry_on):
    with mj.start_run("late") as run:
        mj.log(acc=float("-inf"))
    assert mj.alerts(run)["rule"].to_list() == ["nonfinite"]


def test_loss_rising_alert(telemetry_on):
    al.configure(loss_rising_n=5)
    with mj.start_run("rising") as run:
        for i in range(12):
            mj.log(step=i, **{"train/loss": 1.0 + i})
        time.sleep(0.3)
    df = mj.alerts(run)
    assert df["rule"].to_list() == ["loss_rising"]
    assert "train/loss rose for" in df["message"][0]


def test_threshold_alert_from_real_telemetry(telemetry_on):
    al.configure(memory_percent=0.0)  # any real machine uses more than 0 % memory
    with mj.start_run("mem") as run:
        time.sleep(0.3)
    df = mj.alerts(run, include_throttle=False)
    assert df.height == 1 and df["rule"][0] == "memory"
    assert df["message"][0].startswith("memory ") and df["level"][0] == "warning"
    # one alert per episode, not one per sample
    ev = [e for e in mj.get_run(run.id)["events"] if e["kind"] == "alert"]
    assert len(ev) == 1 and ev[0]["end_time"] >= ev[0]["start_time"]


def test_alerts_frame_for_all_runs_and_bad_refs(telemetry_on):
    assert mj.alerts().height == 0
    assert mj.alerts().columns == [
        "run_id", "run_name", "kind", "rule", "level", "message",
        "start_time", "end_time", "active", "data",
    ]  # fmt: skip
    with mj.start_run("a") as a:
        mj.log(x=float("nan"))
    with mj.start_run("b") as b:
        mj.log(y=float("nan"))
    assert sorted(mj.alerts()["run_name"].to_list()) == ["a", "b"]
    assert mj.alerts([a, b.id]).height == 2
    assert mj.alerts("b")["run_id"].to_list() == [b.id]
    with pytest.raises(RunNotFoundError):
        mj.alerts("no-such-run")


def test_logging_hot_path_is_untouched_by_alerts(telemetry_on):
    # rules run in the sampler thread: log_metric itself stays the plain buffered append
    with mj.start_run("hot path"):
        assert sampler.hub().thread is not None
        t = time.perf_counter()
        for _ in range(100_000):
            mj.log_metric("loss", 0.5)
        per_call = (time.perf_counter() - t) / 100_000
    assert per_call < 50e-6  # sanity bound only; the benchmark measures the real figure
