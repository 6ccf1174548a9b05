"""The trial path of `mj.sweep` only appends to memory: trial runs are started without
waiting (`start_run(wait=False)`) and the background writer inserts each with its params,
points and end in one transaction. Counted, not timed: a trial that went back to a
synchronous run creation would open a store transaction per trial in the sweep's thread."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

import mlops_jupyter as mj
from mlops_jupyter.store import runs as rstore
from mlops_jupyter.tracking import api
from mlops_jupyter.tracking import pending as pmod
from mlops_jupyter.tracking import writer as wmod

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


class _Calls:
    """Store calls (write transactions and reads) per thread while `active` is set."""

    def __init__(self, store, monkeypatch) -> None:
        self.active = False
        self.main: list[str] = []
        main = threading.main_thread()
        for name in ("write", "read", "snapshot"):
            orig = getattr(store, name)

            def counted(*a, _orig=orig, _name=name, **k):
                if self.active and threading.current_thread() is main:
                    self.main.append(_name)
                return _orig(*a, **k)

            monkeypatch.setattr(store, name, counted)


def test_trials_open_no_store_transaction_in_the_sweep_thread(monkeypatch):
    store = api.current_store()
    calls = _Calls(store, monkeypatch)
    seen: list[int] = []

    def objective(trial):
        # from the first trial's start to the last trial's start: every trial's own
        # bookkeeping (its run's start, params, objective point, end) happens in between
        calls.active = True
        seen.append(trial.number)
        x = trial.suggest_float("x", -5, 5)
        mj.log(step=0, loss=x * x)
        if len(seen) == 12:
            calls.active = False
        return (x - 1) ** 2

    result = mj.sweep(objective, n_trials=12, sampler="random", seed=3, gate=False, live=False)
    assert calls.main == [], f"the trial path touched the store: {calls.main}"

    # after the sweep everything is written: each trial a finished child run with its
    # params, tags and points
    runs = result.runs()
    assert runs.height == 12
    assert set(runs["status"]) == {"finished"}
    trials = result.trials()
    assert set(trials["run_id"]) == set(runs["id"])
    assert trials["host"].null_count() == 0
    one = mj.get_run(runs["id"][0])
    assert "x" in one["params"]
    assert one["tags"]["optuna.study"] == result.study.study_name
    pts = mj.metrics(runs["id"].to_list(), ["loss", "objective"])
    assert pts.height == 24


def test_run_started_without_waiting_is_written_whole():
    parent = mj.start_run("outer", experiment="later")
    run = mj.start_run("inner", experiment="later", params={"a": 1}, tags={"t": "x"}, wait=False)
    assert run.id and run.status == "running"
    run.log(step=0, loss=1.5)
    run.log_params({"b": 2}, wait=False)
    child = mj.start_run("innermost", experiment="later", wait=False)  # parent not written yet
    child.log_metric("m", 3.0)
    child.end("failed", wait=False)
    run.end("finished", wait=False)
    # a read writes what is pending first
    df = mj.runs(experiment="later")
    by_name = {r["name"]: r for r in df.iter_rows(named=True)}
    assert by_name["inner"]["status"] == "finished"
    assert by_name["inner"]["parent_id"] == parent.id
    assert by_name["innermost"]["parent_id"] == run.id
    assert by_name["innermost"]["status"] == "failed"
    got = mj.get_run(run.id)
    assert got["params"] == {"a": 1, "b": 2} and got["tags"]["t"] == "x"
    assert mj.metrics(run.id, "loss")["value"].to_list() == [1.5]
    parent.end()


def test_store_id_writes_a_pending_run_and_events_use_it():
    run = mj.start_run("pending", wait=False)
    rid = run.store_id  # needs the row: written now
    assert rid > 0 and rstore.run_uid(api.current_store(), rid) == run.id
    run.add_event("note", "hello")
    assert mj.get_run(run.id)["events"][0]["message"] == "hello"
    run.end()
    assert mj.get_run(run.id)["status"] == "finished"


def test_pending_runs_are_bounded(monkeypatch):
    monkeypatch.setattr(pmod, "MAX_PENDING", 3)
    w = wmod.writer_for(api.current_store())
    w.interval = 3600.0  # no periodic flush: only the bound writes
    try:
        started = []
        for i in range(10):
            started.append(mj.start_run(f"r{i}", experiment="bound", wait=False))
            assert len(w._pending) <= 3
        for r in reversed(started):
            r.end(wait=False)
    finally:
        w.interval = 0.2
    assert mj.runs(experiment="bound").height == 10


def test_uid_clash_takes_a_new_id(monkeypatch):
    first = mj.start_run("first")
    first.end()
    ids = iter([first.id])
    monkeypatch.setattr(rstore, "new_uid", lambda: next(ids, "0123abcd4567"))
    second = mj.start_run("second", wait=False)
    assert second.id == first.id  # not written yet: the clash is found by the insert
    second.end()
    assert second.id == "0123abcd4567"
    df = mj.runs()
    assert set(df["name"]) >= {"first", "second"}
    assert df.filter(id=first.id)["name"].item() == "first"


def test_a_crash_before_the_flush_leaves_no_half_written_run(child_env):
    code = (
        "import os, mlops_jupyter as mj\n"
        "w = mj.start_run('kept', wait=False); w.log_metric('a', 1.0); w.end(wait=False)\n"
        "mj.flush()\n"
        "r = mj.start_run('lost', wait=False); r.log_metric('a', 1.0)\n"
        "r.log_params({'p': 1}, wait=False); r.end(wait=False)\n"
        "os._exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True)
    assert out.returncode == 3, out.stderr.decode()
    df = mj.runs()
    assert df["name"].to_list() == ["kept"]
    assert df["status"].item() == "finished"
