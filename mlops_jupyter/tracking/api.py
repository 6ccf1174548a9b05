"""Module-level tracking API (`mj.start_run`, `mj.log`, ...) over an active-run stack."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import config
from ..errors import InvalidInputError, NoActiveRunError
from ..remote import caller_feature, is_remote, unsupported
from ..store import Store, open_store
from ..store import runs as rstore
from .pending import Pending
from .run import Run
from .validate import KNOWN_KEYS, MAX_STEP, as_step, as_value, bad_key
from .writer import writer_for

if TYPE_CHECKING:  # polars loads on the first query, keeping `import mlops_jupyter` light
    import polars as pl

_now = time.time
_stack: list[Run] = []
_active: Run | None = None
_lock = threading.Lock()
_store_override: str | None = None
# What an active run becomes when the interpreter exits with it still open; the Jupyter
# integration sets "crashed" because a kernel that exits mid-run did not finish it.
exit_status = "finished"
_uncaught: list[type] = []
# Integrations attached to every run at start ("module:function", called with the Run).
# They are imported lazily; a missing module is skipped and a failing hook only warns,
# so an integration can never stop a run from starting.
START_HOOKS: list[str] = [
    "mlops_jupyter.telemetry.sampler:attach",
    "mlops_jupyter.data.autolog:attach",
]
_hooks_resolved: list | None = None


def _start_hooks() -> list:
    global _hooks_resolved
    if _hooks_resolved is None:
        import importlib

        found = []
        for spec in START_HOOKS:
            mod, _, fn = spec.partition(":")
            try:
                found.append(getattr(importlib.import_module(mod), fn))
            except (ImportError, AttributeError):
                continue  # that integration is not installed
            except Exception as e:  # a broken integration must not stop runs from starting
                import warnings

                warnings.warn(
                    f"mlops-jupyter: {spec} unavailable: {e}", RuntimeWarning, stacklevel=3
                )
                continue
        _hooks_resolved = found
    return _hooks_resolved


def set_store(path: str | os.PathLike | None) -> Store:
    """Use the store at `path` for this process (None: back to the default lookup). An
    http(s):// URL names a tracking server (see docs/server.md, "Remote clients")."""
    global _store_override
    if path is None:
        _store_override = None
        if remote_url() is None:
            return current_store()
        path = remote_url()
    if is_remote(path):
        from ..remote.api import remote_store

        store = remote_store(str(path))
        _store_override = str(path)
        return store  # type: ignore[return-value]
    store = open_store(path)  # a refused location (bad URL, foreign file) keeps the old store
    _store_override = os.fspath(path)
    return store


def store_location() -> str:
    """Where `current_store()` is: the set_store() value, MLOPS_JUPYTER_STORE, or the found
    `.mlops/` folder (a URL may hold a password: never put it on a command line)."""
    return os.fspath(_store_override or config.find_store_location())


def current_store() -> Store:
    """The store used by the module-level API: set_store(), MLOPS_JUPYTER_STORE, or the
    nearest `.mlops/` folder (created in the working directory on first use). Over a
    tracking server there is none: the caller's feature is refused by name."""
    url = remote_url()
    if url is not None:
        raise unsupported(caller_feature(), url)
    return open_store(_store_override or config.find_store_location())


def remote_url() -> str | None:
    """The tracking server's URL when the store location is http(s)://, else None."""
    loc = _store_override or os.environ.get("MLOPS_JUPYTER_STORE")
    return loc if is_remote(loc) else None


