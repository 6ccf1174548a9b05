"""Framework integrations. Each lives in its own module, imported only when used, and
depends only on the public tracking API.

Explicit (recommended; they use each framework's own extension point):
    from mlops_jupyter.integrations.lightning import MlopsLogger        # Trainer(logger=...)
    from mlops_jupyter.integrations.transformers import MlopsCallback   # Trainer(callbacks=[...])
    from mlops_jupyter.integrations.keras import MlopsCallback          # model.fit(callbacks=[...])
    from mlops_jupyter.integrations.xgboost import MlopsCallback        # callbacks=[...]
    from mlops_jupyter.integrations.lightgbm import mlops_callback      # callbacks=[...]
    from mlops_jupyter.integrations.sklearn import log_fit              # after fit

Automatic: `mj.autolog()` turns on every supported framework that is installed, or
`mj.autolog("sklearn", "xgboost")` the ones named; `disable=True` turns them off again.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from ..errors import InvalidInputError

AUTOLOG = ("sklearn", "xgboost", "lightgbm")
EXPLICIT = {
    "lightning": "Trainer(logger=mlops_jupyter.integrations.lightning.MlopsLogger())",
    "transformers": "Trainer(callbacks=[mlops_jupyter.integrations.transformers.MlopsCallback()])",
    "keras": "model.fit(..., callbacks=[mlops_jupyter.integrations.keras.MlopsCallback()])",
}
_wrapped: dict[str, tuple[Any, str, Any]] = {}  # framework -> (module, attribute, original)


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _wrap_train(framework: str, make_callback: Any) -> None:
    """Wrap the public `train` function of xgboost/lightgbm: it takes `callbacks=` (the
    documented extension point), and the wrapper only adds ours when the caller passed
    none of its own kind. Reversible: the original is kept and put back by disable."""
    if framework in _wrapped:
        return
    mod = importlib.import_module(framework)
    orig = mod.train

    @functools.wraps(orig)
    def train(*args: Any, **kwargs: Any) -> Any:
        cbs = list(kwargs.get("callbacks") or [])
        if not any(type(c).__module__.startswith("mlops_jupyter") for c in cbs):
            try:
                cbs.append(make_callback(args, kwargs))
                kwargs["callbacks"] = cbs
            except Exception:  # never stop the user's training for our callback
                pass
        return orig(*args, **kwargs)

    mod.train = train
    _wrapped[framework] = (mod, "train", orig)


def _xgb_callback(args: tuple, kwargs: dict) -> Any:
    from .xgboost import MlopsCallback

    params = kwargs.get("params", args[0] if args else None)
    return MlopsCallback(params=dict(params) if isinstance(params, dict) else None)


def _lgb_callback(args: tuple, kwargs: dict) -> Any:
    from .lightgbm import MlopsCallback

    return MlopsCallback()


def autolog(
    *frameworks: str, log_models: bool = False, disable: bool = False, training_score: bool = True
) -> list[str]:
    """Log trainings of `frameworks` (default: every installed one of sklearn, xgboost,
    lightgbm) without code changes. Returns the frameworks turned on (or off).
    `log_models`: register each fitted scikit-learn model; `training_score=False`: skip
    scikit-learn's training score (a predict over the training data after each fit).

    Lightning, Transformers and Keras take a logger/callback argument instead (see the
    module docstring): naming them here raises with the line to add."""
    for f in frameworks:
        if f in EXPLICIT:
            raise InvalidInputError(f"frameworks: {f} is not auto-logged; pass {EXPLICIT[f]}")
        if f not in AUTOLOG:
            raise InvalidInputError(f"frameworks: unknown framework {f!r}; known: {AUTOLOG}")
    chosen = list(frameworks) or [f for f in AUTOLOG if _installed(f)]
    done = []
    for f in chosen:
        if disable:
            if f == "sklearn":
                from . import sklearn as sk

                sk.autolog(disable=True)
            elif f in _wrapped:
                mod, attr, orig = _wrapped.pop(f)
                setattr(mod, attr, orig)
            done.append(f)
            continue
        if not _installed(f):
            raise InvalidInputError(f"frameworks: {f} is not installed")
        if f == "sklearn":
            from . import sklearn as sk

            sk.autolog(log_models=log_models, training_score=training_score)
        elif f == "xgboost":
            _wrap_train("xgboost", _xgb_callback)
        elif f == "lightgbm":
            _wrap_train("lightgbm", _lgb_callback)
        done.append(f)
    return done


__all__ = ["autolog"]
