"""optuna's RDBStorage that rides out a database restart: each storage call is retried
while the server cannot be reached (connection refused, dropped, shutting down), for up to
`MLOPS_JUPYTER_SWEEP_WAIT_S` seconds (default 60), so sweep workers reconnect and continue
instead of failing their trial. Refusals (bad password, missing database, invalid data)
are raised at once.

A retried write whose first attempt committed before the connection dropped is rare and
harmless here: a repeated param or attribute write stores the same value; a repeated
`set_trial_state_values` finds the trial finished, which the sweep loop treats as told; a
repeated trial creation leaves one trial that never runs (it is not counted)."""

from __future__ import annotations

import functools
import os
import random
import time
from typing import Any

from optuna.storages import RDBStorage

# every BaseStorage call that reaches the database (heartbeat ones included)
_CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "record_heartbeat",
    # what optuna's cache layer calls on the storage it wraps
    "_create_new_trial",
    "_get_best_trial_id",
    "_set_trial_param",
    "_get_stale_trial_ids",
    "_get_trials",
)
# SQLSTATE classes of a lost server: 08 connection exceptions; 57P01-03 shutdown, crash,
# start-up
_LOST_STATES = ("57P01", "57P02", "57P03")
_LOST_TEXT = (
    "connection refused",
    "could not connect",
    "server closed the connection",
    "terminating connection",
    "connection is closed",
    "connection is lost",
    "no connection to the server",
    "the database system is starting up",
    "the database system is shutting down",
    "consuming input failed",
    "timeout expired",
)


def lost_connection(e: BaseException) -> bool:
    """Whether `e` (optuna's StorageInternalError or SQLAlchemy's error, with the driver's
    error as its cause) means the database server could not be reached."""
    seen = 0
    c: BaseException | None = e
    while c is not None and seen < 8:
        seen += 1
        if getattr(c, "connection_invalidated", False):
            return True
        orig = getattr(c, "orig", None)
        state = getattr(orig, "sqlstate", None) or getattr(c, "sqlstate", None)
        if state:
            return state.startswith("08") or state in _LOST_STATES
        if type(c).__name__ in ("OperationalError", "InterfaceError"):
            text = str(c).lower()
            if any(t in text for t in _LOST_TEXT):
                return True
        c = c.__cause__ or c.__context__
    return False


def _wait_s() -> float:
    try:
        return max(0.0, float(os.environ.get("MLOPS_JUPYTER_SWEEP_WAIT_S", "60")))
    except ValueError:
        return 60.0


def _retrying(name: str, fn):
    @functools.wraps(fn)
    def call(self, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + _wait_s()
        delay = 0.1
        while True:
            try:
                return fn(self, *args, **kwargs)
            except Exception as e:  # optuna wraps the driver error in StorageInternalError
                if not lost_connection(e) or time.monotonic() > deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    return call


class RetryingRDBStorage(RDBStorage):
    """RDBStorage whose calls wait out a database restart (see the module docstring)."""


for _name in _CALLS:
    if hasattr(RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retrying(_name, getattr(RDBStorage, _name)))
