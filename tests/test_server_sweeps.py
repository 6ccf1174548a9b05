"""A sweep's progress across worker processes, read from the store by the sidebar's route
(`GET /mlops/api/v1/sweeps/{run_id}`) of a real `jupyter lab`, and by its query."""

from __future__ import annotations

import os
import socket
import time

import pytest
from browser_helpers import running_lab

import mlops_jupyter as mj
from mlops_jupyter.errors import RunNotFoundError
from mlops_jupyter.store.sweep_queries import sweep_summary

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def mixed(trial):
    """A log-scaled float, an int and a categorical; some values fail (caught)."""
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    depth = trial.suggest_int("depth", 1, 8)
    opt = trial.suggest_categorical("opt", ["adam", "sgd", "rmsprop"])
    if depth == 8 and opt == "sgd":
        raise ValueError("diverged")
    return (lr * 1000 - 1) ** 2 + depth * 0.1 + (opt == "sgd")


def mixed_on_both(trial):
    """`mixed`, but each worker's first trial waits until both workers have started: with a
    trivial objective the first worker up could otherwise run all 16 trials alone on a slow
    machine, which is a correct sweep but not the two-worker case under test."""
    meet = os.environ["SWEEP_TEST_MEET"]
    mine = os.path.join(meet, str(os.getpid()))
    if not os.path.exists(mine):
        open(mine, "w").close()
        deadline = time.monotonic() + 120
        while len(os.listdir(meet)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    return mixed(trial)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, request):
    """One 16-trial sweep on two worker processes and one in-process sweep."""
    tmp = tmp_path_factory.mktemp("sweeps")
    mp = pytest.MonkeyPatch()
    if os.environ.get("MLOPS_TEST_BACKEND") == "postgresql":
        store = request.getfixturevalue("pg_server").new_database("sweeps")
        mp.setenv("MLOPS_JUPYTER_ARTIFACTS", str(tmp / "artifacts"))
    else:
        store = tmp / "store.db"
    mp.setenv("MLOPS_JUPYTER_STORE", str(store))
    mp.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    (tmp / "meet").mkdir()
    mp.setenv("SWEEP_TEST_MEET", str(tmp / "meet"))
    mj.set_store(None)
    try:
        spread = mj.sweep(
            mixed_on_both, 16, workers=2, study="spread", seed=1, gate=False, catch=(ValueError,)
        )
        local = mj.sweep(mixed, 3, study="local", seed=2, gate=False, direction="maximize")
        plain = mj.start_run("plain", experiment="sweeps")
        plain.end()
        yield {"store": store, "spread": spread, "local": local, "plain": plain.id, "tmp": tmp}
    finally:
        mj.set_store(None)
        mp.undo()


def _check_spread(s: dict, spread) -> None:
    assert s["run_id"] == spread.run.id and s["status"] == "finished"
    assert s["study"] == "spread" and s["direction"] == "minimize" and s["n_trials"] == 16
    trials = s["trials"]
    done = [t for t in trials if t["state"] in ("complete", "fail")]
    assert len(done) == 16 == s["counts"]["complete"] + s["counts"]["fail"]
    assert len({t["trial"] for t in trials}) == len(trials)
    # two worker processes, each "host:pid", neither of them this process
    hosts = {w["worker"] for w in s["workers"]}
    assert len(hosts) == 2 and all(w.startswith(socket.gethostname() + ":") for w in hosts)
    assert f"{socket.gethostname()}:{os.getpid()}" not in hosts
    assert sum(w["total"] for w in s["workers"]) == len(trials)
    for w in s["workers"]:
        assert w["total"] == w["running"] + w["complete"] + w["pruned"] + w["fail"]
    # best so far: the optuna study's best, with its params
    assert s["best"]["value"] == pytest.approx(spread.best_value)
    assert s["best"]["params"] == spread.best_params
    assert s["trials_per_s"] > 0 and s["recent_trials_per_s"] > 0
    axes = {a["name"]: a for a in s["axes"]}
    assert axes["lr"]["kind"] == "numeric" and axes["lr"]["log"] is True
    assert axes["depth"]["kind"] == "numeric" and axes["depth"]["log"] is False
    assert axes["opt"]["kind"] == "categorical"
    assert set(axes["opt"]["levels"]) <= {"adam", "sgd", "rmsprop"}
    complete = [t for t in trials if t["state"] == "complete"]
    assert all(isinstance(t["value"], float) and set(t["params"]) == set(axes) for t in complete)


def test_summary_of_a_sweep_on_two_workers(swept):
    from mlops_jupyter.store import open_store
    from mlops_jupyter.store import runs as rstore

    store = open_store(swept["store"])
    s = sweep_summary(store, rstore.resolve_run(store, swept["spread"].run.id))
    _check_spread(s, swept["spread"])


