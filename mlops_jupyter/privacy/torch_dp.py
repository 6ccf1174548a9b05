"""DP-SGD for torch, built on Opacus (per-sample gradients, clipping, noise, Poisson
sampling are all Opacus'); this module adds the checks, the noise calibration shared with
MLX, and the budget tracking hook."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError
from .accounting import EpsilonCurve, PrivacyError, calibrate_noise, check_delta, check_noise
from .budget import BudgetTracker


def check_model(model: Any) -> None:
    """Refuse layers DP-SGD cannot handle (BatchNorm mixes examples of a batch)."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        names = "; ".join(str(e) for e in errors[:5])
        raise PrivacyError(
            f"the model has layers DP-SGD cannot train privately: {names}. BatchNorm mixes "
            "the examples of a batch, so per-example gradients do not exist: replace it with "
            "GroupNorm/LayerNorm (opacus.validators.ModuleValidator.fix(model) does it), "
            "then create the optimizer on the fixed model"
        )


def _dataset_size(loader: Any) -> int:
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        raise InvalidInputError(
            "data_loader must be a torch DataLoader over a dataset with len()"
        ) from None


def make_private(
    model: Any,
    optimizer: Any,
    data_loader: Any,
    *,
    noise_multiplier: float | None = None,
    max_grad_norm: float = 1.0,
    delta: float | None = None,
    target_epsilon: float | None = None,
    epochs: int | None = None,
    accountant: str = "prv",
    warn_at: float = 0.8,
    stop_at_target: bool = True,
    checkpoint: bool = True,
    poisson_sampling: bool = True,
    secure_mode: bool = False,
    **opacus_kwargs: Any,
) -> tuple[Any, Any, Any]:
    """torch: wrap (model, optimizer, loader) with Opacus' PrivacyEngine and track the
    budget. See mlops_jupyter.privacy.make_private."""
    import torch
    from opacus import PrivacyEngine

    if not isinstance(model, torch.nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidInputError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    n = _dataset_size(data_loader)
    delta = require_delta(delta, n)
    max_grad_norm = _check_norm(max_grad_norm)
    check_model(model)
    batches = len(data_loader)
    if batches == 0:
        raise InvalidInputError("data_loader yields no batches")
    sample_rate = 1.0 / batches  # what Opacus' Poisson loader uses
    noise_multiplier = resolve_noise(
        noise_multiplier, target_epsilon, epochs, delta, sample_rate, batches, accountant
    )
    if not poisson_sampling:
        import warnings

        warnings.warn(
            "mlops-jupyter privacy: without Poisson sampling the accountant's epsilon is only "
            "an approximation of the guarantee",
            RuntimeWarning,
            stacklevel=3,
        )
    engine = PrivacyEngine(
        accountant="rdp" if accountant == "rdp" else "prv", secure_mode=bool(secure_mode)
    )
    p_model, p_opt, p_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=data_loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        poisson_sampling=poisson_sampling,
        **opacus_kwargs,
    )
    tracker = budget_tracker(
        noise_multiplier,
        sample_rate,
        delta,
        accountant,
        target_epsilon=target_epsilon if stop_at_target else None,
        warn_at=warn_at,
        max_grad_norm=max_grad_norm,
        framework="torch",
        state=lambda: (model, p_opt.original_optimizer),
        checkpoint=checkpoint,
    )
    accountant_hook = p_opt.step_hook

    # Runs inside DPOptimizer.pre_step after noising and before the parameter update:
    # raising here leaves the parameters and Opacus' own accountant untouched.
    def hook(opt: Any) -> None:
        tracker.before_step()
        if accountant_hook is not None:
            accountant_hook(opt)
        tracker.after_step()

    p_opt.attach_step_hook(hook)
    p_opt.privacy_tracker = tracker  # mj.privacy.tracker(optimizer) finds it
    p_opt.privacy_engine = engine
    return p_model, p_opt, p_loader


def _check_norm(max_grad_norm: Any) -> float:
    if isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, (int, float)):
        raise InvalidInputError(
            f"max_grad_norm must be a positive number, got {type(max_grad_norm).__name__}"
        )
    c = float(max_grad_norm)
    if not c > 0:
        raise InvalidInputError(
            f"max_grad_norm must be > 0 (the per-example gradient norm bound, e.g. 1.0), got {c}"
        )
    return c


def resolve_noise(
    noise_multiplier: Any,
    target_epsilon: Any,
    epochs: Any,
    delta: float,
    sample_rate: float,
    steps_per_epoch: int,
    accountant: str,
) -> float:
    """sigma given, or calibrated so that `epochs` epochs spend `target_epsilon`."""
    if noise_multiplier is not None:
        return check_noise(noise_multiplier)
    if target_epsilon is None or epochs is None:
        raise InvalidInputError(
            "give noise_multiplier=, or target_epsilon= and epochs= to calibrate the noise"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidInputError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(target_epsilon, (int, float)) or not 0 < target_epsilon < math.inf:
        raise InvalidInputError(
            f"target_epsilon must be a positive finite number, got {target_epsilon!r}"
        )
    return calibrate_noise(target_epsilon, delta, sample_rate, epochs * steps_per_epoch, accountant)


def require_delta(delta: Any, n: int) -> float:
    """delta is required (no default: a sound one depends on the dataset size N)."""
    if delta is None:
        raise InvalidInputError("delta is required (choose one well below 1/N, e.g. 1e-5)")
    return check_delta(delta, n)


def budget_tracker(
    sigma: float,
    sample_rate: float,
    delta: float,
    accountant: str,
    *,
    target_epsilon: float | None,
    warn_at: float,
    max_grad_norm: float | None,
    framework: str,
    state: Callable[[], tuple[Any, Any]],
    checkpoint: bool,
) -> BudgetTracker:
    """The budget tracker of a private optimizer (shared by torch and MLX)."""
    return BudgetTracker(
        EpsilonCurve(sigma, sample_rate, delta, accountant),
        target_epsilon=target_epsilon,
        warn_at=warn_at,
        max_grad_norm=max_grad_norm,
        framework=framework,
        state=state,
        checkpoint=checkpoint,
    )
