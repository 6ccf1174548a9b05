"""Sweeps through a real `mlops-jupyter server` process (optuna's storage over HTTP,
trackserver/optuna_routes.py): a seeded sweep over the server finds what the same sweep on
the store finds; a worker on the store and a worker over the server share one study with
unique trial numbers; a SIGKILLed remote worker's trial is failed by heartbeat and retried;
a read token cannot create trials; bad calls are 4xx; a repeated trial creation makes one
trial. One server for the module (over its own store: SQLite, or PostgreSQL in the CI's
suites)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import polars as pl
import pytest
from trackserver_helpers import RemoteServer, module_remote, request, use_remote

import mlops_jupyter as mj
from mlops_jupyter.errors import StoreError

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.timeout(120)

OBJMOD = textwrap.dedent(
    """
    import os, signal, time

    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        k = trial.suggest_int("k", 0, 3)
        time.sleep(0.05)
        return (x - 1) ** 2 + k

    def killer(trial):
        x = trial.suggest_float("x", -5, 5)
        marker = os.path.join(os.environ["KILL_DIR"], "killed")
        if trial.number == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(0.3)  # a heartbeat got recorded: it really was running
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.05)
        return (x - 1) ** 2
    """
)


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, request):
    yield from module_remote(tmp_path_factory, request, "remote-sweeps")


@pytest.fixture
def rs(remote_server, monkeypatch, tmp_path):
    (tmp_path / "sweepobj.py").write_text(OBJMOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KILL_DIR", str(tmp_path))
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    r = use_remote(monkeypatch, remote_server, tmp_path)
    mj.set_store(None)
    yield r
    if mj.tracking.api.remote_url() is not None:
        mj.flush()  # while the server is up: nothing left for the exit
    mj.set_store(None)


def _direct(rs: RemoteServer, monkeypatch) -> None:
    """From here on this process opens the server's store itself."""
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(rs.loc))
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(rs.artifacts))
    monkeypatch.delenv("MLOPS_JUPYTER_TOKEN")
    mj.set_store(None)


def test_seeded_sweep_over_the_server_equals_the_direct_one(rs, monkeypatch):
    import sweepobj

    kw = {"n_trials": 8, "seed": 3, "gate": False, "live": False}
    r = mj.sweep(sweepobj.objective, study="seeded-remote", experiment="rsw", **kw)
    from mlops_jupyter.remote.optuna_storage import RemoteOptunaStorage

    assert isinstance(r.study._storage, RemoteOptunaStorage)
    t = r.trials()
    assert (t["state"] == "complete").sum() == 8 and t["number"].n_unique() == 8
    children = r.runs()
    assert children.height == 8 and set(children["parent_id"]) == {r.run.id}
    assert set(t["run_id"]) == set(children["id"])
    assert mj.get_run(t["run_id"][0])["tags"]["optuna.study"] == "seeded-remote"
    remote_best, remote_params = r.best_value, r.best_params
    remote_trials = [x.params for x in r.study.trials]
    _direct(rs, monkeypatch)
    d = mj.sweep(sweepobj.objective, study="seeded-direct", experiment="rsw", **kw)
    assert d.best_params == remote_params and d.best_value == remote_best
    # the study over the server is the store's own: read directly, the same trials
    from mlops_jupyter.hpo.distributed import storage_for

    st = optuna.load_study(study_name="seeded-remote", storage=storage_for())
    assert [x.params for x in st.trials] == remote_trials


