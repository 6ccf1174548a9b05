"""Hyperparameter sweeps with optuna, tracked as runs.

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        for epoch in range(20):
            ...
            mj.log(step=epoch, val_loss=v)   # reported to optuna; may prune the trial
        return v

    result = mj.sweep(objective, n_trials=30, pruner="median")
    result.best_params, result.runs()

The sweep is a run; each trial is a child run with its params and metrics. The optuna
study lives with the store: in its own database on a PostgreSQL store (optuna's RDBStorage,
with heartbeats), else beside it (`.mlops/optuna.journal`, a journal file several processes
can share); over a tracking server, the server's store's study (remote/optuna_storage.py).
Another worker joins with `mj.sweep(objective, n_trials, study=<same name>)` or
`mlops-jupyter sweep join STUDY --objective module:function`; `workers=4` runs trials in
four processes and `cluster=client` on a Dask cluster's workers (distributed.py).
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..progress import progress
from .choices import SweepError, _optuna, _pruner, _sampler
from .gate import _default_gate, _wait_for_gate
from .tap import Tap
from .view import SweepView, set_display_factory

__all__ = ["Sweep", "SweepError", "set_display_factory", "study_storage", "sweep"]


def study_storage(path: str | os.PathLike | None = None):
    """The optuna storage of the current store (see `storage.storage_for`: RDBStorage
    in a PostgreSQL store's database, else the journal file beside it, with heartbeats),
    or the plain journal file at `path`: one that concurrent processes (on one machine or
    a shared file system) can use at once."""
    optuna = _optuna()
    if path is None:
        from .storage import storage_for

        return storage_for()
    from optuna.storages import JournalStorage

    del optuna
    return JournalStorage(journal_backend(path))


def journal_backend(path: str | os.PathLike):
    """optuna's journal file backend at `path` (its folder created), locked so that
    processes on one machine or a shared file system can use it at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
    except ImportError:  # optuna 3.x names
        from optuna.storages import JournalFileOpenLock
        from optuna.storages import JournalFileStorage as JournalFileBackend
    # the open(O_EXCL) lock works on file systems without symlinks too
    return JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))


class Sweep:
    """Result of `sweep()`: the optuna study plus the sweep run and its trial runs."""

    def __init__(self, study, run, view: SweepView, metric: str | None) -> None:
        self.study = study
        self.run = run
        self.view = view
        self.metric = metric

    @property
    def best_params(self) -> dict[str, Any]:
        return self.study.best_params

    @property
    def best_value(self) -> float:
        return self.study.best_value

    @property
    def best_trial(self):
        return self.study.best_trial

    def trials(self):
        """All trials of the study (every worker): number, state, value, run_id, host,
        params. Trials asked beyond the budget in a race between workers (never run) are
        left out."""
        import polars as pl

        rows = []
        linked = self._trial_runs()
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("mlops.surplus"):
                continue
            run_id, host = linked.get(t.number, (None, None))
            run_id = t.user_attrs.get("mlops.run_id", run_id)
            worker = t.user_attrs.get("mlops.worker")  # "host:pid", set by worker processes
            if worker:
                host = worker.rsplit(":", 1)[0]
            row = {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "run_id": run_id,
                "host": host,
            }
            row.update({f"params.{k}": v for k, v in t.params.items()})
            rows.append(row)
        return pl.DataFrame(rows, infer_schema_length=None)

    def _trial_runs(self) -> dict[int, tuple[str, str | None]]:
        """{trial number: (run id, host)} from the trial runs' tags: trials run in a
        sweep's own process carry no optuna user attribute (each costs a commit)."""
        from ..store.sweep_queries import trial_runs
        from ..tracking import api

        if api.remote_url() is not None:
            # over a tracking server: the sweep run's children, named trial-N; those of
            # worker processes name their host on the trial (mlops.worker)
            out: dict[int, tuple[str, str | None]] = {}
            for rid, run_name in self.runs().select("id", "name").iter_rows():
                n = run_name[6:] if run_name and run_name.startswith("trial-") else ""
                if n.isdigit():
                    out[int(n)] = (rid, socket.gethostname())
            return out
        return trial_runs(api.current_store(), self.study.study_name)

    def runs(self):
        """The trial runs of this sweep run (a `mj.runs()` frame, usable with mj.compare)."""
        import polars as pl

        from ..tracking import runs

        df = runs(experiment=self.run.experiment)
        return df.filter(pl.col("parent_id") == self.run.id)

    def _repr_html_(self) -> str:
        return self.view._repr_html_()

    def __repr__(self) -> str:
        return f"Sweep(study={self.study.study_name!r}, run={self.run.id!r})\n{self.view.summary()}"