def start_run(
    name: str | None = None,
    experiment: str = "default",
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    *,
    nested: bool = True,
    parent: Run | str | None = None,
    wait: bool = True,
    _prev_run: Run | str | None = None,
) -> Run:
    """Start a run and make it active. Use as `with mj.start_run(...) as run:` or call
    `mj.end_run()` later. Starting while a run is active makes a child run of it;
    `parent` (a Run, or a run id or name in the same store) names the parent instead, e.g.
    from a worker process that has no active run of its own.
    `wait=False` (with a `name`): return at once and leave the run's row to the background
    writer, which writes it with its params, tags, first points and (if ended by then)
    its end in one transaction (sweeps start each trial run so). Reads (`mj.runs()`,
    `mj.flush()`, `run.store_id`) write it first; until then other processes do not see
    it (within one flush interval)."""
    if name is not None and not isinstance(name, str):
        raise InvalidInputError(f"run name must be a string, got {type(name).__name__}")
    if not isinstance(experiment, str) or not experiment:
        raise InvalidInputError("experiment must be a non-empty string")
    rstore.check_text(name, "run name")
    rstore.check_text(experiment, "experiment")
    # encoded here so that a refused value stops the run before anything is written
    params_json = rstore.encode_items(params, "params")
    tags_json = rstore.encode_items(tags, "tags")
    if parent is not None and not isinstance(parent, (Run, str)):
        raise InvalidInputError(f"parent must be a Run or a run id, got {type(parent).__name__}")
    url = remote_url()
    if url is not None:
        from ..remote import api as remote

        parent = parent if parent is not None else (_active if nested else None)
        run = remote.start_run(url, name, experiment, params, tags, parent, _forget, _prev_run)
        _push(run)
        _attach_hooks(run)  # telemetry and data autolog go through the server too
        return run
    store = current_store()
    if isinstance(parent, str):
        parent_id = rstore.resolve_run(store, parent)
        parent = None  # not a Run of this process
    else:
        parent = parent if parent is not None else (_active if nested else None)
        parent_id = parent._ref() if parent and parent.store is store else None
    if not wait and name is not None and _prev_run is None:
        return _start_later(store, name, experiment, params_json, tags_json, parent, parent_id)
    if parent_id is not None and parent_id < 0:
        parent_id = parent.store_id  # type: ignore[union-attr]  # a parent not written yet
    prev_id = None
    if _prev_run is not None:
        prev_id = (
            _prev_run._rid if isinstance(_prev_run, Run) else rstore.resolve_run(store, _prev_run)
        )
    rid, uid, name = rstore.create_run(
        store,
        name,
        experiment,
        params_json,
        tags_json,
        parent_id=parent_id,
        prev_run_id=prev_id,
    )
    w = writer_for(store)
    run = Run(store, w, rid, uid, name, experiment, parent, forget=_forget)
    w.add_run(rid)
    _push(run)
    _attach_hooks(run)
    return run


def _start_later(store, name, experiment, params_json, tags_json, parent, parent_id) -> Run:
    """`start_run(wait=False)`: the run's id is made here, its row queued to the writer."""
    w = writer_for(store)
    p = Pending(rstore.new_uid(), name, experiment, parent_id, params_json, tags_json)
    run = Run(store, w, p.prov, p.uid, name, experiment, parent, forget=_forget, pending=p)
    p.run = run
    w.create_later(p)
    w.add_run(p.prov)
    _push(run)
    _attach_hooks(run)
    return run


def _attach_hooks(run: Run) -> None:
    for hook in _start_hooks():
        try:
            hook(run)
        except Exception as e:
            import warnings

            warnings.warn(
                f"mlops-jupyter: {getattr(hook, '__module__', hook)} failed to attach: {e}",
                RuntimeWarning,
                stacklevel=3,
            )


def _push(run: Run) -> None:
    global _active
    with _lock:
        _stack.append(run)
        _active = run


def _forget(run: Run) -> None:
    global _active
    with _lock:
        if run in _stack:
            _stack.remove(run)
        _active = _stack[-1] if _stack else None


def active_run() -> Run | None:
    """The innermost active run, or None."""
    return _active


def end_run(status: str = "finished") -> None:
    """End the active run (flushing its points). Raises if none is active."""
    if _active is None:
        raise NoActiveRunError("end a run")
    _active.end(status)


def log_metric(key: str, value: float, step: int | None = None) -> None:
    """Log one metric point to the active run (buffered; under a microsecond per call)."""
    r = _active
    if r is None:
        raise NoActiveRunError("log a metric")
    if type(key) is not str or key not in KNOWN_KEYS:
        bad_key(key)
    if type(value) is not float:
        value = as_value(key, value)
    if step is not None and (type(step) is not int or step < 0 or step > MAX_STEP):
        step = as_step(step)
    r._append((r._rid, key, step, value, _now()))
    if len(r._stage) >= r._q.limit:
        r._q.full()


def log(step: int | None = None, **metrics: float) -> None:
    """Log several metrics at once: `mj.log(step=epoch, loss=l, acc=a)`."""
    r = _active
    if r is None:
        raise NoActiveRunError("log metrics")
    r._log(step, metrics)


def log_params(params: dict[str, Any]) -> None:
    """Record parameters on the active run."""
    if _active is None:
        raise NoActiveRunError("log params")
    _active.log_params(params)


def set_tags(tags: dict[str, Any]) -> None:
    """Set tags on the active run."""
    if _active is None:
        raise NoActiveRunError("set tags")
    _active.set_tags(tags)


