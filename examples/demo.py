"""A small end-to-end demo on the embedded store: three training runs of a tiny logistic
regression (numpy only), then the runs table and one run's details.

    python examples/demo.py
"""

from __future__ import annotations

import numpy as np

import mlops_jupyter as mj


def make_data(seed: int = 0, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    w_true = np.array([1.5, -2.0, 0.5, 0.0, 1.0])
    y = (x @ w_true + 0.3 * rng.normal(size=n) > 0).astype(np.float64)
    return x, y


def train(lr: float, epochs: int, x: np.ndarray, y: np.ndarray) -> None:
    w = np.zeros(x.shape[1])
    for epoch in range(epochs):
        p = 1 / (1 + np.exp(-(x @ w)))
        loss = -np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9))
        w -= lr * x.T @ (p - y) / len(y)
        mj.log(step=epoch, loss=float(loss), acc=float(np.mean((p > 0.5) == y)))


def main() -> None:
    x, y = make_data()
    for lr in (0.01, 0.1, 1.0):
        with mj.start_run(f"logreg-lr{lr}", experiment="demo", params={"lr": lr, "epochs": 200}):
            train(lr, 200, x, y)
    runs = mj.runs(experiment="demo")
    cols = ["id", "name", "status", "params.lr", "metrics.loss.last", "metrics.acc.max"]
    print(runs.select(cols))
    best = runs.sort("metrics.loss.last").row(0, named=True)
    store = mj.tracking.api.current_store().path
    print(f"best run: {best['name']} (loss {best['metrics.loss.last']:.4f}); store: {store}")


if __name__ == "__main__":
    main()
