"""Sweeps across processes and machines: one optuna study, many workers.

Each worker runs the same loop (`work`): fail the trials of dead workers (optuna's
heartbeat; RDBStorage on a PostgreSQL store), ask for a trial while the study's budget is
not met, run it as a child run of the sweep run, tell the result. The budget is a study
user attribute (`mlops.target`: the number of counted trials to reach), so workers started
anywhere (`workers=4`, a Dask cluster, `mlops-jupyter sweep join`) stop together with
exactly that many counted trials (complete, pruned, or failed by the objective with
`catch`). A trial asked in a race beyond the budget is told FAIL at once, marked
`mlops.surplus`, before anything runs; a trial of a dead worker is FAIL and, up to
`max_retry` times, re-enqueued with the same params by `RetryFailedTrialCallback`.

Worker processes are fresh interpreters (`python -m mlops_jupyter.hpo.worker`), never
forks (obstore and database connections do not survive fork), that get their task as a
cloudpickled spec on stdin: the store URL may hold a password, so it never goes on a
command line."""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from typing import Any

TARGET_ATTR = "mlops.target"
STOP_ATTR = "mlops.stop"
PARENT_ATTR = "mlops.sweep_run"
_storages: dict[tuple, Any] = {}
_last_check: dict[tuple, float] = {}


def storage_for(store=None, *, heartbeat_interval: int = 10, max_retry: int | None = 3):
    """The optuna storage of `store` (default: the current one): RDBStorage in the store's
    own database where the store has one for it (PostgreSQL), with heartbeats so a dead
    worker's running trial is failed and retried up to `max_retry` times; otherwise the
    journal file beside the store (no heartbeats there: a dead worker's trial stays
    RUNNING). One storage object per process and settings."""
    from . import _optuna, study_storage

    optuna = _optuna()
    if store is None:
        from ..tracking.api import current_store, remote_url

        url = remote_url()
        store = current_store() if url is None else _remote(url)
    if type(store).__name__ == "RemoteStore":  # a tracking server: optuna's calls over HTTP
        return _remote_storage(store.url, heartbeat_interval, max_retry)
    url = store.optuna_storage_url()
    if url is None:
        return study_storage(store.root / "optuna.journal")
    key = (url, heartbeat_interval, max_retry)
    st = _storages.get(key)
    if st is None:
        import inspect

        from .rdb import RetryingRDBStorage as RDBStorage

        try:  # optuna >= 4.9 renamed the callback and its argument
            from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

            arg = "heartbeat_stale_trial_callback"
        except ImportError:
            from optuna.storages import RetryFailedTrialCallback as Retry

            arg = "failed_trial_callback"
        if arg not in inspect.signature(RDBStorage).parameters:
            arg = "failed_trial_callback"
        with warnings.catch_warnings():  # heartbeats are "experimental" in optuna's words
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kw: dict[str, Any] = {"heartbeat_interval": heartbeat_interval, arg: Retry(max_retry)}
        # pool_pre_ping: a worker outlives a PostgreSQL restart by reconnecting
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                try:
                    st = RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **kw)
                except Exception as first:
                    # two processes creating optuna's tables in a fresh database at once:
                    # the loser's CREATE collides (IntegrityError); the tables exist now
                    if type(first).__name__ != "IntegrityError":
                        raise
                    time.sleep(0.5)
                    st = RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **kw)
        except Exception as e:  # the driver's message may hold the URL: keep it out
            from ..config import redact_url

            raise optuna.exceptions.StorageInternalError(
                f"cannot open the optuna storage in {redact_url(store.key)}: {type(e).__name__}"
            ) from None
        _storages[key] = st
    return st


def _remote(url: str):
    from ..remote.api import remote_store

    return remote_store(url)


