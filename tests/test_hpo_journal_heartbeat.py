"""Heartbeats on a SQLite store's journal file (hpo/journal.py): when a trial goes stale
(a trial's start is its first beat), its retry, finished trials left alone. A SIGKILLed
worker on the journal: test_hpo_distributed.py."""

from __future__ import annotations

import os
import time

import pytest

import mlops_jupyter as mj
from mlops_jupyter.hpo.storage import storage_for
from mlops_jupyter.remote.optuna_wire import HEARTBEAT_ATTR

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = pytest.mark.skipif(
    os.environ.get("MLOPS_TEST_BACKEND", "sqlite") != "sqlite",
    reason="the journal file is the SQLite store's study storage",
)


def test_stale_two_intervals_after_the_last_beat_or_the_start(tmp_path):
    mj.set_store(str(tmp_path / "s"))
    st_storage = storage_for(heartbeat_interval=2, max_retry=1)
    study = optuna.create_study(study_name="beats", storage=st_storage)
    beating = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    silent = study.ask()  # its worker died before its first beat
    done = study.ask()
    st_storage.record_heartbeat(beating._trial_id)  # just started: the start is the beat
    assert HEARTBEAT_ATTR not in study.trials[beating.number].system_attrs
    time.sleep(1.1)  # over half an interval: a beat is written
    st_storage.record_heartbeat(beating._trial_id)
    assert HEARTBEAT_ATTR in study.trials[beating.number].system_attrs
    study.tell(done, 1.0)
    st_storage.record_heartbeat(done._trial_id)  # finished: silently nothing
    assert HEARTBEAT_ATTR not in study.trials[done.number].system_attrs
    optuna.storages.fail_stale_trials(study)
    assert {t.state.name for t in study.get_trials(deepcopy=False)} == {"RUNNING", "COMPLETE"}
    time.sleep(3.0)  # over two intervals since the silent trial's start
    st_storage.record_heartbeat(beating._trial_id)
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[silent.number].state.name == "FAIL"
    assert trials[beating.number].state.name == "RUNNING"  # it kept beating
    # its last beat two intervals old (what a killed worker leaves)
    st_storage.set_trial_system_attr(beating._trial_id, HEARTBEAT_ATTR, time.time() - 4.5)
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[beating.number].state.name == "FAIL"
    assert trials[done.number].state.name == "COMPLETE"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == beating.number]
    assert len(retry) == 1 and retry[0].state.name == "WAITING"
    assert retry[0].params == {"x": beating.params["x"]}
    # a second check (another worker looking too) fails and retries nothing more
    optuna.storages.fail_stale_trials(study)
    assert len(study.get_trials(deepcopy=False)) == len(trials)


def test_interval_must_be_a_positive_integer(tmp_path):
    from mlops_jupyter.hpo import journal_backend
    from mlops_jupyter.hpo.journal import HeartbeatJournalStorage

    for bad, err in ((0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match="heartbeat_interval"):
            HeartbeatJournalStorage(journal_backend(tmp_path / "j"), bad)