def sweep(
    objective: Callable[[Any], float | None],
    n_trials: int = 20,
    direction: str = "minimize",
    sampler: Any = "tpe",
    pruner: Any = None,
    study: Any = None,
    *,
    metric: str | None = None,
    name: str | None = None,
    experiment: str | None = None,
    storage: Any = None,
    seed: int | None = None,
    timeout: float | None = None,
    catch: tuple[type[BaseException], ...] = (),
    callbacks: list[Callable[[Any, Any], None]] | None = None,
    gate: Callable[[], Any] | None | bool = True,
    gate_poll_s: float = 10.0,
    live: bool | None = None,
    sync_pruning: bool = False,
    workers: int = 1,
    cluster: Any = None,
    heartbeat_interval: int = 10,
    max_retry: int | None = 3,
) -> Sweep:
    """Run `n_trials` optuna trials of `objective(trial)`, each as a child run of a sweep run.

    Values logged with `mj.log` inside a trial are reported to optuna (the `metric` key,
    default: the first key the trial logs); with a `pruner` ("median", "percentile",
    "hyperband", "successive_halving" or an optuna pruner) a trial is stopped by
    `optuna.TrialPruned` raised from that `mj.log` call. If `objective` returns None the
    trial's value is the last logged value of `metric`.
    `study`: a study name (joined if it exists; share it between workers) or an optuna
    Study. Between trials the machine's telemetry `should_run()` is consulted (`gate`:
    True = telemetry if installed, False = never wait, or your own callable) and the sweep
    waits while it says no, recording the pause on the sweep run.
    `live`: show an updating view where a notebook front end is registered (default).
    `sync_pruning`: report to optuna inside the mj.log call (about 2 ms each on the journal
    file) so pruning never depends on timing; by default a background thread reports and
    the training loop does not wait.
    `workers`: run the trials in that many processes on this machine; `cluster`: a
    `distributed.Client`, one worker loop per Dask worker. Either way `n_trials` is the
    total, trials are child runs of this sweep run with the worker's host, and a dead
    worker's trial is failed after two `heartbeat_interval`s without a heartbeat and
    retried up to `max_retry` times (PostgreSQL, the journal file and the tracking server
    alike)."""
    optuna = _optuna()
    from ..store import registry as sreg
    from ..tracking import api

    if not callable(objective):
        raise InvalidInputError("objective must be a callable taking an optuna trial")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise InvalidInputError(f"n_trials must be a positive integer, got {n_trials!r}")
    if direction not in ("minimize", "maximize"):
        raise InvalidInputError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise InvalidInputError("metric must be a metric key (string)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(f"workers must be a positive integer, got {workers!r}")
    spread = workers > 1 or cluster is not None
    if spread and (isinstance(study, optuna.Study) or storage is not None):
        raise InvalidInputError(
            "workers/cluster sweeps keep their study in the store: pass a study name"
        )
    pr, prune = _pruner(pruner)
    if isinstance(study, optuna.Study):
        st = study  # its own sampler and pruner apply
        direction = st.direction.name.lower()
        prune = pruner is not None or not isinstance(st.pruner, optuna.pruners.NopPruner)
    else:
        if study is not None and not isinstance(study, str):
            raise InvalidInputError("study must be a study name or an optuna Study")
        study_name = study or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        if storage is not None:
            stor = storage
        else:
            from .storage import storage_for

            stor = storage_for(heartbeat_interval=heartbeat_interval, max_retry=max_retry)
        st = optuna.create_study(
            study_name=study_name,
            storage=stor,
            sampler=_sampler(sampler, seed),
            pruner=pr,
            direction=direction,
            load_if_exists=True,
        )
        if st.direction.name.lower() != direction:
            raise InvalidInputError(
                f"study {study_name!r} exists with direction {st.direction.name.lower()}"
            )
    parent = api.active_run()
    exp = experiment or (parent.experiment if parent is not None else "sweeps")
    check_gate = _default_gate() if gate is True else (gate or None)
    run = api.start_run(
        name or st.study_name,
        experiment=exp,
        params={
            "sweep.n_trials": n_trials,
            "sweep.direction": direction,
            "sweep.sampler": sampler if isinstance(sampler, str) else type(sampler).__name__,
            "sweep.pruner": pruner
            if isinstance(pruner, (str, type(None)))
            else type(pruner).__name__,
        },
        tags={"optuna.study": st.study_name, "sweep": True},
    )
    view = SweepView(f"sweep {st.study_name}", direction)
    handle = None
    factory = None if live is False else _view_factory()
    if factory is not None:
        try:
            handle = factory(view)
        except Exception as e:
            warnings.warn(f"mlops-jupyter: live sweep view unavailable: {e}", RuntimeWarning, 2)
    last_draw = 0.0

    def redraw(force: bool = False) -> None:
        nonlocal last_draw
        if handle is None or (not force and time.monotonic() - last_draw < 0.25):
            return
        last_draw = time.monotonic()
        try:
            handle.update(view)
        except Exception:
            pass

    status = "finished"
    # without a live view (a script, or live=False): a tqdm bar over the trials where visible
    bar = progress(
        total=n_trials, desc=f"sweep {st.study_name}", unit="trial", quiet=handle is not None
    )
    try:
        if spread:
            from .distributed import run_spread

            spec = {
                "objective": objective,
                "experiment": exp,
                "metric": metric,
                "prune": prune,
                "sync": sync_pruning,
                "catch": catch,
                "heartbeat_interval": heartbeat_interval,
                "max_retry": max_retry,
                "sampler": sampler,
                "seed": seed,
                "pruner": pr,
                "gate": gate is True,
                "deadline": None if timeout is None else time.time() + timeout,
            }
            run_spread(st, run, spec, n_trials, workers, cluster, view, redraw, bar)
        else:
            _optimize_here(
                st, objective, n_trials, timeout, exp, metric, prune, sync_pruning, catch,
                callbacks, check_gate, gate_poll_s, run, view, redraw, bar, sreg, optuna,
            )  # fmt: skip
    except KeyboardInterrupt:
        status = "killed"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        bar.close()
        view.done = True
        redraw(force=True)
        if _has_best(st):
            run.log_params({f"best.{k}": v for k, v in st.best_params.items()})
            run.set_tags({"best_trial": st.best_trial.number})
        run.end(status)
    return Sweep(st, run, view, metric)


def _optimize_here(
    st, objective, n_trials, timeout, exp, metric, prune, sync, catch, callbacks, check_gate,
    gate_poll_s, run, view, redraw, bar, sreg, optuna,
) -> None:  # fmt: skip
    """The trials in this process, each by optuna's own `study.optimize(n_trials=1)` (its
    heartbeats, stale-trial check and catch) as a child run; between trials the thermal
    gate, the view, the bar and the best-so-far metric. The view is fed from the trial
    itself: an optuna callback would cost a reload of the trial from the storage."""
    last: dict[str, Any] = {}

    def trial_run(trial) -> float:
        value, state, err = _run_trial(objective, trial, exp, metric, prune, sync, optuna)
        if state == "complete" and not math.isfinite(value):
            state = "fail"  # optuna records NaN/inf returns as failed trials
        last.update(number=trial.number, state=state, value=value, params=trial.params)
        last["distributions"] = trial.distributions
        if state == "pruned":
            raise optuna.TrialPruned()
        if err is not None:
            raise err  # optuna fails the trial; re-raised unless caught by `catch`
        return value

    cbs = [_warning_callback(cb) for cb in callbacks or ()] or None
    t_end = None if timeout is None else time.monotonic() + timeout
    for _ in range(n_trials):
        if t_end is not None and time.monotonic() > t_end:
            break
        if check_gate is not None:
            _wait_for_gate(check_gate, run, gate_poll_s, view, redraw, sreg)
        last.clear()
        try:
            st.optimize(trial_run, n_trials=1, catch=catch, callbacks=cbs)
        finally:
            if last:
                view.add(
                    last["number"], last["state"], last["value"], last["params"],
                    distributions=last["distributions"],
                )  # fmt: skip
                if view.best is not None:
                    run.log(step=last["number"], best_value=view.best[1])
                redraw()
                bar.update()
                if view.best is not None:
                    bar.set_postfix(best=f"{view.best[1]:.4g}", refresh=False)


def _warning_callback(cb: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """A user's sweep callback whose errors are warnings: it must not stop the sweep."""

    def call(study, frozen) -> None:
        try:
            cb(study, frozen)
        except Exception as e:
            warnings.warn(f"sweep callback failed: {e}", RuntimeWarning, 2)

    return call


def _has_best(st) -> bool:
    try:
        return st.best_trial is not None
    except ValueError:
        return False


def _view_factory():
    from .view import display_factory

    return display_factory()


def _run_trial(objective, trial, experiment, metric, prune, sync, optuna, parent=None, worker=None):
    """One trial as a child run (of the active run, or of run id `parent`). Returns
    (value, state, exception). `worker` ("host:pid") names the worker process running it
    (None: the sweep's own process)."""
    from ..tracking import api

    tags = {
        "optuna.study": trial.study.study_name,
        "optuna.trial": trial.number,
        "host": socket.gethostname(),
    }
    if worker is not None:
        tags["worker"] = worker
    # wait=False: the run's row is written by the background writer, with its params,
    # points and end, in one transaction per flush; the trial only appends to memory
    child = api.start_run(
        f"trial-{trial.number}", experiment=experiment, parent=parent, tags=tags, wait=False
    )
    # each user attribute is a commit and a reload of the trial on RDBStorage: the run's
    # tags (study, trial number) are the link to its run (Sweep.trials); worker processes
    # name themselves on the trial, for the coordinator's live per-worker counts
    if worker is not None:
        trial.set_user_attr("mlops.worker", worker)
    tap = Tap(child, trial, metric, prune, sync)
    value, state, err = None, "complete", None
    try:
        try:
            ret = objective(trial)
        finally:
            tap.close()  # intermediate values reach optuna before the trial is told
        if ret is None:
            ret = tap.value_of_last_log()
            if ret is None:
                raise SweepError(
                    "the objective returned None and logged no metric: return the value to "
                    "optimise, or mj.log it"
                )
        try:
            value = float(ret)
        except (TypeError, ValueError):
            raise SweepError(
                f"the objective must return a number, got {type(ret).__name__}"
            ) from None
    except optuna.TrialPruned:
        state = "pruned"
    except KeyboardInterrupt:
        child.log_params(dict(trial.params))
        child.end("killed")
        raise
    except Exception as e:
        state, err = "fail", e
    # params, tag and end are left to the background writer (one transaction per flush
    # for many trials, off the trial loop); mj.flush(), a read or the sweep run's end
    # writes them
    child.log_params(dict(trial.params), wait=False)
    if value is not None:
        child.log_metric("objective", value)
    if state == "pruned":  # complete and failed trials say so by their run's status
        child.set_tags({"optuna.state": state}, wait=False)
    child.end("failed" if state == "fail" else "finished", wait=False)
    return value, state, err