def _remote_storage(url: str, heartbeat_interval: int, max_retry: int | None):
    """The tracking server's study storage (remote/optuna_storage.py), with heartbeats
    and the retry callback as on PostgreSQL. One per process and settings."""
    key = (url, heartbeat_interval, max_retry)
    st = _storages.get(key)
    if st is None:
        try:  # optuna >= 4.9's name
            from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
        except ImportError:
            from optuna.storages import RetryFailedTrialCallback as Retry

        from ..remote.optuna_storage import RemoteOptunaStorage

        with warnings.catch_warnings():  # "experimental" in optuna's words
            from optuna.exceptions import ExperimentalWarning

            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = Retry(max_retry)
        st = _storages[key] = RemoteOptunaStorage(
            url, heartbeat_interval=heartbeat_interval, heartbeat_stale_trial_callback=retry
        )
    return st


def heartbeat_of(storage) -> float | None:
    """The heartbeat interval of `storage` in seconds, or None without heartbeats."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        return float(storage.get_heartbeat_interval())
    return None


@contextlib.contextmanager
def heartbeat(trial):
    """Record the trial's heartbeat every interval while the body runs (what
    `study.optimize` does; ask/tell loops must do it themselves)."""
    storage = trial.study._storage
    every = heartbeat_of(storage)
    if every is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception as e:  # a lost database: optuna retries on the next beat
                warnings.warn(f"mlops-jupyter: heartbeat failed: {e}", RuntimeWarning, 2)
            if stop.wait(every):
                return

    t = threading.Thread(target=beat, name="mlops-optuna-heartbeat", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


def tally(trials) -> tuple[int, int, int]:
    """(counted, running, waiting) trials: counted = complete, pruned, or failed by the
    objective (`mlops.counted`); running and waiting (retries) ones may still count."""
    counted = running = waiting = 0
    for t in trials:
        s = t.state.name
        if s in ("COMPLETE", "PRUNED") or (s == "FAIL" and t.user_attrs.get("mlops.counted")):
            counted += 1
        elif s == "RUNNING":
            running += 1
        elif s == "WAITING":
            waiting += 1
    return counted, running, waiting


def _ahead(trials, number: int) -> int:
    """Trials before trial `number` that count or may still count."""
    n = 0
    for t in trials:
        if t.number >= number:
            continue
        s = t.state.name
        if s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING") or (
            s == "FAIL" and t.user_attrs.get("mlops.counted")
        ):
            n += 1
    return n


def fail_stale(st) -> None:
    """Fail the running trials whose worker stopped beating (and enqueue their retries);
    a no-op without heartbeats."""
    every = heartbeat_of(st._storage)
    if every is not None:
        import optuna

        # a trial goes stale only after its grace period: checking every half interval
        # is as quick to notice and spares a query per trial
        now, key = time.monotonic(), (id(st._storage), st.study_name)
        if now - _last_check.get(key, -1e9) < every / 2:
            return
        _last_check[key] = now

        with warnings.catch_warnings():  # "experimental" in optuna's words since 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(st)


def ask(st):
    """`st.ask()`, without optuna's warning that heartbeats are meant for `optimize`: this
    loop records them itself (`heartbeat`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        return st.ask()


def work(spec: dict[str, Any], index: int = 0) -> int:
    """Run trials of `spec["study"]` until its budget is met; returns how many ran here.
    `spec`: store, study, objective, experiment, parent (sweep run id), metric, prune,
    sync, catch, heartbeat_interval, max_retry, sampler, seed, poll_s, limit."""
    from ..tracking import api
    from . import _run_trial
    from .choices import _optuna, _sampler
    from .gate import _default_gate

    optuna = _optuna()
    seed = spec.get("seed")
    seed = None if seed is None else seed + index
    if spec.get("store"):
        api.set_store(spec["store"])
    storage = storage_for(  # the current store, or the tracking server's storage
        heartbeat_interval=spec.get("heartbeat_interval", 10),
        max_retry=spec.get("max_retry", 3),
    )
    st = optuna.load_study(
        study_name=spec["study"],
        storage=storage,
        # distinct seeds: workers with one seed would sample the same points
        sampler=_sampler(spec.get("sampler", "tpe"), seed),
        pruner=spec.get("pruner"),
    )
    attrs = st.user_attrs
    target = attrs.get(TARGET_ATTR)
    if target is None:
        raise ValueError(f"study {spec['study']!r} has no sweep budget ({TARGET_ATTR})")
    parent = spec.get("parent") or attrs.get(PARENT_ATTR)
    experiment = spec.get("experiment") or "sweeps"
    limit = spec.get("limit")
    catch = tuple(spec.get("catch") or ())
    poll = float(spec.get("poll_s", 0.5))
    hb = heartbeat_of(storage)
    deadline = spec.get("deadline")
    gate = _default_gate() if spec.get("gate") else None
    worker = f"{socket.gethostname()}:{os.getpid()}"
    ran = 0
    while limit is None or ran < limit:
        if deadline is not None and time.time() > deadline:
            break
        if gate is not None:
            _wait_locally(gate, poll)
        fail_stale(st)
        trials = st.get_trials(deepcopy=False)
        counted, running, waiting = tally(trials)
        if counted >= target or st.user_attrs.get(STOP_ATTR):
            break
        if counted + running >= target and not waiting:
            if hb is None:
                break  # without heartbeats a dead worker's trial would be waited on forever
            time.sleep(poll)  # the others may finish it; if one dies its trial comes back
            continue
        trial = ask(st)
        if _ahead(st.get_trials(deepcopy=False), trial.number) >= target:
            trial.set_user_attr("mlops.surplus", True)
            st.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        with heartbeat(trial):
            value, state, err = _run_trial(
                objective=spec["objective"],
                trial=trial,
                experiment=experiment,
                metric=spec.get("metric"),
                prune=spec.get("prune", False),
                sync=spec.get("sync", False),
                optuna=optuna,
                parent=parent,
                worker=worker,
            )
        ran += 1
        if state == "complete" and value is not None and not math.isfinite(value):
            state = "fail"  # optuna refuses NaN/inf: the trial is failed (and counted)
        counts = state != "fail" or err is None or isinstance(err, catch)
        if counts and state == "fail":
            trial.set_user_attr("mlops.counted", True)
        _tell(st, trial, state, value, optuna)
        if not counts:
            st.set_user_attr(STOP_ATTR, True)  # the other workers stop too
            raise err  # type: ignore[misc]
    api.flush()  # the trial runs' ends were left to the writer: a Dask worker lives on
    return ran


def _wait_locally(gate, poll: float) -> None:
    """Wait while this worker's machine says no (thermal state): per host, not per sweep."""
    from .gate import _gate_decision

    while True:
        try:
            ok, _ = _gate_decision(gate())
        except Exception:
            return  # a broken gate must not stall the worker
        if ok:
            return
        time.sleep(max(poll, 1.0))


def _tell(st, trial, state: str, value, optuna) -> bool:
    """Tell optuna; False when the trial was already failed by another worker's stale
    check (this worker looked dead for a while): the result is dropped, not an error."""
    try:
        if state == "complete":
            st.tell(trial, value)
        else:
            st.tell(trial, state=getattr(optuna.trial.TrialState, state.upper()))
    except optuna.exceptions.UpdateFinishedTrialError:
        warnings.warn(
            f"mlops-jupyter: trial {trial.number} was failed by heartbeat meanwhile "
            "(a retry runs it again); its result is kept on its run only",
            RuntimeWarning,
            2,
        )
        return False
    except ValueError as e:
        if "finished" not in str(e):
            raise
        return False
    return True


# -- launching workers -------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    try:
        import cloudpickle
    except ImportError:  # plain pickle: the objective must be importable by name
        return pickle.dumps(obj)
    return cloudpickle.dumps(obj)


def store_location() -> str:
    """What a worker passes to set_store to open the coordinator's store (may hold a
    password: pass it on stdin or in memory, never on a command line)."""
    from ..tracking import api

    return api.store_location()


def spawn_workers(spec: dict[str, Any], n: int) -> list[subprocess.Popen]:
    """Start `n` worker processes (fresh interpreters) on this machine. Their output goes
    to temporary files (a full pipe would block a worker while another is waited on)."""
    payload = pickle.dumps(list(sys.path)) + _dumps(spec)
    procs = []
    for i in range(n):
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        p = subprocess.Popen(  # noqa: S603 - our own module, no shell
            [sys.executable, "-m", "mlops_jupyter.hpo.worker", str(i)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
        )
        p.out, p.err = out, err  # type: ignore[attr-defined]
        procs.append(p)
    for p in procs:  # write after all started: they import in parallel
        assert p.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            p.stdin.write(payload)
        p.stdin.close()
    return procs


def _text(f) -> str:
    f.seek(0)
    text = f.read().decode(errors="replace")
    f.close()
    return text


def wait_workers(procs: list[subprocess.Popen]) -> tuple[int, list[str]]:
    """Wait for all; returns (trials run, error texts of workers that failed). A worker
    killed by a signal is a warning: the others finish its share."""
    total, errors = 0, []
    for i, p in enumerate(procs):
        p.wait()
        out, err = _text(p.out), _text(p.err)  # type: ignore[attr-defined]
        if p.returncode == 0:
            with contextlib.suppress(ValueError, IndexError):
                total += int(out.strip().splitlines()[-1])
        elif p.returncode < 0:
            warnings.warn(
                f"mlops-jupyter: sweep worker {i} was killed (signal {-p.returncode}); "
                "the others take over its trials",
                RuntimeWarning,
                2,
            )
        else:
            # the exception's first line (its message may run over several lines)
            lines = err.strip().splitlines()
            heads = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", ln)]
            errors.append((heads or lines or [f"exit status {p.returncode}"])[-1])
    return total, errors


def run_on_dask(client, spec: dict[str, Any]) -> tuple[int, list[str]]:
    """One worker loop per Dask worker (each a process of its own: the tracking state is
    per process). Dask ships the objective with cloudpickle."""
    addrs = sorted(client.scheduler_info()["workers"])
    if not addrs:
        raise ValueError("the Dask cluster has no workers")
    futs = [
        client.submit(work, spec, i, workers=[a], allow_other_workers=False, pure=False, retries=0)
        for i, a in enumerate(addrs)
    ]
    total, errors = 0, []
    for f in futs:
        try:
            total += f.result()
        except Exception as e:
            name = type(e).__name__
            if name == "KilledWorker":
                warnings.warn(f"mlops-jupyter: a Dask worker died: {e}", RuntimeWarning, 2)
            else:
                errors.append(f"{name}: {e}")
    return total, errors


def run_spread(
    st, run, spec: dict[str, Any], n_trials: int, workers: int, cluster, view, redraw, bar
) -> None:
    """Run the sweep's trials on `workers` processes or the Dask `cluster`, showing
    progress from the study meanwhile; raises SweepError when a worker failed."""
    from . import SweepError

    counted = tally(st.get_trials(deepcopy=False))[0]
    st.set_user_attr(TARGET_ATTR, counted + n_trials)
    st.set_user_attr(STOP_ATTR, False)
    st.set_user_attr(PARENT_ATTR, run.id)
    spec = {**spec, "store": store_location(), "study": st.study_name, "parent": run.id}
    result: dict[str, Any] = {}

    def drive() -> None:
        try:
            if cluster is not None:
                result["out"] = run_on_dask(cluster, spec)
            else:
                result["out"] = wait_workers(spawn_workers(spec, workers))
        except BaseException as e:
            result["error"] = e

    t = threading.Thread(target=drive, name="mlops-sweep-workers", daemon=True)
    t.start()
    seen: set[int] = set()
    while True:
        t.join(0.5)
        for tr in st.get_trials(deepcopy=False, states=_states()):
            if tr.number in seen or tr.user_attrs.get("mlops.surplus"):
                continue
            seen.add(tr.number)
            state = tr.state.name.lower()
            view.add(
                tr.number,
                state,
                tr.value,
                tr.params,
                worker=tr.user_attrs.get("mlops.worker"),
                distributions=tr.distributions,
            )
            if view.best is not None:
                run.log(step=tr.number, best_value=view.best[1])
            bar.update()
        redraw()
        if not t.is_alive():
            break
    if "error" in result:
        raise result["error"]
    _, errors = result["out"]
    if errors:
        raise SweepError(f"{len(errors)} sweep worker(s) failed: {errors[0]}")


def _states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
