"""Background pruning reports: a completed trial shows its last logged value in optuna even
when a pruning decision came back too late to stop it (the objective ended before another
mj.log call could raise it)."""

from __future__ import annotations

import time

import pytest

import mlops_jupyter as mj

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _slow_first_report(path):
    """A real journal storage whose first intermediate value takes 0.4 s to store (a
    storage under load), so the pruning decision lands after the objective's last log."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    class SlowFirst(JournalStorage):
        def set_trial_intermediate_value(self, trial_id, step, intermediate_value):
            if step == 0:
                time.sleep(0.4)
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    return SlowFirst(JournalFileBackend(str(path)))


def test_late_pruning_decision_keeps_the_last_value(tmp_path):
    def quick(trial):
        x = trial.suggest_float("x", 1, 2)
        mj.log(step=0, loss=x)
        time.sleep(0.1)  # the reporter is now storing step 0
        for step in (1, 2, 3):
            mj.log(step=step, loss=x + step)
        return x + 3

    r = mj.sweep(
        quick,
        n_trials=2,
        storage=_slow_first_report(tmp_path / "j.log"),
        pruner=optuna.pruners.ThresholdPruner(upper=0.0),  # every report says "prune"
        seed=0,
        gate=False,
        live=False,
    )
    trials = r.study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        assert max(t.intermediate_values) == 3, t.intermediate_values
        assert t.intermediate_values[3] == pytest.approx(t.params["x"] + 3)
