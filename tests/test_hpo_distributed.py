"""Sweeps across processes: `workers=N` on the store's study storage (a journal file with
SQLite, optuna's RDBStorage in the store's database with PostgreSQL), a SIGKILLed worker's
trial failed by heartbeat and retried (on both), a Dask LocalCluster, and `sweep join`."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

import mlops_jupyter as mj
from mlops_jupyter.hpo import study_storage
from mlops_jupyter.tracking.api import current_store

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)

BACKEND = os.environ.get("MLOPS_TEST_BACKEND", "sqlite")


def slow_square(trial):
    """Long enough (50 ms) for workers to interleave."""
    x = trial.suggest_float("x", -5, 5)
    time.sleep(0.05)
    mj.log(loss=(x - 1) ** 2)
    return (x - 1) ** 2


def _check(result, n: int) -> pl.DataFrame:
    """Exactly n complete trials, unique numbers, each a child run of the sweep run with
    its host."""
    t = result.trials()
    assert (t["state"] == "complete").sum() == n, t
    assert t["number"].n_unique() == t.height
    children = result.runs()
    done = t.filter(pl.col("state") == "complete")
    assert set(done["run_id"]) <= set(children["id"])
    assert set(children["parent_id"]) == {result.run.id}
    assert set(done["host"]) == {socket.gethostname()}
    for rid in done["run_id"].head(3):
        assert mj.get_run(rid)["tags"]["host"] == socket.gethostname()
    assert mj.get_run(result.run.id)["status"] == "finished"
    return t


@pytest.mark.parametrize("store_kind", ["default", "postgresql"])
def test_workers_finish_exactly_n_trials(store_kind, request, monkeypatch, tmp_path):
    if store_kind == "postgresql" and BACKEND != "postgresql":
        # the default run is SQLite: also cover PostgreSQL here
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("MLOPS_JUPYTER_STORE", url)
        monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(tmp_path / "art"))
        mj.set_store(None)
    elif store_kind == "postgresql":
        pytest.skip("the default store is already PostgreSQL")
    r = mj.sweep(slow_square, n_trials=12, workers=3, study="par", seed=0, gate=False)
    t = _check(r, 12)
    assert t.height == 12
    assert t["params.x"].n_unique() == 12  # distinct seeds per worker
    if current_store().backend == "postgresql":
        from optuna.storages import RDBStorage

        storage = r.study._storage  # optuna wraps RDBStorage in a cache
        assert isinstance(getattr(storage, "_backend", storage), RDBStorage)
    # a second sweep on the same study adds its own budget
    r2 = mj.sweep(slow_square, n_trials=4, workers=2, study="par", seed=5, gate=False)
    assert (r2.trials()["state"] == "complete").sum() == 16
    assert r2.runs().height == 4


KILLER = textwrap.dedent(
    """
    import os, signal, time
    import mlops_jupyter as mj

    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        marker = os.path.join(os.environ["KILL_DIR"], "killed")
        if trial.number == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(0.3)  # a heartbeat or two got recorded: it really was running
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.05)
        return (x - 1) ** 2
    """
)


@pytest.mark.parametrize("store_kind", ["default", "postgresql"])
def test_killed_worker_trial_fails_by_heartbeat_and_is_retried(
    store_kind, request, monkeypatch, tmp_path, recwarn
):
    """On PostgreSQL (RDBStorage's heartbeats) and on a SQLite store's journal file
    (hpo/journal.py's)."""
    if store_kind == "postgresql" and BACKEND != "postgresql":
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("MLOPS_JUPYTER_STORE", url)
        monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(tmp_path / "art"))
        mj.set_store(None)
    elif store_kind == "postgresql":
        pytest.skip("the default store is already PostgreSQL")
    mod = f"killmod_{store_kind}"  # one module per case: workers import it by name
    (tmp_path / f"{mod}.py").write_text(KILLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KILL_DIR", str(tmp_path))
    killmod = importlib.import_module(mod)

    t0 = time.monotonic()
    r = mj.sweep(
        killmod.objective,
        n_trials=10,
        workers=4,
        study="kill",
        seed=1,
        gate=False,
        heartbeat_interval=1,
        max_retry=2,
    )
    assert (tmp_path / "killed").exists()
    assert any("was killed" in str(w.message) for w in recwarn.list)
    t = r.trials()
    assert (t["state"] == "complete").sum() == 10
    assert t["number"].n_unique() == t.height
    failed = r.study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    failed = [f for f in failed if not f.user_attrs.get("mlops.surplus")]
    assert [f.number for f in failed] == [2]
    # the retry ran trial 2's params again and completed
    retries = [
        x for x in r.study.get_trials() if x.system_attrs.get("failed_trial") == failed[0].number
    ]
    assert retries and retries[0].state.name == "COMPLETE"
    assert retries[0].params == failed[0].params
    assert not r.study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    if current_store().backend == "sqlite":
        from optuna.storages import JournalStorage

        assert isinstance(r.study._storage, JournalStorage)  # the journal, not a database
    assert time.monotonic() - t0 < 120


def test_sqlite_journal_shared_by_worker_processes():
    if BACKEND == "postgresql":
        pytest.skip("the journal file is the SQLite store's study storage")
    r = mj.sweep(slow_square, n_trials=8, workers=2, study="journal", seed=3, gate=False)
    _check(r, 8)
    from optuna.storages import JournalStorage

    assert isinstance(r.study._storage, JournalStorage)  # with heartbeats (hpo/journal.py)
    assert (Path(current_store().root) / "optuna.journal").exists()


def test_worker_error_fails_the_sweep():
    def boom(trial):
        trial.suggest_float("x", 0, 1)
        raise ValueError("diverged")

    with pytest.raises(mj.MlopsJupyterError, match="diverged"):
        mj.sweep(boom, n_trials=4, workers=2, study="boom", gate=False)
    sweep_run = mj.runs(experiment="sweeps").filter(pl.col("name") == "boom")
    assert sweep_run["status"].item() == "failed"


def test_dask_local_cluster():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        r = mj.sweep(slow_square, n_trials=8, cluster=client, study="dask", seed=2, gate=False)
    t = _check(r, 8)
    pids = {mj.get_run(rid)["pid"] for rid in t["run_id"]}
    assert len(pids) == 2 and os.getpid() not in pids  # both Dask worker processes ran trials


def test_sweep_join_cli_adds_a_worker(tmp_path, child_env):
    mod = tmp_path / "objmod.py"
    mod.write_text(
        "import time\n"
        "def objective(trial):\n"
        "    x = trial.suggest_float('x', -5, 5)\n"
        "    time.sleep(0.05)\n"
        "    return (x - 1) ** 2\n"
    )
    env = dict(child_env, PYTHONPATH=f"{tmp_path}{os.pathsep}{child_env['PYTHONPATH']}")
    cmd = [sys.executable, "-m", "mlops_jupyter.cli", "sweep", "join", "joined"]
    cmd += ["--objective", "objmod:objective", "--n-trials", "3"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ran 3 trials" in out.stdout
    study = optuna.load_study(study_name="joined", storage=study_storage())
    assert len(study.trials) == 3
    # a bad objective reference is a clear error
    bad = subprocess.run(
        cmd[:-4] + ["--objective", "objmod:nope"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "objmod:nope" in bad.stderr


def test_bad_worker_arguments():
    with pytest.raises(mj.InvalidInputError):
        mj.sweep(slow_square, n_trials=2, workers=0)
    with pytest.raises(mj.InvalidInputError, match="study name"):
        mj.sweep(slow_square, n_trials=2, workers=2, study=optuna.create_study())


def test_postgres_storage_url_keeps_the_password_out_of_sight(pg_url):
    from mlops_jupyter.store import open_store

    store = open_store(pg_url)
    url = store.optuna_storage_url()
    assert url.startswith("postgresql+psycopg://")
    assert "pw-Secret" not in repr(store) and "pw-Secret" not in str(store.info())
    from mlops_jupyter.hpo.distributed import storage_for

    assert "pw-Secret" not in repr(storage_for(store))


TICKER = textwrap.dedent(
    """
    import os, time
    import mlops_jupyter as mj

    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        time.sleep(0.15)
        mj.log(loss=(x - 1) ** 2)
        open(os.path.join(os.environ["TICK_DIR"], f"t{trial.number}"), "w").close()
        return (x - 1) ** 2
    """
)


def test_postgres_restart_mid_sweep_workers_reconnect(monkeypatch, tmp_path):
    """The database restarts while two workers run trials: they wait, reconnect and finish
    the sweep with exactly the requested trials (a server of its own: the session's
    server serves other tests' connections)."""
    import threading

    from pgserver import PgServer

    server = PgServer()
    own_store = os.environ["MLOPS_JUPYTER_STORE"]
    try:
        monkeypatch.setenv("MLOPS_JUPYTER_STORE", server.new_database())
        monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(tmp_path / "art"))
        mj.set_store(None)
        ticks = tmp_path / "ticks"
        ticks.mkdir()
        (tmp_path / "tickmod.py").write_text(TICKER)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setenv("TICK_DIR", str(ticks))
        import tickmod

        seen: dict[str, int] = {}

        def restart() -> None:
            deadline = time.monotonic() + 90
            while len(list(ticks.iterdir())) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            seen["before"] = len(list(ticks.iterdir()))
            server.stop("fast")  # ends every connection, as a restart does
            time.sleep(1.5)
            seen["down"] = len(list(ticks.iterdir()))
            server.start()

        t = threading.Thread(target=restart, daemon=True)
        t.start()
        r = mj.sweep(tickmod.objective, n_trials=16, workers=2, study="restart", seed=3, gate=False)
        t.join(30)
        assert 4 <= seen["before"] < 16, seen  # the restart really came mid-sweep
        tr = r.trials()
        assert (tr["state"] == "complete").sum() == 16, tr
        assert tr["number"].n_unique() == tr.height
        assert r.runs().filter(pl.col("status") == "finished").height >= 16
        assert mj.get_run(r.run.id)["status"] == "finished"
    finally:
        from mlops_jupyter.store.db import close_all

        close_all()
        monkeypatch.setenv("MLOPS_JUPYTER_STORE", own_store)  # the teardown's store
        mj.set_store(None)
        server.close()
