"""optuna's journal file with heartbeats: the study storage of a SQLite store.

optuna's `JournalStorage` has no heartbeats, so a worker killed mid-trial (SIGKILL, OOM)
would leave its trial RUNNING for ever. `HeartbeatJournalStorage` keeps each running
trial's last beat as the trial system attribute `mlops.heartbeat` (seconds since the epoch,
this machine's clock), the same attribute the tracking server keeps for its journal
(trackserver/optuna_routes.py), so workers on the file and workers over the server fail
each other's dead trials. A trial is stale once its last beat is older than twice the
interval. A trial's start counts as its first beat: each beat is a locked, synced append
to the file, and sparing the one at the start keeps a short trial at one write less. So
a RUNNING trial that never beat is stale two intervals after its start: on a SQLite
store every trial is started through this storage, but a plain optuna `JournalStorage`
(no heartbeats) sharing the file with these workers would see its long trials failed.

Workers sharing one journal on several machines (a shared file system) compare clocks:
keep them within the interval (NTP does)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from ..remote.optuna_wire import HEARTBEAT_ATTR


def _age(t: FrozenTrial) -> float:
    """Seconds since the trial started (0 when the journal has no start)."""
    if t.datetime_start is None:
        return 0.0
    # the journal gives local naive times: timestamp() reads them as local
    return max(0.0, time.time() - t.datetime_start.timestamp())


def stale_trial_ids(storage: Any, study_id: int, grace: float) -> list[int]:
    """The RUNNING trials of a journal-backed `storage` whose last beat (or start, when
    they never beat) is more than `grace` seconds old."""
    now = time.time()
    out = []
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.system_attrs.get(HEARTBEAT_ATTR)
        if not isinstance(beat, (int, float)):
            beat = now - _age(t)  # its start is its first beat
        if now - beat > grace:
            out.append(storage.get_trial_id_from_study_id_trial_number(study_id, t.number))
    return out


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A `JournalStorage` whose running trials send heartbeats every `heartbeat_interval`
    seconds; `stale_trial_callback` (e.g. optuna's retry callback) runs for each trial
    failed for a missing heartbeat."""

    def __init__(
        self,
        backend: Any,
        heartbeat_interval: int,
        stale_trial_callback: Callable[[Any, FrozenTrial], None] | None = None,
    ) -> None:
        if isinstance(heartbeat_interval, bool) or not isinstance(heartbeat_interval, int):
            raise TypeError("heartbeat_interval must be a positive integer of seconds")
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be a positive integer of seconds")
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        t = self.get_trial(trial_id)  # reads only what others appended since
        if t.state.is_finished():
            return
        if HEARTBEAT_ATTR not in t.system_attrs and _age(t) < self.heartbeat_interval / 2:
            return  # just started: its start is its first beat
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            pass  # finished meanwhile (its worker told, or another failed it): nothing to watch

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return stale_trial_ids(self, study_id, 2 * self.heartbeat_interval)

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[Any, FrozenTrial], None] | None:
        return self.stale_trial_callback

    # optuna < 4.9 asks for the callback under its old name
    def get_failed_trial_callback(self) -> Callable[[Any, FrozenTrial], None] | None:
        return self.stale_trial_callback
