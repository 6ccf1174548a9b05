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
command line. The shared optuna storage and the trial heartbeats are in storage.py."""

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

from .storage import (  # noqa: F401  (re-exported: callers import them from here)
    _last_check,
    _storages,
    ask,
    fail_stale,
    heartbeat,
    heartbeat_of,
    storage_for,
)

TARGET_ATTR = "mlops.target"
STOP_ATTR = "mlops.stop"
PARENT_ATTR = "mlops.sweep_run"


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
        fail_stale(storage, st)
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
        with heartbeat(storage, trial):
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
