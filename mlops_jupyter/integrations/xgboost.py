"""XGBoost: a training callback logging every evaluation metric per iteration and the
feature importance as a table at the end.

    booster = xgb.train(params, dtrain, evals=[(dval, "val")], callbacks=[MlopsCallback()])
    XGBRegressor(callbacks=[MlopsCallback()]).fit(X, y, eval_set=[(Xv, yv)])

Metric keys are "<data>-<metric>" (e.g. "validation_0-rmse"), the names of
`evals_result()`; the step is the boosting round."""

from __future__ import annotations

from typing import Any

import xgboost

from .base import Guarded, RunHandle, guarded, log_importance, log_numbers, plain_params


class MlopsCallback(xgboost.callback.TrainingCallback, Guarded):
    """Log eval metrics per round, `params` (if given) at the start, and feature importance
    (`importance_type`, default "gain") as table `feature_importance` at the end."""

    integration = "XGBoost"

    def __init__(
        self,
        run: Any = None,
        params: dict[str, Any] | None = None,
        importance_type: str = "gain",
        log_importance: bool = True,
    ) -> None:
        super().__init__()
        self.handle = RunHandle(run, "xgboost")
        self.params = params
        self.importance_type = importance_type
        self.log_importance = log_importance

    def __deepcopy__(self, memo: dict) -> MlopsCallback:
        # estimators get cloned (sklearn's clone, CV): share the run, never copy it
        return MlopsCallback(
            self.handle.given, self.params, self.importance_type, self.log_importance
        )

    def before_training(self, model: Any) -> Any:
        self._start(model)
        return model

    @guarded
    def _start(self, model: Any) -> None:
        run = self.handle.get()
        if self.params:
            run.log_params(plain_params(self.params))

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        self._iteration(epoch, evals_log)
        return False  # never stop training

    @guarded
    def _iteration(self, epoch: int, evals_log: dict) -> None:
        run = self.handle.get()
        for data, mets in evals_log.items():
            last = {f"{data}-{name}": values[-1] for name, values in mets.items() if values}
            # cross-validation reports (mean, std) pairs
            log_numbers(
                run, {k: v[0] if isinstance(v, tuple) else v for k, v in last.items()}, epoch
            )

    def after_training(self, model: Any) -> Any:
        self._end(model)
        self._release()
        return model

    @guarded
    def _end(self, model: Any) -> None:
        if self.log_importance and hasattr(model, "get_score"):
            rounds = model.num_boosted_rounds() if hasattr(model, "num_boosted_rounds") else None
            log_importance(
                model.get_score(importance_type=self.importance_type),
                run=self.handle.get(),
                step=rounds,  # at the round count: no store lookup for the next step
            )
