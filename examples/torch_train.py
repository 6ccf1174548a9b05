"""A plain PyTorch training loop tracked with `mj.log` (no framework integration needed),
plus per-epoch media: a confusion matrix and an image of the first layer's weights.
examples/mlx_train.py is the same loop in MLX.

    python examples/torch_train.py
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import mlops_jupyter as mj


def make_data(seed: int = 0, n: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 8 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.normal(scale=2.0, size=(3, 8))
    x = centers[y] + rng.normal(size=(n, 8))
    return x.astype(np.float32), y.astype(np.int64)


def main(epochs: int = 5, batch: int = 64, lr: float = 0.05) -> None:
    x, y = make_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    params = {"framework": "torch", "epochs": epochs, "batch": batch, "lr": lr}
    with mj.start_run("torch-blobs", experiment="examples", params=params) as run:
        step = 0
        for epoch in range(epochs):
            for i in range(0, len(xs), batch):
                xb, yb = xs[i : i + batch], ys[i : i + batch]
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                mj.log(step=step, loss=loss.item())
                step += 1
            with torch.no_grad():
                pred = model(xs).argmax(1)
            mj.log(step=step, acc=(pred == ys).float().mean().item(), epoch=epoch)
            mj.confusion_matrix(y, pred.numpy(), step=epoch)
            w = model[0].weight.detach()
            mj.log_image("layer0_weights", (w - w.min()) / (w.max() - w.min()), step=epoch)
    print(mj.media(run).select("key", "step", "kind"))
    print(mj.runs(experiment="examples").select("name", "metrics.loss.last", "metrics.acc.last"))


if __name__ == "__main__":
    main()
