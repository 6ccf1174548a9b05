"""Sweep choices: optuna itself (imported lazily), samplers and pruners by name."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError, MlopsJupyterError

_SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
_PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")


class SweepError(MlopsJupyterError):
    """A sweep cannot start or continue (optuna missing, bad objective value, ...)."""


def _optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError("sweeps need optuna: pip install 'mlops-jupyter[optuna]'") from None
    return optuna


def _sampler(sampler: Any, seed: int | None):
    optuna = _optuna()
    if not isinstance(sampler, str):
        return sampler
    s = sampler.lower()
    if s == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if s == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if s == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if s == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    raise InvalidInputError(
        f"sampler must be one of {_SAMPLERS} or an optuna sampler, got {sampler!r}"
    )


def _pruner(pruner: Any):
    optuna = _optuna()
    if pruner is None or pruner == "none":
        return optuna.pruners.NopPruner(), False
    if not isinstance(pruner, str):
        return pruner, True
    p = pruner.lower()
    table = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5),
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    }
    if p not in table:
        raise InvalidInputError(
            f"pruner must be one of {_PRUNERS} or an optuna pruner, got {pruner!r}"
        )
    return table[p](), True
