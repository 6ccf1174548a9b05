"""Optuna sweeps as tracked runs: optimum reached, pruning from mj.log, two processes on one
study, waiting on the machine's state, live view, and %%mlops_sweep in a real kernel."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time

import polars as pl
import pytest

import mlops_jupyter as mj

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def quadratic(trial):
    """Minimum 0 at x=2, y=-1; the logged curve decays towards it, so pruning can judge
    trials from their first steps."""
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_int("y", -5, 5)
    target = (x - 2) ** 2 + (y + 1) ** 2
    for step in range(8):
        mj.log(step=step, loss=target + 4.0 / (step + 1))
    return target


def test_sweep_reaches_optimum_and_prunes():
    # sync_pruning: decisions independent of timing, so the figures below are reproducible
    result = mj.sweep(
        quadratic, n_trials=40, pruner="median", seed=1, study="quad", sync_pruning=True
    )
    trials = result.trials()
    assert trials.height == 40
    states = trials["state"].value_counts()
    counts = dict(zip(states["state"], states["count"]))
    assert counts.get("pruned", 0) >= 5, counts
    assert counts.get("complete", 0) >= 5, counts
    # TPE lands in the optimum's neighbourhood (the search box spans values up to ~180)
    assert result.best_value < 2.5
    assert abs(result.best_params["x"] - 2) < 1.5 and abs(result.best_params["y"] + 1) <= 1

    # every trial is a child run of the sweep run, with its params and metrics
    sweep_run = mj.get_run(result.run.id)
    assert sweep_run["status"] == "finished"
    assert sweep_run["tags"]["optuna.study"] == "quad"
    assert sweep_run["params"]["best.y"] == result.best_params["y"]
    children = result.runs()
    assert children.height == 40
    assert set(children["parent_id"]) == {result.run.id}
    assert set(children["id"]) == set(trials["run_id"])
    row = children.join(trials, left_on="id", right_on="run_id").filter(
        pl.col("state") == "complete"
    )
    assert (row["params.x"] == row["params.x_right"]).all()
    assert (row["metrics.objective.last"] - row["value"]).abs().max() < 1e-9
    pruned = children.join(trials, left_on="id", right_on="run_id").filter(
        pl.col("state") == "pruned"
    )
    # pruned trials stopped early: fewer than the 8 logged steps
    pts = mj.metrics(pruned["id"].to_list(), "loss").group_by("run_id").len()
    assert pts["len"].max() < 8
    assert mj.get_run(pruned["id"][0])["tags"]["optuna.state"] == "pruned"


def test_compare_works_on_trials():
    pytest.importorskip("mlops_jupyter.widgets")
    result = mj.sweep(quadratic, n_trials=4, seed=0)
    cmp = mj.compare(result.runs(), metric="loss")
    assert len(cmp.runs) == 4
    assert set(cmp.differing) >= {"x", "y"}
    assert "trial-0" in cmp._repr_html_()


def test_pruned_trial_keeps_its_last_step_whole():
    def two_keys(trial):
        x = trial.suggest_float("x", -10, 10)
        for step in range(6):
            mj.log(step=step, val_loss=(x - 1) ** 2 + 1 / (step + 1), lr=0.1)
            mj.log_metric("after", 1.0, step=step)
        return (x - 1) ** 2

    r = mj.sweep(
        two_keys, n_trials=20, pruner="median", metric="val_loss", seed=3, sync_pruning=True
    )
    t = r.trials().filter(pl.col("state") == "pruned")
    assert t.height > 0
    m = mj.metrics(t["run_id"].to_list())
    per_key = (
        m.group_by("run_id", "key")
        .agg(pl.col("step").max())
        .pivot(on="key", index="run_id", values="step")
    )
    # the call that triggered pruning buffered both of its values; the next line never ran
    assert (per_key["val_loss"] == per_key["lr"]).all()
    assert (per_key["after"] == per_key["val_loss"] - 1).all()


def test_background_reporting_prunes_slow_steps():
    def slow(trial):
        x = trial.suggest_float("x", -10, 10)
        for step in range(8):
            time.sleep(0.05)  # a training step: the report happens meanwhile
            mj.log(step=step, loss=(x - 2) ** 2 + 4.0 / (step + 1))
        return (x - 2) ** 2

    r = mj.sweep(slow, n_trials=20, pruner="median", seed=1)
    t = r.trials()
    assert (t["state"] == "pruned").sum() >= 3
    # optuna saw the logged values (all of them unless the storage lagged behind the loop)
    run_of = dict(zip(t["number"], t["run_id"]))
    for tr in r.study.get_trials():
        steps = mj.metrics(run_of[tr.number], "loss")["step"].to_list()
        assert tr.intermediate_values and set(tr.intermediate_values) <= set(steps)
        if tr.state.name == "COMPLETE":
            assert max(tr.intermediate_values) == max(steps)  # the last one always is


def test_objective_value_from_last_log_and_failures():
    def logs_only(trial):
        a = trial.suggest_float("a", 0, 1)
        mj.log(score=a)
        mj.log(score=a * 2)

    r = mj.sweep(logs_only, n_trials=3, direction="maximize", seed=0)
    t = r.trials()
    assert (t["value"] - 2 * t["params.a"]).abs().max() < 1e-12

    def flaky(trial):
        v = trial.suggest_float("v", 0, 1)
        if trial.number == 1:
            raise ValueError("diverged")
        return v

    r = mj.sweep(flaky, n_trials=3, catch=(ValueError,), seed=0)
    assert r.trials()["state"].to_list() == ["complete", "fail", "complete"]
    failed = r.runs().filter(pl.col("name") == "trial-1")
    assert failed["status"].item() == "failed"

    with pytest.raises(ValueError, match="diverged"):
        mj.sweep(flaky, n_trials=3, seed=0, name="strict")
    strict = mj.runs().filter(pl.col("name") == "strict")
    assert strict["status"].item() == "failed"

    def nan(trial):
        trial.suggest_float("q", 0, 1)
        return math.nan

    assert mj.sweep(nan, n_trials=2).trials()["state"].to_list() == ["fail", "fail"]


def test_waits_while_machine_not_ready():
    answers = iter(
        [(False, "thermal state is critical"), (False, "thermal state is critical"), (True, "")]
    )

    def gate():
        return next(answers, (True, ""))

    def objective(trial):
        return trial.suggest_float("x", 0, 1)

    with pytest.warns(RuntimeWarning, match="sweep paused: thermal state is critical"):
        r = mj.sweep(objective, n_trials=2, gate=gate, gate_poll_s=0.05)
    ev = [e for e in mj.get_run(r.run.id)["events"] if e["kind"] == "thermal_wait"]
    assert len(ev) == 1
    assert "critical" in ev[0]["message"] and ev[0]["level"] == "warning"
    assert ev[0]["end_time"] - ev[0]["start_time"] >= 0.09


def test_telemetry_gate_is_used_when_present():
    telemetry = pytest.importorskip("mlops_jupyter.telemetry")
    from mlops_jupyter.hpo.gate import _default_gate, _gate_decision

    assert _default_gate() is telemetry.should_run
    ok, reason = _gate_decision(telemetry.decide("critical", 50.0))
    assert not ok and "critical" in reason
    assert _gate_decision(telemetry.decide("nominal", 50.0))[0]


def test_live_view_updates_through_registered_display():
    from mlops_jupyter import hpo

    shown = []

    class Handle:
        def __init__(self, view):
            shown.append(("display", view._repr_html_()))

        def update(self, view):
            shown.append(("update", view._repr_html_()))

    hpo.set_display_factory(Handle)
    try:
        r = mj.sweep(quadratic, n_trials=6, seed=0, study="live")
    finally:
        hpo.set_display_factory(None)
    assert shown[0][0] == "display" and len(shown) >= 2
    final = shown[-1][1]
    assert "<svg" in final and "circle" in final and "best trial" in final and "done" in final
    assert str(r.best_trial.number) in final
    assert "best:" in repr(r)


WORKER = textwrap.dedent(
    """
    import os, sys, time, optuna
    import mlops_jupyter as mj
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        time.sleep(0.05)  # long enough for the two workers to interleave
        return (x - 1) ** 2

    # start together (interpreter start-up times differ a lot on a busy machine)
    ready = os.path.join(sys.argv[2], "ready-")
    open(ready + sys.argv[1], "w").close()
    while not all(os.path.exists(ready + w) for w in ("1", "2")):
        time.sleep(0.01)
    r = mj.sweep(objective, n_trials=10, study="shared", name=f"worker-{sys.argv[1]}",
                 sampler="random", seed=int(sys.argv[1]))
    print(r.run.id)
    """
)


def test_two_processes_share_one_study(tmp_path, child_env, store_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), str(tmp_path)],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    sweep_ids = {o.strip() for o, _ in outs}
    from mlops_jupyter.hpo import study_storage

    study = optuna.load_study(study_name="shared", storage=study_storage())
    trials = study.get_trials()
    assert len(trials) == 20
    assert sorted(t.number for t in trials) == list(range(20))
    assert all(t.state.name == "COMPLETE" for t in trials)
    # each trial is a child run of the sweep run of the worker that ran it
    runs = mj.runs(experiment="sweeps")
    by_id = dict(zip(runs["id"], runs["parent_id"]))
    from mlops_jupyter.store.sweep_queries import trial_runs
    from mlops_jupyter.tracking.api import current_store

    run_of = {n: rid for n, (rid, _) in trial_runs(current_store(), "shared").items()}
    parents = {by_id[run_of[t.number]] for t in trials}
    # each worker ran its 10 trials as children of its own sweep run; whether their trial
    # numbers interleave depends on how the two processes happen to be scheduled
    assert parents == sweep_ids and len(sweep_ids) == 2
    per_sweep = [sum(by_id[run_of[t.number]] == s for t in trials) for s in sweep_ids]
    assert per_sweep == [10, 10]


def test_existing_study_object_with_its_own_pruner():
    study = optuna.create_study(
        pruner=optuna.pruners.ThresholdPruner(upper=50.0), sampler=optuna.samplers.RandomSampler(0)
    )
    r = mj.sweep(quadratic, n_trials=12, study=study, sync_pruning=True)
    assert r.study is study and len(study.trials) == 12
    big = [t for t in study.trials if (t.params["x"] - 2) ** 2 + (t.params["y"] + 1) ** 2 > 60]
    assert big and all(t.state.name == "PRUNED" for t in big)


def test_bad_arguments():
    with pytest.raises(mj.InvalidInputError):
        mj.sweep(quadratic, n_trials=0)
    with pytest.raises(mj.InvalidInputError):
        mj.sweep(quadratic, n_trials=2, direction="down")
    with pytest.raises(mj.InvalidInputError):
        mj.sweep(quadratic, n_trials=2, sampler="annealing")
    with pytest.raises(mj.InvalidInputError):
        mj.sweep(quadratic, n_trials=2, pruner="sometimes")
    with pytest.raises(mj.InvalidInputError):
        mj.sweep("not callable", n_trials=2)
    from mlops_jupyter.hpo import SweepError

    with pytest.raises(SweepError, match="returned None"):
        mj.sweep(lambda t: None, n_trials=1)


def test_magic_in_real_kernel(tmp_path, store_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import os, optuna\n"
            f"os.environ['MLOPS_JUPYTER_STORE'] = {str(store_path)!r}\n"
            "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
            "import mlops_jupyter as mj\n"
            "%load_ext mlops_jupyter"
        ),
        nbformat.v4.new_code_cell(
            "%%mlops_sweep --n-trials 6 --seed 0 --study nb --pruner median\n"
            "x = trial.suggest_float('x', -4, 4)\n"
            "for step in range(5):\n"
            "    mj.log(step=step, loss=(x - 1) ** 2 + 1 / (step + 1))"
        ),
        nbformat.v4.new_code_cell(
            "print(sweep_result.trials().height, sorted(sweep_result.best_params))"
        ),
        nbformat.v4.new_code_cell(
            "%%mlops_sweep --n-trials 3 --objective score --direction maximize --no-live "
            "--result second\n"
            "score = trial.suggest_int('k', 0, 10)"
        ),
        nbformat.v4.new_code_cell("print(second.best_value)"),
        nbformat.v4.new_code_cell("print(get_ipython().find_cell_magic('mlops_sweep').__doc__)"),
    ]
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    sweep_out = nb.cells[1].outputs
    html = [o for o in sweep_out if "text/html" in o.get("data", {})]
    assert html, sweep_out
    assert (
        "mlops-sweep" in html[-1]["data"]["text/html"] and "done" in html[-1]["data"]["text/html"]
    )
    assert nb.cells[2].outputs[0]["text"].strip() == "6 ['x']"
    assert float(nb.cells[4].outputs[0]["text"]) >= 0
    help_text = str(nb.cells[5].outputs)
    assert "--n-trials" in help_text and "--objective" in help_text
    mj.set_store(store_path)
    runs = mj.runs(experiment="sweeps")
    assert runs.filter(pl.col("name").str.starts_with("trial-")).height == 9
