"""An optuna storage over the tracking server, so `mj.sweep`, `%%mlops_sweep` and
`mlops-jupyter sweep join` work with MLOPS_JUPYTER_STORE=http(s)://... (routes:
trackserver/optuna_routes.py). Every BaseStorage method is one `POST
/api/v1/optuna/{method}` with JSON arguments; the server calls its store's own optuna
storage (RDBStorage on PostgreSQL, the journal file on SQLite), so local and remote workers
share one study.

- Trials travel as JSON: params in optuna's internal (float) form with each distribution
  as `distribution_to_json`, attributes as JSON texts (they may hold NaN), floats that are
  not finite as "nan"/"inf"/"-inf", datetimes as ISO 8601 in UTC (optuna's are naive local
  time on both ends).
- `get_all_trials` keeps finished trials in memory and asks only for newer or unfinished
  ones (as optuna's gRPC proxy does): a worker's loop reads the study every trial.
- Heartbeats: `record_heartbeat` and the stale-trial query are forwarded; the server
  keeps them in RDBStorage's table on PostgreSQL and as a trial system attribute in the
  journal, with its own clock, so a dead remote worker's trial is failed by any worker
  (`optuna.storages.fail_stale_trials`) and retried by the callback kept here.
- Retries while the server cannot be reached (MLOPS_JUPYTER_SWEEP_WAIT_S, default 60 s)
  only where a repeat is harmless: reads, attribute and intermediate-value writes,
  heartbeats. A trial creation carries a random key that the new trial keeps as a system
  attribute: a repeat asks the server to find it first, so a lost answer never makes two
  trials. A repeated param or state write checks the trial first. Creating and deleting
  studies are sent once."""

from __future__ import annotations

import atexit
import copy
import json
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Container, Sequence
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    distribution_to_json,
)
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._base import DEFAULT_STUDY_NAME_PREFIX
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study._frozen import FrozenStudy
from optuna.study._study_direction import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ..errors import StoreError
from .client import Client, ServerRefused, ServerUnavailable, token
from .optuna_wire import (
    dec_attrs,
    enc_float,
    study_directions,
    trial_from_json,
    trial_to_json,
)

READ_AGAIN_S = 0.05  # a study's trials read this recently, with no write since, are reused


# -- the storage ------------------------------------------------------------------------
def _wait_s() -> float:
    try:
        return max(0.0, float(os.environ.get("MLOPS_JUPYTER_SWEEP_WAIT_S", "60")))
    except ValueError:
        return 60.0


