"""DP-SGD for MLX: per-example gradients with `mx.vmap`, per-example clipping to
max_grad_norm, Gaussian noise of std noise_multiplier * max_grad_norm on the sum, and
Poisson-sampled batches, so the accountant's epsilon (shared with torch) applies.

The update follows Opacus: (sum of clipped per-example gradients + noise) divided by the
expected batch size q * N, then handed to the wrapped MLX optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .accounting import PrivacyError, check_sample_rate
from .budget import BudgetTracker
from .torch_dp import budget_tracker, require_delta, resolve_noise

__all__ = ["DPOptimizer", "PoissonBatches", "make_private"]


class PoissonBatches:
    """Batches where each example is included independently with probability
    `sample_rate` (so batch sizes vary, and may be 0). One epoch is round(1/q) batches."""

    def __init__(self, arrays: tuple, sample_rate: float, seed: int | None = None) -> None:
        self.arrays = arrays
        self.n = int(arrays[0].shape[0])
        self.sample_rate = check_sample_rate(sample_rate)
        self.steps_per_epoch = max(1, round(1.0 / self.sample_rate))
        # numpy's generator draws the masks; seeded from the OS unless a seed is given
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple]:
        import mlx.core as mx

        for _ in range(self.steps_per_epoch):
            idx = np.flatnonzero(self._rng.random(self.n) < self.sample_rate)
            sel = mx.array(idx.astype(np.int32))
            yield tuple(a[sel] for a in self.arrays)


class DPOptimizer:
    """Wraps an MLX optimizer: `loss = opt.step(x, y)` does one private step on `model`.

    `loss_fn(model, *batch)` returns the mean loss of a batch; per-example gradients come
    from calling it on single examples (a batch of one) under `mx.vmap`."""

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        loss_fn: Callable,
        noise_multiplier: float,
        max_grad_norm: float | None,
        expected_batch_size: float,
        tracker: BudgetTracker | None = None,
    ) -> None:
        import mlx.core as mx

        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = max_grad_norm
        self.expected_batch_size = float(expected_batch_size)
        self.privacy_tracker = tracker

        def one(params: Any, *example: Any) -> Any:
            model.update(params)
            return loss_fn(model, *(e[None] for e in example))

        self._one = one
        self._per_example = mx.vmap(mx.value_and_grad(one), in_axes=(None, 0, 0))
        self._nargs = 2

    @property
    def state(self) -> Any:
        return self.optimizer.state

    def per_example_grads(self, *batch: Any) -> tuple[Any, Any]:
        """(per-example losses, gradient tree with a leading batch axis)."""
        import mlx.core as mx

        if len(batch) != self._nargs:
            self._nargs = len(batch)
            self._per_example = mx.vmap(
                mx.value_and_grad(self._one), in_axes=(None,) + (0,) * len(batch)
            )
        params = self.model.trainable_parameters()
        try:
            return self._per_example(params, *batch)
        finally:
            self.model.update(params)  # leave the model holding its arrays, not traced ones

    def clip(self, grads: Any) -> tuple[Any, Any]:
        """Scale each example's gradient to norm <= max_grad_norm: (clipped, norms before)."""
        import mlx.core as mx
        from mlx.utils import tree_flatten, tree_map

        leaves = [g for _, g in tree_flatten(grads)]
        b = leaves[0].shape[0]
        norms = mx.sqrt(sum(mx.sum(mx.square(g.reshape(b, -1)), axis=1) for g in leaves))
        if self.max_grad_norm is None or math.isinf(self.max_grad_norm):
            return grads, norms
        factor = mx.minimum(self.max_grad_norm / (norms + 1e-6), 1.0)
        return tree_map(lambda g: g * factor.reshape((b,) + (1,) * (g.ndim - 1)), grads), norms

    def private_grads(self, *batch: Any) -> tuple[Any, Any]:
        """(mean loss, noised gradient) of a batch: clipped sum + N(0, (sigma*C)^2), over q*N."""
        import mlx.core as mx
        from mlx.utils import tree_map

        if batch[0].shape[0] == 0:  # an empty Poisson batch still releases noise
            zeros = tree_map(mx.zeros_like, self.model.trainable_parameters())
            summed, loss = zeros, mx.array(float("nan"))
        else:
            losses, grads = self.per_example_grads(*batch)
            clipped, _ = self.clip(grads)
            summed = tree_map(lambda g: mx.sum(g, axis=0), clipped)
            loss = mx.mean(losses)
        std = self.noise_multiplier * (self.max_grad_norm or 0.0)
        n = self.expected_batch_size
        if std > 0:
            noisy = tree_map(
                lambda g: (g + std * mx.random.normal(g.shape, dtype=g.dtype)) / n, summed
            )
        else:
            noisy = tree_map(lambda g: g / n, summed)
        return loss, noisy

    def step(self, *batch: Any) -> Any:
        """One private step on `batch`; returns the batch's mean loss (an mx.array)."""
        import mlx.core as mx

        if self.privacy_tracker is not None:
            self.privacy_tracker.before_step()
        loss, grads = self.private_grads(*batch)
        self.optimizer.update(self.model, grads)
        mx.eval(self.model.parameters(), self.optimizer.state, loss)
        if self.privacy_tracker is not None:
            self.privacy_tracker.after_step()
        return loss


