"""A sweep's progress across worker processes, read from the store by the sidebar's route
(`GET /mlops/api/v1/sweeps/{run_id}`) of a real `jupyter lab`, and by its query."""

from __future__ import annotations

import os
import socket

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
    mj.set_store(None)
    try:
        spread = mj.sweep(
            mixed, 16, workers=2, study="spread", seed=1, gate=False, catch=(ValueError,)
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
