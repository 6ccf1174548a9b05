"""DP-SGD on MLX: vmap per-example gradients against a loop, the clipping bound, the
noiseless unclipped step against plain SGD, Poisson batches, and the shared accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

mx = pytest.importorskip("mlx.core")
pytest.importorskip("opacus")
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.errors import InvalidInputError  # noqa: E402
from mlops_jupyter.privacy import PrivacyError, compute_epsilon  # noqa: E402

DELTA = 1e-4
N = 256


class MLP(nn.Module):
    def __init__(self, d: int = 5, h: int = 8, k: int = 3) -> None:
        super().__init__()
        self.l1 = nn.Linear(d, h)
        self.l2 = nn.Linear(h, k)

    def __call__(self, x):
        return self.l2(nn.tanh(self.l1(x)))


class WithBN(MLP):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm(8)


def loss_fn(model, x, y):
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
    return mx.array(x), mx.array(y)


def _private(seed=0, lr=0.1, **kw):
    mx.random.seed(seed)
    model = MLP()
    mx.eval(model.parameters())
    args = dict(loss_fn=loss_fn, batch_size=32, noise_multiplier=1.0, max_grad_norm=1.0)
    args.update(kw)
    return mj.privacy.make_private(
        model, optim.SGD(learning_rate=lr), _data(seed), delta=DELTA, **args
    )


def _flat(tree):
    return {k: np.array(v) for k, v in tree_flatten(tree)}


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), b=st.integers(1, 9))
def test_vmap_per_example_gradients_equal_a_loop(seed, b):
    model, opt, _ = _private(seed)
    x, y = _data(seed)
    losses, grads = opt.per_example_grads(x[:b], y[:b])
    flat = _flat(grads)
    for i in range(b):  # plain value_and_grad on a batch of one example
        loss_i, g_i = nn.value_and_grad(model, loss_fn)(model, x[i : i + 1], y[i : i + 1])
        for k, v in _flat(g_i).items():
            np.testing.assert_allclose(flat[k][i], v, rtol=1e-5, atol=1e-6)
        assert float(losses[i]) == pytest.approx(float(loss_i), rel=1e-5)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), c=st.floats(1e-3, 10.0), scale=st.floats(0.1, 50.0))
def test_clipped_per_example_norms_are_bounded(seed, c, scale):
    _, opt, _ = _private(seed, max_grad_norm=c)
    x, y = _data(seed)
    _, grads = opt.per_example_grads(x[:16] * scale, y[:16])
    clipped, before = opt.clip(grads)
    leaves = [np.array(g).reshape(16, -1) for _, g in tree_flatten(clipped)]
    norms = np.sqrt(sum((g.astype(np.float64) ** 2).sum(1) for g in leaves))
    assert (norms <= c * (1 + 1e-5)).all()
    small = np.array(before) <= c
    np.testing.assert_allclose(norms[small], np.array(before)[small], rtol=1e-5)


def test_no_noise_no_clipping_is_plain_sgd():
    model, opt, _ = _private(noise_multiplier=0.0, max_grad_norm=None, lr=0.5)
    reference = MLP()
    reference.update(model.parameters())
    sgd = optim.SGD(learning_rate=0.5)
    x, y = _data()
    xb, yb = x[:32], y[:32]  # a batch of exactly the expected size q * N
    for _ in range(3):
        opt.step(xb, yb)
        _, g = nn.value_and_grad(reference, loss_fn)(reference, xb, yb)
        sgd.update(reference, g)
        mx.eval(reference.parameters())
    for k, v in _flat(reference.parameters()).items():
        np.testing.assert_allclose(_flat(model.parameters())[k], v, rtol=1e-5, atol=1e-6)


def test_noise_has_the_promised_scale():
    model, opt, _ = _private(noise_multiplier=2.0, max_grad_norm=0.5)
    x, y = _data()
    empty = x[:0], y[:0]
    _, g = opt.private_grads(*empty)  # an empty Poisson batch: noise only
    vals = np.concatenate([v.ravel() for v in _flat(g).values()])
    # std of (sigma * C) / (q N) = 2.0 * 0.5 / 32
    assert np.std(vals) == pytest.approx(2.0 * 0.5 / 32, rel=0.25)


def test_poisson_batches():
    _, _, loader = _private(batch_size=32)
    assert len(loader) == N // 32
    sizes = [int(b[0].shape[0]) for _ in range(5) for b in loader]
    assert min(sizes) != max(sizes)  # sizes vary
    assert np.mean(sizes) == pytest.approx(32, rel=0.15)


def test_mlx_training_tracks_the_same_epsilon_as_torch_would():
    with mj.start_run("dp-mlx") as run:
        model, opt, loader = _private(accountant="rdp", noise_multiplier=1.5)
        for _ in range(2):
            for xb, yb in loader:
                opt.step(xb, yb)
        steps = mj.privacy.tracker(opt).steps
    assert steps == 2 * len(loader)
    expected = compute_epsilon(1.5, 32 / N, steps, DELTA, "rdp")
    assert mj.privacy.epsilon(run) == pytest.approx(expected, rel=1e-9)
    params = mj.get_run(run.id)["params"]
    assert params["privacy/framework"] == "mlx" and params["privacy/sample_rate"] == 32 / N


def test_mlx_budget_stop_and_slow_accountant_logging():
    target = compute_epsilon(1.0, 32 / N, 5, DELTA, "prv") * (1 + 1e-9)
    with mj.start_run("dp-mlx-stop") as run:
        model, opt, loader = _private(accountant="prv", target_epsilon=target)
        before = None
        with pytest.raises(mj.privacy.PrivacyBudgetExhausted) as exc:
            for _ in range(3):
                for xb, yb in loader:
                    before = _flat(model.parameters())
                    opt.step(xb, yb)
    assert mj.privacy.tracker(opt).steps == 5
    assert exc.value.checkpoint is not None and exc.value.checkpoint.exists()
    restored = MLP()
    assert mj.resume(restored, which=exc.value.checkpoint).step == 5
    for k, v in _flat(restored.parameters()).items():
        np.testing.assert_array_equal(before[k], v)
    for k, v in _flat(model.parameters()).items():
        np.testing.assert_array_equal(before[k], v)  # the refused step was not applied
    assert mj.get_run(run.id)["status"] == "stopped"
    pts = mj.metrics(run, keys="privacy/epsilon")
    assert pts["step"].max() == 5
    assert pts.sort("step")["value"][-1] == pytest.approx(target, rel=1e-6)


def test_bad_input_names_the_fix():
    x, y = _data()
    model, sgd = MLP(), optim.SGD(learning_rate=0.1)
    common = dict(loss_fn=loss_fn, batch_size=32, noise_multiplier=1.0)
    with pytest.raises(InvalidInputError, match=r"1/N = 1/256.*choose delta well below"):
        mj.privacy.make_private(model, sgd, (x, y), delta=0.01, **common)
    with pytest.raises(InvalidInputError, match="noise_multiplier must be a finite number >= 0"):
        mj.privacy.make_private(
            model, sgd, (x, y), delta=DELTA, loss_fn=loss_fn, batch_size=32, noise_multiplier=-1
        )
    with pytest.raises(PrivacyError, match="BatchNorm.*GroupNorm"):
        mj.privacy.make_private(WithBN(), sgd, (x, y), delta=DELTA, **common)
    with pytest.raises(InvalidInputError, match="loss_fn= is required"):
        mj.privacy.make_private(model, sgd, (x, y), delta=DELTA, batch_size=32, noise_multiplier=1)
    with pytest.raises(InvalidInputError, match="noise without clipping"):
        mj.privacy.make_private(
            model, sgd, (x, y), delta=DELTA, loss_fn=loss_fn, batch_size=32,
            noise_multiplier=1.0, max_grad_norm=None,
        )  # fmt: skip
    with pytest.raises(InvalidInputError, match="exactly one of batch_size"):
        mj.privacy.make_private(
            model, sgd, (x, y), delta=DELTA, loss_fn=loss_fn, noise_multiplier=1.0
        )
    assert math.isinf(mj.privacy.EpsilonCurve(0.0, 0.1, DELTA, "rdp")(3))


def test_slow_accountant_epsilon_of_the_last_step_is_logged_when_the_run_ends():
    with mj.start_run("dp-mlx-prv") as run:
        model, opt, loader = _private(accountant="prv", noise_multiplier=1.5)
        for xb, yb in loader:  # 8 steps, faster than PRV evaluations
            opt.step(xb, yb)
    pts = mj.metrics(run, keys="privacy/epsilon").sort("step")
    assert pts["step"][-1] == len(loader) == mj.privacy.tracker(opt).steps
    assert pts["step"].is_sorted() and pts["value"].is_sorted()
    assert pts["value"][-1] == pytest.approx(
        compute_epsilon(1.5, 32 / N, len(loader), DELTA, "prv"), rel=1e-9
    )