def check_model(model: Any) -> None:
    """Refuse BatchNorm: it mixes examples, so per-example gradients do not exist."""
    import mlx.nn as nn

    bad = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.BatchNorm)})
    if bad:
        raise PrivacyError(
            f"the model has layers DP-SGD cannot train privately: {', '.join(bad)}. BatchNorm "
            "mixes the examples of a batch, so per-example gradients do not exist: replace it "
            "with nn.GroupNorm or nn.LayerNorm"
        )


def make_private(
    model: Any,
    optimizer: Any,
    data: Any,
    *,
    loss_fn: Callable | None = None,
    batch_size: int | None = None,
    sample_rate: float | None = None,
    noise_multiplier: float | None = None,
    max_grad_norm: float | None = 1.0,
    delta: float | None = None,
    target_epsilon: float | None = None,
    epochs: int | None = None,
    accountant: str = "prv",
    warn_at: float = 0.8,
    stop_at_target: bool = True,
    checkpoint: bool = True,
    seed: int | None = None,
) -> tuple[Any, DPOptimizer, PoissonBatches]:
    """MLX: see mlops_jupyter.privacy.make_private. `data` is a tuple of arrays (x, y, ...)
    with the examples on the first axis; `batch_size` (expected) or `sample_rate` sets q."""
    import mlx.nn as nn

    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be an mlx.nn.Module, got {type(model).__name__}")
    if not hasattr(optimizer, "update"):
        raise InvalidInputError("optimizer must be an mlx.optimizers optimizer")
    if not callable(loss_fn):
        raise InvalidInputError("loss_fn= is required for MLX: loss_fn(model, x, y) -> mean loss")
    if (
        not isinstance(data, (tuple, list))
        or not data
        or not all(hasattr(a, "shape") for a in data)
    ):
        raise InvalidInputError("data must be a tuple of arrays (x, y, ...) for MLX")
    n = int(data[0].shape[0])
    if n == 0 or any(int(a.shape[0]) != n for a in data):
        raise InvalidInputError("data arrays must be non-empty and share their first dimension")
    if (batch_size is None) == (sample_rate is None):
        raise InvalidInputError("give exactly one of batch_size= (expected) or sample_rate=")
    if batch_size is not None:
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 0 < batch_size <= n
        ):
            raise InvalidInputError(
                f"batch_size must be an integer in [1, N={n}], got {batch_size!r}"
            )
        sample_rate = batch_size / n
    q = check_sample_rate(sample_rate)
    delta = require_delta(delta, n)
    if max_grad_norm is not None:
        if (
            isinstance(max_grad_norm, bool)
            or not isinstance(max_grad_norm, (int, float))
            or not max_grad_norm > 0
        ):
            raise InvalidInputError(
                f"max_grad_norm must be > 0 (or None for no clipping), got {max_grad_norm!r}"
            )
    check_model(model)
    loader = PoissonBatches(tuple(data), q, seed)
    sigma = resolve_noise(
        noise_multiplier, target_epsilon, epochs, delta, q, len(loader), accountant
    )
    if sigma > 0 and (max_grad_norm is None or math.isinf(max_grad_norm)):
        raise InvalidInputError(
            "noise without clipping gives no privacy: set a finite max_grad_norm (e.g. 1.0)"
        )
    tracker = budget_tracker(
        sigma,
        q,
        delta,
        accountant,
        target_epsilon=target_epsilon if stop_at_target else None,
        warn_at=warn_at,
        max_grad_norm=max_grad_norm,
        framework="mlx",
        state=lambda: (model, optimizer),
        checkpoint=checkpoint,
    )
    dp = DPOptimizer(model, optimizer, loss_fn, sigma, max_grad_norm, q * n, tracker)
    return model, dp, loader
