"""DP-SGD: what tracking the privacy budget costs, and what DP costs on MLX.

    python benchmarks/bench_privacy.py [--quick]

Figures (each printed with its peer and the ratio):
- step time of mj.privacy.make_private (epsilon logged per step in an active run, the
  budget rule checked) vs bare Opacus PrivacyEngine.make_private, same model, data, sigma;
  for the RDP accountant (epsilon computed in the step) and PRV (computed by a background
  thread for the newest step);
- MLX DP-SGD step (vmap per-example gradients, clipping, noise) vs a non-private MLX step
  on the same small MLP and batch;
- accountant cost: one epsilon evaluation per accountant, the per-step cost of the RDP
  curve the run logs, and the one-off step-limit search of the budget rule.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

warnings.filterwarnings("ignore", message=".*(Secure RNG|Full backward hook|Optimal order)")

SIGMA, DELTA, C = 1.0, 1e-5, 1.0


def _torch_setup(seed: int, n: int, batch: int, width: int):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    x = torch.randn(n, 32)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(
        torch.nn.Linear(32, width), torch.nn.ReLU(), torch.nn.Linear(width, 2)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, DataLoader(TensorDataset(x, y), batch_size=batch)


def _step(model, opt, xb, yb) -> float:
    import torch

    t0 = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(xb), yb).backward()
    opt.step()
    return time.perf_counter() - t0


def bench_tracking(epochs: int, n: int, accountant: str) -> None:
    """Alternate single steps of bare Opacus and of mj.privacy (same model and data) so
    load from other jobs hits both alike, and compare per-step medians. Also time the
    tracking work alone (budget check + epsilon + log_metric): the overhead without the
    noise of two trainings."""
    import torch
    from opacus import PrivacyEngine

    import mlops_jupyter as mj
    from mlops_jupyter.privacy import BudgetTracker, EpsilonCurve

    torch.set_num_threads(1)
    m1, o1, l1 = _torch_setup(0, n, 64, 256)
    bare_model, bare_opt, bare_loader = PrivacyEngine(accountant="rdp").make_private(
        module=m1, optimizer=o1, data_loader=l1, noise_multiplier=SIGMA, max_grad_norm=C
    )
    m2, o2, l2 = _torch_setup(0, n, 64, 256)
    run = mj.start_run(f"bench-privacy-{accountant}", experiment="bench")
    ours_model, ours_opt, ours_loader = mj.privacy.make_private(
        m2, o2, l2, noise_multiplier=SIGMA, max_grad_norm=C, delta=DELTA,
        accountant=accountant, target_epsilon=50.0,
    )  # fmt: skip
    bare, ours = [], []
    for _ in range(epochs):
        for i, ((xa, ya), (xb, yb)) in enumerate(zip(bare_loader, ours_loader, strict=False)):
            if i % 2:  # alternate which goes first: no side gets the warmer caches
                bare.append(_step(bare_model, bare_opt, xa, ya))
                ours.append(_step(ours_model, ours_opt, xb, yb))
            else:
                ours.append(_step(ours_model, ours_opt, xb, yb))
                bare.append(_step(bare_model, bare_opt, xa, ya))
    run.end()
    bare, ours = bare[5:], ours[5:]  # warm-up
    b, o = statistics.median(bare), statistics.median(ours)
    with mj.start_run("bench-privacy-tracker", experiment="bench"):
        curve = EpsilonCurve(SIGMA, 64 / n, DELTA, accountant)
        t = BudgetTracker(curve, target_epsilon=50.0, max_grad_norm=C)
        k = min(2000, t.max_steps or 2000)
        t0 = time.perf_counter()
        for _ in range(k):
            t.before_step()
            t.after_step()
        alone = (time.perf_counter() - t0) / k
    print(
        f"torch step, {accountant} accountant: tracked {o * 1e3:.3f} ms vs bare Opacus "
        f"{b * 1e3:.3f} ms -> {100 * (o / b - 1):+.1f} % (medians of {len(ours)} alternating "
        f"steps); tracking work alone {alone * 1e6:.1f} us/step = {100 * alone / b:.2f} % "
        "of a bare step"
    )


def bench_mlx(steps: int) -> None:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np

    import mlops_jupyter as mj

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1 = nn.Linear(32, 256)
            self.l2 = nn.Linear(256, 2)

        def __call__(self, x):
            return self.l2(nn.relu(self.l1(x)))

    def loss_fn(model, x, y):
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    rng = np.random.default_rng(0)
    x = mx.array(rng.normal(size=(4096, 32)).astype(np.float32))
    y = mx.array((rng.random(4096) > 0.5).astype(np.int32))
    xb, yb = x[:64], y[:64]

    plain_model, plain_opt = MLP(), optim.SGD(learning_rate=0.1)
    mx.eval(plain_model.parameters())
    vg = nn.value_and_grad(plain_model, loss_fn)

    def plain_step():
        loss, g = vg(plain_model, xb, yb)
        plain_opt.update(plain_model, g)
        mx.eval(plain_model.parameters(), plain_opt.state, loss)

    dp_model = MLP()
    mx.eval(dp_model.parameters())
    _, dp_opt, _ = mj.privacy.make_private(
        dp_model, optim.SGD(learning_rate=0.1), (x, y), loss_fn=loss_fn, batch_size=64,
        noise_multiplier=SIGMA, max_grad_norm=C, delta=DELTA, accountant="rdp",
    )  # fmt: skip

    def dp_step():
        dp_opt.step(xb, yb)

    def per_step(fn) -> float:
        for _ in range(5):
            fn()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t0) / steps

    p, d = [], []
    for _ in range(3):  # interleaved
        p.append(per_step(plain_step))
        d.append(per_step(dp_step))
    p_, d_ = min(p), min(d)
    print(
        f"MLX step, MLP 32-256-2, batch 64: DP-SGD {d_ * 1e3:.3f} ms vs non-private "
        f"{p_ * 1e3:.3f} ms -> {d_ / p_:.2f}x"
    )


def bench_accountants(q: float, steps: int) -> None:
    from mlops_jupyter.privacy import ACCOUNTANTS, EpsilonCurve, compute_epsilon

    for name in ACCOUNTANTS:
        compute_epsilon(SIGMA, q, steps, DELTA, name)  # imports, caches
        t0 = time.perf_counter()
        eps = compute_epsilon(SIGMA, q, steps, DELTA, name)
        dt = time.perf_counter() - t0
        print(f"accountant {name:8s}: one epsilon ({steps} steps, q={q}) {dt * 1e3:8.1f} ms"
              f"  epsilon={eps:.4f}")  # fmt: skip
    curve = EpsilonCurve(SIGMA, q, DELTA, "rdp")
    curve(1)
    t0 = time.perf_counter()
    for s in range(2, 2002):
        curve(s)
    per = (time.perf_counter() - t0) / 2000
    print(f"RDP curve (what the run logs each step): {per * 1e6:.1f} us per new step")
    for name in ("rdp", "prv"):
        c = EpsilonCurve(SIGMA, q, DELTA, name)
        t0 = time.perf_counter()
        limit = c.max_steps(4.0)
        print(
            f"budget rule setup ({name}): step limit for epsilon <= 4 is {limit}, found in "
            f"{time.perf_counter() - t0:.2f} s (once per make_private)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (about 20 s)")
    args = ap.parse_args()
    import mlops_jupyter as mj

    mj.set_store(tempfile.mkdtemp(prefix="bench-privacy-"))
    epochs = 3 if args.quick else 8
    bench_tracking(epochs, 4096, "rdp")
    bench_tracking(epochs, 4096, "prv")
    bench_mlx(20 if args.quick else 100)
    bench_accountants(0.01, 1000)


if __name__ == "__main__":
    main()
