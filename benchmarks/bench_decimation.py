"""Series decimation: our min/max-per-bucket decimator (store.series.decimate, used by the
sidebar's series route and the notebook widgets) against tsdownsample's MinMaxLTTB (Rust),
on 1M and 10M points, for time and visual fidelity at the same point budget.

Fidelity is measured on what a chart draws: the series is drawn as a line over W pixel
columns; in each column the drawn line spans [min, max] of the points kept there and of the
line where it crosses the column's edges. Against the raw series' [min, max] per column:
  - envelope error: max and mean over columns of the larger of |min - true min| and
    |max - true max|, as a share of the chart height (1.0 = the whole chart);
  - spikes kept: of the single-point spikes put into the series (up and down), how many are
    among the kept points.

Run: python benchmarks/bench_decimation.py [--sizes 1000000 10000000] [--width 1000]
(tsdownsample: pip install tsdownsample; the benchmark says so when it is missing)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlops_jupyter.store.series import decimate  # noqa: E402


def make(n: int, seed: int = 0, spikes: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A loss-like curve: decaying trend, a random walk, noise, and `spikes` single-point
    spikes (half up, half down) at random steps. Returns (steps, values, spike indices)."""
    r = np.random.default_rng(seed)
    x = np.arange(n, dtype=np.int64)
    t = x / n
    y = 2.0 * np.exp(-5 * t) + 0.05 * np.cumsum(r.normal(0, 1, n)) / np.sqrt(n) * 10
    y += r.normal(0, 0.02, n)
    where = np.sort(r.choice(n, spikes, replace=False))
    y[where[::2]] += 1.5
    y[where[1::2]] -= 1.5
    return x, y, where


def envelope(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[min, max] per pixel column of the line through all raw points (x sorted, every
    column non-empty): its points there and where it crosses the column's edges."""
    starts = np.searchsorted(x, edges[:-1], side="left")
    at_edges = np.interp(edges, x.astype(float), y)
    lo = np.minimum(np.minimum.reduceat(y, starts), np.minimum(at_edges[:-1], at_edges[1:]))
    hi = np.maximum(np.maximum.reduceat(y, starts), np.maximum(at_edges[:-1], at_edges[1:]))
    return lo, hi


def drawn_envelope(
    xs: np.ndarray, ys: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[min, max] per column of the polyline through the kept points (xs sorted)."""
    w = len(edges) - 1
    at_edges = np.interp(edges, xs.astype(float), ys)
    lo = np.minimum(at_edges[:-1], at_edges[1:])
    hi = np.maximum(at_edges[:-1], at_edges[1:])
    col = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, w - 1)
    np.minimum.at(lo, col, ys)
    np.maximum.at(hi, col, ys)
    return lo, hi


def fidelity(x, y, idx, spikes, width: int) -> tuple[float, float, int]:
    edges = np.linspace(x[0], x[-1] + 1, width + 1)
    tlo, thi = envelope(x, y, edges)
    dlo, dhi = drawn_envelope(x[idx], y[idx], edges)
    err = np.maximum(np.abs(dlo - tlo), np.abs(dhi - thi)) / (y.max() - y.min())
    kept = int(np.isin(spikes, idx).sum())
    return float(err.max()), float(err.mean()), kept


def _ours(x: np.ndarray, y: np.ndarray, budget: int) -> np.ndarray:
    return decimate(x, y, budget)[0]


def timed(fn, repeat: int):
    ts, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--width", type=int, default=1000, help="chart width in pixel columns")
    ap.add_argument("--points", type=int, default=0, help="point budget (default 2 x width)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--spikes", type=int, default=40, help="single-point spikes in the series")
    args = ap.parse_args()
    budget = args.points or 2 * args.width
    try:
        from tsdownsample import MinMaxDownsampler, MinMaxLTTBDownsampler
    except ImportError:
        MinMaxLTTBDownsampler = MinMaxDownsampler = None
        print("tsdownsample not installed (pip install tsdownsample): ours only")
    print(
        f"budget {budget} points, {args.width} pixel columns, {args.spikes} spikes,"
        f" best/median of {args.repeat}"
    )
    print(
        f"{'points':>11} {'method':<34} {'best ms':>8} {'median ms':>9}"
        f" {'env err max':>11} {'env err mean':>12} {'spikes kept':>11}"
    )
    for n in args.sizes:
        x, y, spikes = make(n, spikes=args.spikes)
        methods = {"ours: min/max per bucket (numpy)": partial(_ours, x, y, budget)}
        if MinMaxLTTBDownsampler is not None:
            lttb, mm = MinMaxLTTBDownsampler(), MinMaxDownsampler()
            methods["tsdownsample MinMaxLTTB"] = partial(lttb.downsample, x, y, n_out=budget)
            methods["tsdownsample MinMaxLTTB, parallel"] = partial(
                lttb.downsample, x, y, n_out=budget, parallel=True
            )
            methods["tsdownsample MinMax"] = partial(mm.downsample, x, y, n_out=budget)
        for name, fn in methods.items():
            best, med, idx = timed(fn, args.repeat)
            idx = np.asarray(idx, dtype=np.int64)
            emax, emean, kept = fidelity(x, y, idx, spikes, args.width)
            print(
                f"{n:>11,} {name:<34} {best * 1e3:>8.1f} {med * 1e3:>9.1f}"
                f" {emax:>11.4f} {emean:>12.5f} {kept:>5}/{len(spikes)}"
            )


if __name__ == "__main__":
    main()
