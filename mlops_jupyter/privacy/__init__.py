"""Differentially private training (DP-SGD) with the privacy budget tracked in the run.

    model, optimizer, loader = mj.privacy.make_private(
        model, optimizer, loader, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    # or target_epsilon=3.0, epochs=5: the noise is calibrated to spend 3.0 in 5 epochs

torch goes through Opacus; MLX through per-example gradients with `mx.vmap`. Either way the
accountant (Opacus' RDP/PRV or dp-accounting's RDP/PLD) logs `privacy/epsilon` per step,
a budget rule warns at `warn_at` of the target and stops cleanly before exceeding it, and
`mj.register_model` records the guarantee with the model. See docs/privacy.md.
"""

from __future__ import annotations

from typing import Any

from .accounting import ACCOUNTANTS, EpsilonCurve, PrivacyError, calibrate_noise
from .accounting import epsilon as compute_epsilon
from .budget import BudgetTracker, PrivacyBudgetExhausted
from .guarantee import (
    PromotionPolicy,
    guarantee,
    model_guarantee,
    promotion_policy,
    set_promotion_policy,
)

__all__ = [
    "ACCOUNTANTS",
    "BudgetTracker",
    "EpsilonCurve",
    "PrivacyBudgetExhausted",
    "PrivacyError",
    "PromotionPolicy",
    "calibrate_noise",
    "compute_epsilon",
    "epsilon",
    "guarantee",
    "make_private",
    "model_guarantee",
    "promotion_policy",
    "set_promotion_policy",
    "tracker",
]


def _is_mlx(model: Any) -> bool:
    return type(model).__module__.startswith("mlx") or any(
        c.__module__.startswith("mlx.nn") for c in type(model).__mro__
    )


def make_private(model: Any, optimizer: Any, data: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
    """Make (model, optimizer, data) train with DP-SGD and track the privacy budget.

    Give `noise_multiplier=` (sigma), or `target_epsilon=` and `epochs=` to calibrate it
    (with both sigma and target_epsilon, the target only sets the budget rule);
    `max_grad_norm=` (per-example clipping bound, default 1.0); `delta=` (required, < 1/N);
    `accountant=` "prv" (default), "rdp", "dpa_rdp" or "dpa_pld"; `warn_at=0.8` (fraction of
    target_epsilon raising a warning alert); `stop_at_target=True` (checkpoint, end the run
    `stopped` and raise PrivacyBudgetExhausted before a step would exceed target_epsilon).

    torch: `data` is a DataLoader; returns Opacus' (GradSampleModule, DPOptimizer, Poisson
    DataLoader). MLX: `data` is a tuple of arrays, plus `loss_fn=` (model, x, y) -> mean
    loss and `batch_size=` (expected) or `sample_rate=`; returns (model, DPOptimizer with
    `.step(x, y)`, Poisson batches)."""
    if _is_mlx(model):
        from .mlx_dp import make_private as mlx_make_private

        return mlx_make_private(model, optimizer, data, **kwargs)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        from .torch_dp import make_private as torch_make_private

        return torch_make_private(model, optimizer, data, **kwargs)
    from ..errors import InvalidInputError

    raise InvalidInputError(
        f"model must be a torch.nn.Module or an mlx.nn.Module, got {type(model).__name__}"
    )


def tracker(optimizer: Any) -> BudgetTracker:
    """The budget tracker of an optimizer returned by make_private (steps, epsilon())."""
    t = getattr(optimizer, "privacy_tracker", None)
    if not isinstance(t, BudgetTracker):
        from ..errors import InvalidInputError

        raise InvalidInputError("optimizer was not returned by mj.privacy.make_private")
    return t


def epsilon(run: Any = None, *, model: str | None = None, version: int | None = None) -> float:
    """The epsilon recorded for a run (Run, id or name; default the active run), or with
    `model=` for a registered model version (default: production, else newest).
    Raises PrivacyError when no guarantee was recorded."""
    g = model_guarantee(model, version) if model is not None else guarantee(run)
    if g is None:
        what = f"model {model!r}" if model is not None else f"run {getattr(run, 'id', run)!r}"
        raise PrivacyError(f"{what} has no recorded privacy guarantee (not trained with DP-SGD)")
    return float(g["epsilon"])