class RemoteOptunaStorage(BaseStorage, BaseHeartbeat):
    """optuna's storage contract forwarded to the tracking server at `url` (module
    docstring). `heartbeat_interval` and `heartbeat_stale_trial_callback` act as
    RDBStorage's do; the grace period is twice the interval."""

    def __init__(
        self,
        url: str,
        *,
        heartbeat_interval: int | None = 10,
        heartbeat_stale_trial_callback: Callable[[Any, FrozenTrial], None] | None = None,
    ) -> None:
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be a positive integer")
        self.url = url.rstrip("/")
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback
        self._setup()

    def _setup(self) -> None:
        self._client = Client(self.url)  # its own connection: the heartbeat thread uses it too
        atexit.register(self._client.close)
        self._cache: dict[int, dict[str, Any]] = {}  # study id: finished trials and marks
        self._lock = threading.Lock()
        # fewer round trips per trial (each ~2 ms even on loopback): the trial a creation
        # answered (optuna reads it right after), the creation time of trials whose first
        # heartbeat the server recorded with them, when each study was last checked for
        # stale trials, and a count of this client's writes (a cached read is reused for
        # READ_AGAIN_S only while it is unchanged)
        self._fresh: dict[int, FrozenTrial] = {}
        self._born: dict[int, float] = {}
        self._stale_at: dict[int, float] = {}
        self._writes = 0

    def __getstate__(self) -> dict[str, Any]:  # a worker spec may carry the storage
        state = self.__dict__.copy()
        for k in ("_client", "_cache", "_lock", "_fresh", "_born", "_stale_at", "_writes"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def __repr__(self) -> str:
        return f"RemoteOptunaStorage({self._client.shown!r})"

    # -- requests ---------------------------------------------------------------------
    def _call(
        self,
        method: str,
        body: dict[str, Any],
        *,
        retry: bool = True,
        verify: Callable[[], bool] | None = None,
    ) -> Any:
        """POST one method; its `result`. `retry`: resend while the server cannot be
        reached; `verify`: before a resend, whether the first attempt took effect."""
        if not token():
            raise StoreError(
                f"MLOPS_JUPYTER_TOKEN is not set: the tracking server {self._client.shown} "
                "needs a token for sweeps (mlops-jupyter server token add NAME --scope write)"
            )
        if not method.startswith("get_"):
            self._writes += 1
            self._fresh.clear()
        deadline = time.monotonic() + _wait_s()
        delay, attempt = 0.1, 0
        while True:
            try:
                if attempt and verify is not None and verify():
                    return None
                # a creation or a checked write is never sent twice unmarked
                resend = verify is None and "key" not in body
                out = self._client.request("POST", f"/api/v1/optuna/{method}", body, resend=resend)
                return out.get("result") if isinstance(out, dict) else None
            except ServerRefused as e:
                raise self._refused(e) from None
            except ServerUnavailable:
                if not retry or time.monotonic() > deadline:
                    raise
            attempt += 1
            if "key" in body:
                body = {**body, "retry": True}
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    def _refused(self, e: ServerRefused) -> Exception:
        """optuna's exception for the server's 4xx answer."""
        if e.status == 401:
            return StoreError(
                f"the tracking server {self._client.shown} refused the token in "
                f"MLOPS_JUPYTER_TOKEN (missing, unknown, revoked or expired): {e}"
            )
        if e.status == 403:
            return StoreError(
                f"the token in MLOPS_JUPYTER_TOKEN may not change sweeps on the tracking "
                f"server {self._client.shown} (a read token? sweeps need scope write): {e}"
            )
        if e.code == "STUDY_EXISTS":
            return DuplicatedStudyError(str(e))
        if e.code == "TRIAL_FINISHED":
            return UpdateFinishedTrialError(str(e))
        if e.status == 404:
            return KeyError(str(e))
        return ValueError(str(e))

    # -- studies ----------------------------------------------------------------------
    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        if study_name is None:
            study_name = DEFAULT_STUDY_NAME_PREFIX + secrets.token_hex(16)
        body = {"directions": [d.name for d in directions], "study_name": study_name}
        return self._call("create_new_study", body, retry=False)

    def delete_study(self, study_id: int) -> None:
        self._call("delete_study", {"study_id": study_id}, retry=False)
        with self._lock:
            self._cache.pop(study_id, None)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(
            "set_study_user_attr", {"study_id": study_id, "key": key, "value": json.dumps(value)}
        )

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        body = {"study_id": study_id, "key": key, "value": json.dumps(value)}
        self._call("set_study_system_attr", body)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call("get_study_id_from_name", {"study_name": study_name})

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call("get_study_name_from_id", {"study_id": study_id})

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return study_directions(self._call("get_study_directions", {"study_id": study_id}))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        out = self._call("get_study_user_attrs", {"study_id": study_id})
        return dec_attrs(out, "user_attrs")

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        out = self._call("get_study_system_attrs", {"study_id": study_id})
        return dec_attrs(out, "system_attrs")

    def get_all_studies(self) -> list[FrozenStudy]:
        return [
            FrozenStudy(
                study_name=s["study_name"],
                direction=None,
                directions=study_directions(s["directions"]),
                user_attrs=dec_attrs(s["user_attrs"], "user_attrs"),
                system_attrs=dec_attrs(s["system_attrs"], "system_attrs"),
                study_id=s["study_id"],
            )
            for s in self._call("get_all_studies", {})
        ]

    # -- trials -----------------------------------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        body: dict[str, Any] = {"study_id": study_id, "key": secrets.token_hex(16)}
        if template_trial is not None:
            body["template"] = trial_to_json(template_trial)
        if self.heartbeat_interval is not None:
            body["heartbeat"] = True  # a RUNNING trial's first beat, recorded with it
        t0 = time.monotonic()
        out = self._call("create_new_trial", body)
        trial = trial_from_json(out["trial"])
        self._fresh[trial._trial_id] = trial
        if out.get("beat"):
            self._born[trial._trial_id] = t0
        return trial._trial_id

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        body = {
            "trial_id": trial_id,
            "param_name": param_name,
            "param_value_internal": enc_float(param_value_internal),
            "distribution": distribution_to_json(distribution),
        }

        def done() -> bool:
            return param_name in self.get_trial(trial_id).params

        self._call("set_trial_param", body, verify=done)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        body = {"study_id": study_id, "trial_number": trial_number}
        return self._call("get_trial_id_from_study_id_trial_number", body)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        body = {
            "trial_id": trial_id,
            "state": state.name,
            "values": None if values is None else [enc_float(v) for v in values],
        }

        def done() -> bool:  # a lost answer of a write that took effect
            t = self.get_trial(trial_id)
            return t.state == state and (values is None or t.values == list(values))

        out = self._call("set_trial_state_values", body, verify=done)
        if out is None:  # a repeat found the first attempt done
            return True
        self._fresh[trial_id] = trial_from_json(out["trial"])  # optuna reads it next
        return bool(out["updated"])

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        body = {"trial_id": trial_id, "step": step, "value": enc_float(intermediate_value)}
        self._call("set_trial_intermediate_value", body)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        body = {"trial_id": trial_id, "key": key, "value": json.dumps(value)}
        self._call("set_trial_user_attr", body)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        body = {"trial_id": trial_id, "key": key, "value": json.dumps(value)}
        self._call("set_trial_system_attr", body)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        fresh = self._fresh.pop(trial_id, None)
        if fresh is not None:  # answered by its creation, nothing written since
            return fresh
        return trial_from_json(self._call("get_trial", {"trial_id": trial_id}))

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        with self._lock:
            entry = self._cache.setdefault(study_id, {"trials": {}, "open": set(), "last": -1})
            if entry.get("writes") != self._writes or time.monotonic() - entry["at"] > READ_AGAIN_S:
                self._refresh(study_id, entry)
            trials = sorted(entry["trials"].values(), key=lambda t: t.number)
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def _refresh(self, study_id: int, entry: dict[str, Any]) -> None:
        """Fetch the trials newer than the newest finished one, and the unfinished ones."""
        writes = self._writes
        body = {
            "study_id": study_id,
            "since_id": entry["last"],
            "include": sorted(entry["open"]),
        }
        for d in self._call("get_trials", body):
            t = trial_from_json(d)
            entry["trials"][t.number] = t
            if t.state.is_finished():
                entry["open"].discard(t._trial_id)
                entry["last"] = max(entry["last"], t._trial_id)
            else:
                entry["open"].add(t._trial_id)
        entry["writes"], entry["at"] = writes, time.monotonic()

    # -- heartbeats -------------------------------------------------------------------
    def record_heartbeat(self, trial_id: int) -> None:
        born = self._born.pop(trial_id, None)
        if born is not None and time.monotonic() - born < (self.heartbeat_interval or 0) / 2:
            return  # the server recorded this beat when it made the trial
        self._call("record_heartbeat", {"trial_id": trial_id})

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        # a trial goes stale only after twice the interval: asking every half interval
        # notices as soon, and spares a request per trial
        now = time.monotonic()
        if now - self._stale_at.get(study_id, -1e9) < self.heartbeat_interval / 2:
            return []
        self._stale_at[study_id] = now
        body = {"study_id": study_id, "grace_s": 2 * self.heartbeat_interval}
        return self._call("get_stale_trial_ids", body)

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[Any, FrozenTrial], None] | None:
        return self.heartbeat_stale_trial_callback

    def get_failed_trial_callback(self) -> Callable[[Any, FrozenTrial], None] | None:
        """optuna < 4.9's name of `get_heartbeat_stale_trial_callback`."""
        return self.heartbeat_stale_trial_callback
