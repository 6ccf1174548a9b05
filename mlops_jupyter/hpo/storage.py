"""The optuna storage a sweep's workers share, and trial heartbeats.

`storage_for` picks it: RDBStorage in the store's own database where it has one
(PostgreSQL), the tracking server's storage over HTTP, else the journal file beside the
store (journal.py adds heartbeats to it); each with heartbeats and a retry callback, so a
dead worker's trial is failed and run again.
Ask/tell loops (distributed.work) record heartbeats themselves (`heartbeat`) and fail the
trials of workers that stopped beating (`fail_stale`)."""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from typing import Any

_storages: dict[tuple, Any] = {}
_last_check: dict[tuple, float] = {}


def storage_for(store=None, *, heartbeat_interval: int = 10, max_retry: int | None = 3):
    """The optuna storage of `store` (default: the current one): RDBStorage in the store's
    own database where the store has one for it (PostgreSQL), otherwise the journal file
    beside the store; with heartbeats either way, so a dead worker's running trial is
    failed and retried up to `max_retry` times. One storage object per process and
    settings."""
    from . import _optuna

    optuna = _optuna()
    if store is None:
        from ..tracking.api import current_store, remote_url

        url = remote_url()
        store = current_store() if url is None else _remote(url)
    if type(store).__name__ == "RemoteStore":  # a tracking server: optuna's calls over HTTP
        return _remote_storage(store.url, heartbeat_interval, max_retry)
    url = store.optuna_storage_url()
    if url is None:
        return _journal(store.root / "optuna.journal", heartbeat_interval, max_retry)
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


def _retry(max_retry: int | None) -> Any:
    """optuna's callback that enqueues a stale trial's params again (up to `max_retry`)."""
    try:  # optuna >= 4.9's name
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback as Retry
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():  # "experimental" in optuna's words
        warnings.simplefilter("ignore", ExperimentalWarning)
        return Retry(max_retry)


def _journal(path, heartbeat_interval: int, max_retry: int | None):
    """The journal file at `path` with heartbeats (journal.py). One per process and
    settings: each instance replays the file."""
    key = (str(path), heartbeat_interval, max_retry)
    st = _storages.get(key)
    if st is None:
        from . import journal_backend
        from .journal import HeartbeatJournalStorage

        st = _storages[key] = HeartbeatJournalStorage(
            journal_backend(path), heartbeat_interval, _retry(max_retry)
        )
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
        from ..remote.optuna_storage import RemoteOptunaStorage

        st = _storages[key] = RemoteOptunaStorage(
            url,
            heartbeat_interval=heartbeat_interval,
            heartbeat_stale_trial_callback=_retry(max_retry),
        )
    return st


def heartbeat_of(storage) -> float | None:
    """The heartbeat interval of `storage` in seconds, or None without heartbeats."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        return float(storage.get_heartbeat_interval())
    return None


@contextlib.contextmanager
def heartbeat(storage, trial):
    """Record the heartbeat of `trial` (kept in `storage`) every interval while the body
    runs (what `study.optimize` does; ask/tell loops must do it themselves)."""
    every = heartbeat_of(storage)
    if every is None:
        yield
        return
    # optuna's Trial shows its id only privately (its own optimize loop reads it too); the
    # public lookup by study and number would cost two storage round trips per trial
    trial_id = trial._trial_id
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
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


def fail_stale(storage, st) -> None:
    """Fail the running trials of study `st` (kept in `storage`) whose worker stopped
    beating, and enqueue their retries; a no-op without heartbeats."""
    every = heartbeat_of(storage)
    if every is not None:
        import optuna

        # a trial goes stale only after its grace period: checking every half interval
        # is as quick to notice and spares a query per trial
        now, key = time.monotonic(), (id(storage), st.study_name)
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