def log_artifact(path: str | os.PathLike, name: str | None = None) -> str:
    """Copy a file or directory into the store as an artifact of the active run."""
    if _active is None:
        raise NoActiveRunError("log an artifact")
    return _active.log_artifact(path, name)


def flush() -> None:
    """Write every buffered point now (normally done in the background)."""
    from .writer import flush_all

    flush_all()


def _read_store() -> Store:
    store = current_store()
    from .writer import _writers

    w = _writers.get(store.key)
    if w is not None:
        w.flush()
    rstore.reconcile(store, config.stale_after())
    return store


def runs(
    experiment: str | None = None, status: str | None = None, include_system: bool = False
) -> pl.DataFrame:
    """Runs table (newest first): id, name, experiment, status, start/end, duration,
    `params.*` and `metrics.<key>.last/.min/.max` columns. `sys/` telemetry metrics are
    left out unless include_system=True."""
    if status is not None and status not in rstore.STATUSES:
        raise InvalidInputError(f"status must be one of {rstore.STATUSES}, got {status!r}")
    url = remote_url()
    if url is not None:
        from ..remote import api as remote

        return remote.runs(url, experiment, status, include_system)
    from ..store import query as q

    return q.runs_frame(_read_store(), experiment, status, include_system)


def run_refs(run_ids: Any) -> list:
    """A run, a run id/name, a list of those or a runs() frame, as a list of refs."""
    if isinstance(run_ids, (str, Run)):
        return [run_ids]
    if type(run_ids).__module__.startswith("polars") and hasattr(run_ids, "columns"):
        return run_ids["id"].to_list()
    return list(run_ids)


def _run_ids(store: Store, run_ids: Any) -> list[int]:
    if run_ids is None:
        return rstore.all_run_ids(store)
    return [resolve_run(r, store) for r in run_refs(run_ids)]


def resolve_run(ref: Run | str | None = None, store: Store | None = None) -> int:
    """The store id (`Run.store_id`) of a run given as a Run, its id, a unique id prefix
    (>= 4 characters) or its name (the latest run of that name); None means the active
    run. `store` defaults to the current store. Raises RunNotFoundError if there is none.
    Over a tracking server the server resolves it: the id of the run in the server's store."""
    if ref is None:
        ref = _active
        if ref is None:
            raise NoActiveRunError("resolve the active run")
    remote = store if store is not None else (ref.store if isinstance(ref, Run) else None)
    if remote is None and (url := remote_url()) is not None:
        from ..remote.api import remote_store

        remote = remote_store(url)
    if type(remote).__name__ == "RemoteStore":  # trackserver/data_more_routes.py
        from ..remote import data_more as rmore

        return rmore.resolve_run(remote, ref.id if isinstance(ref, Run) else ref)
    if store is None:
        store = ref.store if isinstance(ref, Run) else current_store()
    if isinstance(ref, Run):
        return ref.store_id if ref.store is store else rstore.resolve_run(store, ref.id)
    return rstore.resolve_run(store, ref)


def metrics(run_ids: Any = None, keys: str | list[str] | None = None) -> pl.DataFrame:
    """Long DataFrame (run_id, key, step, ts, value) of logged points.

    `run_ids`: None (all), a run id/name, a Run, a list of those, or a runs() frame."""
    if isinstance(keys, str):
        keys = [keys]
    if keys is not None and not all(isinstance(k, str) for k in keys):
        raise InvalidInputError("keys must be a string or a list of strings")
    url = remote_url()
    if url is not None:
        from ..remote import api as remote

        return remote.metrics(url, run_ids, keys)
    store = _read_store()
    from ..store import query as q

    return q.metrics_frame(store, _run_ids(store, run_ids), keys)


def get_run(ref: str) -> dict[str, Any]:
    """Details of one run (params, tags, metric summaries, artifacts, events) as a dict."""
    url = remote_url()
    if url is not None:
        from ..remote import api as remote

        return remote.get_run(url, ref)
    store = _read_store()
    from ..store import query as q

    return q.run_detail(store, rstore.resolve_run(store, ref))


def _excepthook(et, ev, tb):
    _uncaught.append(et)
    _prev_hook(et, ev, tb)


_prev_hook = sys.excepthook
sys.excepthook = _excepthook


@atexit.register
def _end_open_runs() -> None:
    status = exit_status
    if _uncaught:
        status = "killed" if issubclass(_uncaught[-1], KeyboardInterrupt) else "failed"
    for run in reversed(list(_stack)):
        try:
            run.end(status)
        except Exception:
            pass
