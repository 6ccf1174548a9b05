"""scikit-learn: log what a fit learned (estimator params, fit params, training and
validation scores, per-iteration curves, search results) and register the fitted model
when asked.

    log_fit(model.fit(X, y), X, y, X_val=Xv, y_val=yv, register="churn")   # explicit
    mj.autolog("sklearn")                                                   # every fit

scikit-learn has no callback or hook API for `fit`, so autolog has to wrap it: it replaces
`fit` on the public estimator classes listed by `sklearn.utils.all_estimators()` (only
on the class that defines it) with a wrapper that calls the original and then logs.
The originals are kept and `autolog("sklearn", disable=True)` puts them back exactly.
Only the outermost fit is logged: the fits a Pipeline, an ensemble or a search makes inside
it are not separate runs."""

from __future__ import annotations

import functools
import threading
import types
import warnings
from typing import Any

from .base import log_numbers, number, plain_params

_SERIES = ("loss_curve_", "validation_scores_", "train_score_", "validation_score_")
_patched: dict[type, Any] = {}
_state = threading.local()
_options = {"log_models": False, "training_score": True}
_warned = [False]


def _run_for(run: Any, name: str) -> tuple[Any, bool]:
    from ..tracking import active_run, start_run

    if run is not None:
        return run, False
    r = active_run()
    if r is not None:
        return r, False
    return start_run(name), True


def log_fit(
    estimator: Any,
    X: Any = None,
    y: Any = None,
    *,
    X_val: Any = None,
    y_val: Any = None,
    fit_params: dict[str, Any] | None = None,
    register: str | None = None,
    run: Any = None,
    training_score: bool = True,
) -> dict[str, float]:
    """Log a fitted estimator to `run` (default: the active run, else a new one): its
    params, `fit_params` (scalars), `training_score` (estimator.score on X, y),
    `validation_score` (on X_val, y_val), per-iteration curves (loss_curve_,
    validation_scores_, train_score_, validation_score_) and a search's best_score_ and
    best_params_. `register`: also store it in the model registry under that name.
    `training_score=False` skips the training score (a predict over X, often a tenth of
    the fit's time). Returns the scores logged."""
    r, owned = _run_for(run, type(estimator).__name__)
    try:
        params = plain_params(estimator.get_params(deep=False))
        params["estimator_class"] = f"{type(estimator).__module__}.{type(estimator).__qualname__}"
        for k, v in (fit_params or {}).items():
            if v is None or isinstance(v, (bool, int, float, str)):
                params[f"fit.{k}"] = v
        best = getattr(estimator, "best_params_", None)
        if isinstance(best, dict):
            params.update(plain_params(best, "best."))
        r.log_params(params)
        scores: dict[str, float] = {}
        if hasattr(estimator, "score"):
            if training_score and X is not None and y is not None:
                scores["training_score"] = float(estimator.score(X, y))
            if X_val is not None and y_val is not None:
                scores["validation_score"] = float(estimator.score(X_val, y_val))
        if (b := number(getattr(estimator, "best_score_", None))) is not None:
            scores["best_cv_score"] = b
        log_numbers(r, scores, None)
        for attr in _SERIES:
            curve = getattr(estimator, attr, None)
            if curve is None or isinstance(curve, (str, bytes)) or not hasattr(curve, "__len__"):
                continue
            key = attr.rstrip("_")
            for i, v in enumerate(curve):
                if (f := number(v)) is not None:
                    r.log_metric(key, f, i)
        if register:
            from ..registry import register_model

            register_model(register, estimator, run=r)
        return scores
    finally:
        if owned:
            r.end()


def _wrap(orig: Any) -> Any:
    @functools.wraps(orig)
    def fit(self: Any, X: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(_state, "depth", 0)
        _state.depth = depth + 1
        try:
            out = (
                orig(self, X, y, *args, **kwargs)
                if y is not None
                else orig(self, X, *args, **kwargs)
            )
        finally:
            _state.depth = depth
        if depth == 0:
            try:
                reg = type(self).__name__ if _options["log_models"] else None
                log_fit(
                    self,
                    X,
                    y,
                    fit_params=kwargs,
                    register=reg,
                    training_score=_options["training_score"],
                )
            except Exception as e:  # logging must never break the user's fit
                if not _warned[0]:
                    _warned[0] = True
                    warnings.warn(
                        f"mlops-jupyter: scikit-learn autolog failed (the fit itself worked; "
                        f"later failures are not reported): {type(e).__name__}: {e}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        return out

    fit.__mlops_original__ = orig  # type: ignore[attr-defined]
    return fit


def autolog(
    log_models: bool = False, disable: bool = False, training_score: bool = True
) -> list[type]:
    """Log every top-level `fit` of a scikit-learn estimator (see the module docstring);
    `disable=True` restores the original methods. Returns the classes patched/restored."""
    if disable:
        restored = list(_patched)
        for cls, orig in _patched.items():
            cls.fit = orig
        _patched.clear()
        return restored
    _options["log_models"] = log_models
    _options["training_score"] = training_score
    _warned[0] = False
    from sklearn.utils import all_estimators

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated estimators warn on import
        classes = [cls for _, cls in all_estimators()]
    for cls in classes:
        # patch the class that defines the `fit` this estimator uses (often a base class
        # such as BaseSearchCV), so every estimator sharing it is covered once
        owner = next((c for c in cls.__mro__ if "fit" in c.__dict__), None)
        if owner is None or owner in _patched or not owner.__module__.startswith("sklearn."):
            continue
        f = owner.__dict__["fit"]
        if not isinstance(f, types.FunctionType):
            continue
        _patched[owner] = f
        owner.fit = _wrap(f)
    return list(_patched)
