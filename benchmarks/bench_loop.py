"""The closed loop's figures: a gate report on 100k evaluation examples (target <= 2 s) and
a model card (target <= 1 s), on a fresh SQLite store with two registered torch models.

    python benchmarks/bench_loop.py [--quick]

Figures (median of the repeats, end to end: loading both versions from the registry,
predicting, the bootstrap intervals, storing the verdict):
- mj.gate with three rules (threshold, not_worse accuracy, not_worse log_loss);
- the same with evaluation slices by two columns (10 + 3 values) judged per slice;
- mj.model_card(...) to Markdown and HTML for the gated version.
The time from an injected drift to a promoted model is measured by the end-to-end test
(tests/test_loop_e2e.py prints it); docs/loop.md gives it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _linear(w1: float):
    import torch

    m = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        m.weight[:] = torch.tensor([[0.0, 0.0], [1.0, w1]])
    return m


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10k examples, 2 repeats (a smoke run)")
    args = ap.parse_args(argv)
    n, repeats = (10_000, 2) if args.quick else (100_000, 5)

    import numpy as np
    import polars as pl

    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        os.environ["MLOPS_JUPYTER_STORE"] = str(Path(tmp) / "store.db")
        os.environ["MLOPS_JUPYTER_TELEMETRY"] = "0"
        import mlops_jupyter as mj
        from mlops_jupyter.loop import not_worse, threshold

        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, 2)).astype(np.float32)
        y = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
        countries = np.array([f"c{i}" for i in range(10)])
        frame = pl.DataFrame(
            {
                "x0": x[:, 0],
                "x1": x[:, 1],
                "country": countries[rng.integers(0, 10, n)],
                "device": np.array(["ios", "android", "web"])[rng.integers(0, 3, n)],
                "y": y,
            }
        )
        prod = mj.register_model("bench", _linear(0.5))
        mj.promote_model("bench", prod, "staging")
        mj.promote_model("bench", prod, "production")
        cand = mj.register_model("bench", _linear(0.0))
        feats = ["x0", "x1"]
        rules = [
            threshold("accuracy", ">=", 0.5),
            not_worse("accuracy", by=0.01),
            not_worse("log_loss", by=0.05),
        ]
        sliced = [
            threshold("accuracy", ">=", 0.5),
            not_worse("accuracy", by=0.01, slices=True),
            not_worse("log_loss", by=0.05, slices=True),
        ]

        def plain() -> None:
            mj.gate("bench", cand, frame, rules, features=feats, notify=False).markdown()

        def with_slices() -> None:
            mj.gate(
                "bench", cand, frame, sliced, features=feats, notify=False,
                slices=["country", "device"],
            ).markdown()  # fmt: skip

        def card() -> None:
            c = mj.model_card("bench", cand)
            c.markdown()
            c.html()

        plain()  # warm: imports, the registry's model cache
        rows = [
            (f"gate, {n:,} examples, 3 rules", _median(plain, repeats), 2.0),
            (
                f"gate with 2 slice columns (26 slice rows), {n:,}",
                _median(with_slices, repeats),
                2.0,
            ),
            ("model card (Markdown + HTML)", _median(card, repeats), 1.0),
        ]
        print(f"{'figure':<52} {'median':>9} {'target':>8}")
        for name, secs, target in rows:
            print(f"{name:<52} {secs:>8.3f}s {target:>7.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
