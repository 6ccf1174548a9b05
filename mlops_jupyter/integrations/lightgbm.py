"""LightGBM: a callback logging every evaluation metric per iteration and the feature
importance as a table after the last iteration.

    lgb.train(params, dtrain, valid_sets=[dval], callbacks=[mlops_callback()])
    LGBMRegressor().fit(X, y, eval_set=[(Xv, yv)], callbacks=[mlops_callback()])

Metric keys are "<data>-<metric>" (e.g. "valid_0-l2"), the names of `evals_result_`;
the step is the iteration."""

from __future__ import annotations

from typing import Any

from .base import Guarded, RunHandle, guarded, log_importance, log_numbers, plain_params


class MlopsCallback(Guarded):
    """A LightGBM callback (pass an instance in `callbacks=`)."""

    integration = "LightGBM"
    order = 30  # after LightGBM's own evaluation recording (order 20)

    def __init__(
        self, run: Any = None, importance_type: str = "gain", log_importance: bool = True
    ) -> None:
        self.handle = RunHandle(run, "lightgbm")
        self.importance_type = importance_type
        self.log_importance = log_importance
        self._params_logged = False

    def __deepcopy__(self, memo: dict) -> MlopsCallback:
        return MlopsCallback(self.handle.given, self.importance_type, self.log_importance)

    def __call__(self, env: Any) -> None:
        self._log(env)
        if env.iteration + 1 >= env.end_iteration:
            self._release()

    @guarded
    def _log(self, env: Any) -> None:
        run = self.handle.get()
        if not self._params_logged:
            self._params_logged = True
            run.log_params(plain_params(dict(env.params)))
        mets = {}
        for item in env.evaluation_result_list or ():
            data, name, value = item[0], item[1], item[2]
            mets[f"{data}-{name}"] = value
        log_numbers(run, mets, env.iteration)
        if env.iteration + 1 >= env.end_iteration and self.log_importance:
            b = env.model
            names = b.feature_name()
            vals = b.feature_importance(importance_type=self.importance_type)
            log_importance(
                dict(zip(names, (float(v) for v in vals))), run=run, step=env.iteration + 1
            )


def mlops_callback(
    run: Any = None, importance_type: str = "gain", log_importance: bool = True
) -> MlopsCallback:
    """The LightGBM callback (a function-style alias of MlopsCallback)."""
    return MlopsCallback(run, importance_type, log_importance)