def _join(env: dict, study: str, n: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlops_jupyter", "sweep", "join", study]
    cmd += ["--objective", "sweepobj:objective", "--n-trials", str(n), "--heartbeat-interval", "1"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_local_and_a_remote_worker_share_one_study(rs, monkeypatch, tmp_path):
    from mlops_jupyter.hpo.distributed import PARENT_ATTR, STOP_ATTR, TARGET_ATTR, storage_for

    # the study and its budget (as mj.sweep(workers=...) sets them), made over the server
    run = mj.start_run("shared-sweep", experiment="rsw")
    st = optuna.create_study(study_name="shared", storage=storage_for(heartbeat_interval=1))
    for k, v in ((TARGET_ATTR, 6), (STOP_ATTR, False), (PARENT_ATTR, run.id)):
        st.set_user_attr(k, v)
    base = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    remote_env = dict(base)
    local_env = dict(base, MLOPS_JUPYTER_STORE=str(rs.loc))
    local_env["MLOPS_JUPYTER_ARTIFACTS"] = str(rs.artifacts)
    local_env.pop("MLOPS_JUPYTER_TOKEN")
    procs = [_join(remote_env, "shared", 4), _join(local_env, "shared", 4)]
    outs = [p.communicate(timeout=90) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    ran = [int(out.split("ran ")[1].split()[0]) for out, _ in outs]
    assert sum(ran) == 6 and min(ran) >= 2, ran  # both took part
    run.end()
    trials = [t for t in st.get_trials() if not t.user_attrs.get("mlops.surplus")]
    assert sum(t.state.name == "COMPLETE" for t in trials) == 6
    numbers = [t.number for t in st.get_trials()]
    assert len(numbers) == len(set(numbers))
    workers = {t.user_attrs.get("mlops.worker") for t in trials}
    assert len(workers) == 2  # host:pid of each worker
    # every trial is a child run of the sweep run, whoever ran it, with its host
    kids = mj.runs(experiment="sweeps").filter(pl.col("parent_id") == run.id)
    assert kids.height == 6
    tags = mj.get_run(kids["id"][0])["tags"]
    assert tags["host"] and tags["worker"] in workers


def test_killed_remote_worker_trial_fails_by_heartbeat(rs, tmp_path, recwarn):
    import sweepobj

    t0 = time.monotonic()
    r = mj.sweep(
        sweepobj.killer,
        n_trials=5,
        workers=2,
        study="kill-remote",
        seed=1,
        gate=False,
        live=False,
        heartbeat_interval=1,
        max_retry=2,
    )
    assert (tmp_path / "killed").exists()
    assert any("was killed" in str(w.message) for w in recwarn.list)
    trials = r.study.get_trials()
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5
    assert len({t.number for t in trials}) == len(trials)
    failed = [t for t in trials if t.state.name == "FAIL" and not t.user_attrs.get("mlops.surplus")]
    assert [f.number for f in failed] == [2]
    retries = [x for x in trials if x.system_attrs.get("failed_trial") == 2]
    assert retries and retries[0].state.name == "COMPLETE"
    assert retries[0].params == failed[0].params
    assert time.monotonic() - t0 < 60


def test_tokens_and_bad_calls(rs):
    url, path = rs.srv.url, "/api/v1/optuna/"
    st, out = request(url, "POST", path + "get_all_studies", rs.rtok, {})
    assert st == 200 and isinstance(out["result"], list)
    sid = out["result"][0]["study_id"]
    n0 = len(optuna.load_study(study_name=out["result"][0]["study_name"], storage=_remote()).trials)
    body = {"study_id": sid, "key": "ab" * 16}
    assert request(url, "POST", path + "create_new_trial", rs.rtok, body)[0] == 403
    assert request(url, "POST", path + "create_new_trial", None, body)[0] == 401
    bad = [
        ("create_new_trial", {"study_id": sid}),  # no key
        ("create_new_trial", {"study_id": "x", "key": "ab" * 16}),
        ("create_new_trial", {"study_id": sid, "key": "ab" * 16, "template": {"state": "?"}}),
        ("set_trial_param", {"trial_id": 1, "param_name": "x", "distribution": "{}"}),
        ("set_trial_state_values", {"trial_id": 1, "state": "COMPLETE", "values": None}),
        ("set_trial_intermediate_value", {"trial_id": 1, "step": -1, "value": 1.0}),
        ("set_study_user_attr", {"study_id": sid, "key": "k", "value": "{not json"}),
        ("get_stale_trial_ids", {"study_id": sid, "grace_s": 0}),
        ("create_new_study", {"directions": ["UP"], "study_name": "s"}),
    ]
    for method, b in bad:
        st, out = request(url, "POST", path + method, rs.wtok, b)
        assert st == 400 and out["error_code"] == "INVALID_PARAMETER_VALUE", (method, out)
    assert request(url, "POST", path + "get_trial", rs.rtok, {"trial_id": 10**6})[0] == 404
    assert request(url, "POST", path + "drop_everything", rs.wtok, {})[0] == 404
    assert request(url, "POST", path + "get_trial", rs.rtok, raw=b"[1")[0] == 400
    # refused calls changed nothing
    name = request(url, "POST", path + "get_all_studies", rs.rtok, {})[1]["result"][0]["study_name"]
    assert len(optuna.load_study(study_name=name, storage=_remote()).trials) == n0
    # a repeated creation (its answer lost) finds the first trial instead of a second one
    one = request(url, "POST", path + "create_new_trial", rs.wtok, body)[1]["result"]["trial_id"]
    again = request(url, "POST", path + "create_new_trial", rs.wtok, {**body, "retry": True})
    assert again[1]["result"]["trial_id"] == one
    assert len(optuna.load_study(study_name=name, storage=_remote()).trials) == n0 + 1
    # a read token through the storage: reads work, a sweep says what scope it needs
    os.environ["MLOPS_JUPYTER_TOKEN"] = rs.rtok  # restored by monkeypatch (use_remote)
    ro = _remote(fresh=True)
    assert ro.get_study_id_from_name(name) == sid
    with pytest.raises(StoreError, match="scope write"):
        ro.create_new_trial(sid)


def _remote(fresh: bool = False):
    from mlops_jupyter.remote.optuna_storage import RemoteOptunaStorage

    return RemoteOptunaStorage(os.environ["MLOPS_JUPYTER_STORE"])


@pytest.mark.filterwarnings("ignore:mlops-jupyter. sweep paused")
def test_sweep_magic_pruning_and_gate_over_the_server(rs):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "mlops_jupyter")
    shell.user_ns["mj"] = mj
    out = shell.run_cell(
        "%%mlops_sweep --n-trials 5 --seed 0 --study magic-remote --pruner median --no-live"
        " --no-gate -e rsw\n"
        "x = trial.suggest_float('x', -4, 4)\n"
        "for step in range(4):\n"
        "    mj.log(step=step, loss=(x - 1) ** 2 + 1 / (step + 1))",
    )
    out.raise_error()
    res = shell.user_ns["sweep_result"]
    assert res.trials().height == 5 and set(res.best_params) == {"x"}
    assert res.study.trials[0].intermediate_values  # reported through the server
    # a thermal pause over the server: its event is opened and closed through the server
    said = iter([False, True])
    r = mj.sweep(
        lambda t: t.suggest_float("y", 0, 1),
        n_trials=1,
        gate=lambda: next(said, True),
        gate_poll_s=0.05,
        live=False,
        study="gated-remote",
    )
    assert r.trials().height == 1
    ends = rs.rows("SELECT end_time FROM run_events WHERE kind = 'thermal_wait'")
    assert ends and all(e[0] is not None for e in ends)


def test_server_killed_mid_sweep_the_sweep_goes_on(rs):
    import threading

    def slow(trial):
        time.sleep(0.15)
        return (trial.suggest_float("x", -2, 2) - 0.5) ** 2

    out: dict = {}

    def go() -> None:
        try:
            out["r"] = mj.sweep(slow, n_trials=8, study="restart", gate=False, live=False)
        except BaseException as e:  # reported below
            out["e"] = e

    t = threading.Thread(target=go)
    t.start()
    time.sleep(1.2)  # a few trials in
    rs.srv.kill()  # SIGKILL: answers in flight are lost
    time.sleep(1.0)
    rs.restart()
    t.join(60)
    assert "e" not in out, out.get("e")
    trials = out["r"].study.get_trials()
    assert sum(x.state.name == "COMPLETE" for x in trials) == 8
    keys = [x.system_attrs.get("mlops.create_key") for x in trials]
    assert len(keys) == len(set(keys)) and len(trials) == 8  # no trial made twice