def test_in_process_sweep_has_one_worker_and_maximises(swept):
    from mlops_jupyter.store import open_store
    from mlops_jupyter.store import runs as rstore

    store = open_store(swept["store"])
    s = sweep_summary(store, rstore.resolve_run(store, swept["local"].run.id))
    assert [w["worker"] for w in s["workers"]] == [f"{socket.gethostname()}:{os.getpid()}"]
    assert s["direction"] == "maximize"
    assert s["best"]["value"] == pytest.approx(swept["local"].best_value)
    with pytest.raises(RunNotFoundError, match="not a sweep"):
        sweep_summary(store, rstore.resolve_run(store, swept["plain"]))


def test_route_answers_the_sweep_across_workers(swept):
    root = swept["tmp"] / "root"
    with running_lab(root, swept["store"]) as server:
        status, body = server.api(f"mlops/api/v1/sweeps/{swept['spread'].run.id}")
        assert status == 200, body
        _check_spread(body, swept["spread"])
        status, body = server.api(f"mlops/api/v1/sweeps/{swept['plain']}")
        assert status == 404 and "not a sweep" in body["error"]
        status, body = server.api("mlops/api/v1/sweeps/nosuchrun")
        assert status == 404 and body["status"] == 404
        # Jupyter's authentication applies
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(server.url + "mlops/api/v1/sweeps/x", timeout=10) as r:
                code = r.status
        except urllib.error.HTTPError as e:
            code = e.code
        assert code == 403


def test_running_sweep_counts_states_per_worker_and_recent_rate():
    """A sweep in progress, by hand: trials on two hosts, one still running, one pruned,
    one failed; the recent rate covers only the trials that ended in the last 30 s."""
    from mlops_jupyter.store import runs as rstore
    from mlops_jupyter.tracking import api

    sweep = api.start_run(
        "hand",
        experiment="sweeps",
        params={"sweep.direction": "maximize", "sweep.n_trials": 10},
        tags={"sweep": True, "optuna.study": "hand"},
    )
    plan = [  # (trial, end status, optuna.state tag, value, host, pid, ended seconds ago)
        (0, "finished", "complete", 0.5, "a", 1, 100.0),
        (1, "finished", "complete", 0.9, "b", 2, 10.0),
        (2, "finished", "pruned", None, "b", 2, 5.0),
        (3, "failed", "fail", None, "a", 1, 1.0),
        (4, None, None, None, "a", 1, None),
    ]
    for n, status, state, value, _host, _pid, _ in plan:
        t = api.start_run(
            f"trial-{n}",
            experiment="sweeps",
            parent=sweep.id,
            tags={"optuna.trial": n},
            nested=True,
        )
        t.log_params({"x": n})
        if value is not None:
            t.log_metric("objective", value)
        if status is not None:
            t.set_tags({"optuna.state": state})
            t.end(status)
    mj.flush()
    store = api.current_store()
    rid = rstore.resolve_run(store, sweep.id)
    now = time.time()
    with store.write() as c:  # place the trials on two hosts, ended at known times
        for n, _status, _, _, host, pid, ago in plan:
            c.execute(
                "UPDATE runs SET host = ?, pid = ?, start_time = ?, end_time = ?"
                " WHERE parent_id = ? AND name = ?",
                (host, pid, now - 200, None if ago is None else now - ago, rid, f"trial-{n}"),
            )
        c.execute("UPDATE runs SET start_time = ? WHERE id = ?", (now - 200, rid))
    s = sweep_summary(store, rid, now=now)
    assert s["status"] == "running" and s["direction"] == "maximize" and s["n_trials"] == 10
    assert s["counts"] == {"running": 1, "complete": 2, "pruned": 1, "fail": 1}
    by = {w["worker"]: w for w in s["workers"]}
    assert by["a:1"] == {
        "worker": "a:1",
        "running": 1,
        "complete": 1,
        "pruned": 0,
        "fail": 1,
        "total": 3,
    }
    assert by["b:2"]["complete"] == 1 and by["b:2"]["pruned"] == 1
    assert s["best"]["trial"] == 1 and s["best"]["value"] == 0.9 and s["best"]["worker"] == "b:2"
    assert s["trials_per_s"] == pytest.approx(4 / 200)
    assert s["recent_trials_per_s"] == pytest.approx(3 / 30)
    assert [t["state"] for t in s["trials"]] == [
        "complete",
        "complete",
        "pruned",
        "fail",
        "running",
    ]
    assert s["axes"] == [{"name": "x", "kind": "numeric", "log": False, "min": 0.0, "max": 1.0}]
    sweep.end()
