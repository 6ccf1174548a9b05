"""The loop of examples/torch_train.py in MLX (Apple silicon, or `mlx[cpu]` on Linux),
tracked the same way: `mj.log` per step, a confusion matrix and a weights image per epoch.

    python examples/mlx_train.py
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

import mlops_jupyter as mj


def make_data(seed: int = 0, n: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 8 dimensions (the same data as the torch example)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.normal(scale=2.0, size=(3, 8))
    x = centers[y] + rng.normal(size=(n, 8))
    return x.astype(np.float32), y.astype(np.int64)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(8, 32)
        self.l2 = nn.Linear(32, 3)

    def __call__(self, x: mx.array) -> mx.array:
        return self.l2(nn.relu(self.l1(x)))


def main(epochs: int = 5, batch: int = 64, lr: float = 0.05) -> None:
    x, y = make_data()
    mx.random.seed(0)
    model = MLP()
    opt = optim.SGD(learning_rate=lr)
    xs, ys = mx.array(x), mx.array(y)

    def loss_fn(m: MLP, xb: mx.array, yb: mx.array) -> mx.array:
        return nn.losses.cross_entropy(m(xb), yb, reduction="mean")

    grad = nn.value_and_grad(model, loss_fn)
    params = {"framework": "mlx", "epochs": epochs, "batch": batch, "lr": lr}
    with mj.start_run("mlx-blobs", experiment="examples", params=params) as run:
        step = 0
        for epoch in range(epochs):
            for i in range(0, len(x), batch):
                loss, grads = grad(model, xs[i : i + batch], ys[i : i + batch])
                opt.update(model, grads)
                mx.eval(model.parameters(), opt.state)
                mj.log(step=step, loss=loss.item())
                step += 1
            pred = mx.argmax(model(xs), axis=1)
            mj.log(step=step, acc=mx.mean(pred == ys).item(), epoch=epoch)
            mj.confusion_matrix(y, np.array(pred), step=epoch)
            w = model.l1.weight
            mj.log_image("layer0_weights", (w - w.min()) / (w.max() - w.min()), step=epoch)
    print(mj.media(run).select("key", "step", "kind"))
    print(mj.runs(experiment="examples").select("name", "metrics.loss.last", "metrics.acc.last"))


if __name__ == "__main__":
    main()
