"""Drift statistics: KS (exact D from raw values, or from quantile sketches), chi-squared
two-sample test, PSI, Jensen-Shannon distance and normed Wasserstein.

p-values come from scipy (the `data` extra) so a verdict here is the one scipy or Evidently
gives on the same data; scipy is imported on first use, so the core imports without it."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import MlopsJupyterError

EPS = 1e-4  # probability floor for empty bins in PSI/JS (the usual choice, as in Evidently)
KS_EXACT_MAX_N = 10_000  # scipy's ks_2samp(method="auto") uses the exact distribution up to here


class MissingExtraError(MlopsJupyterError, ImportError):
    """An optional dependency needed for this feature is not installed."""


def require_scipy():
    """scipy.stats, or a MissingExtraError saying which extra to install."""
    try:
        import scipy.stats as sps
    except ImportError as e:
        raise MissingExtraError(
            "drift p-values need scipy: pip install 'mlops-jupyter[data]'"
        ) from e
    return sps


# -- p-values -----------------------------------------------------------------------------
def _samples_with_d(h: int, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Two samples of sizes n and m whose KS statistic is h / (n*m), or the nearest value two
    such samples can have (a D read off quantile sketches may lie between): i of n and j of
    m values at 0, the rest at 1, with i*m - j*n as close to h as possible."""
    i = np.arange(n + 1, dtype=np.int64)
    j = np.clip(np.rint((i * m - h) / n), 0, m).astype(np.int64)
    k = int(np.argmin(np.abs(i * m - j * n - h)))
    i0, j0 = int(i[k]), int(j[k])
    a = np.r_[np.zeros(i0), np.ones(n - i0)]
    b = np.r_[np.zeros(j0), np.ones(m - j0)]
    return a, b


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Two-sided two-sample KS p-value of statistic `d` for samples of sizes n and m, as
    scipy's ks_2samp(method="auto") gives it: the exact distribution up to 10,000 rows per
    side, the asymptotic (Smirnov) one above."""
    if n <= 0 or m <= 0 or d is None or math.isnan(d):
        return float("nan")
    sps = require_scipy()
    d = min(max(float(d), 0.0), 1.0)
    if max(n, m) <= KS_EXACT_MAX_N:
        # scipy computes the exact p-value only inside ks_2samp, which takes samples: hand it
        # two samples with exactly this D (D lies on the 1/lcm(n, m) grid, as scipy rounds it)
        a, b = _samples_with_d(round(d * n * m), n, m)
        with warnings.catch_warnings():
            # where the exact sum fails scipy falls back to the asymptotic value and says so;
            # the value is the one scipy gives, the warning is noise inside a drift report
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(sps.ks_2samp(a, b, method="auto").pvalue)
    en = n * m / (n + m)
    return float(np.clip(sps.kstwo.sf(d, np.round(en)), 0.0, 1.0))


# -- categorical ----------------------------------------------------------------------------
def chi2_two_sample(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, int]:
    """Chi-squared test of homogeneity on a 2 x k contingency table (both samples random).

    Returns (statistic, p_value, dof)."""
    r = np.asarray(ref_counts, dtype=float)
    c = np.asarray(cur_counts, dtype=float)
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    k = len(r)
    nr, nc = r.sum(), c.sum()
    if k < 2 or nr == 0 or nc == 0:
        return 0.0, 1.0, 0
    res = require_scipy().chi2_contingency(np.vstack([r, c]), correction=False)
    return float(res.statistic), float(res.pvalue), int(res.dof)


def _probs(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    tot = counts.sum()
    p = counts / tot if tot > 0 else np.full(len(counts), 1.0 / max(len(counts), 1))
    return np.maximum(p, EPS)


def psi(ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    """Population stability index over matching bins (probabilities or counts)."""
    p, q = _probs(ref_p), _probs(cur_p)
    return float(((q - p) * np.log(q / p)).sum())


def js_distance(ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    """Jensen-Shannon distance (square root of the divergence, natural log), in [0, 0.833]."""
    p = np.asarray(ref_p, dtype=float)
    q = np.asarray(cur_p, dtype=float)
    p = p / p.sum() if p.sum() > 0 else p
    q = q / q.sum() if q.sum() > 0 else q
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log(a[nz] / b[nz])).sum())

    return math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2))


# -- numeric from quantile sketches ----------------------------------------------------------
def sketch_cdf(sketch: list[float] | np.ndarray, x: np.ndarray) -> np.ndarray:
    """CDF at `x` of a distribution known by quantiles at evenly spaced probabilities."""
    q = np.asarray(sketch, dtype=float)
    p = np.linspace(0.0, 1.0, len(q))
    # np.interp needs increasing xp; ties (repeated values) get the highest probability,
    # which is the right-continuous CDF at a point mass.
    uq, idx = np.unique(q[::-1], return_index=True)
    up = p[::-1][idx]
    out = np.interp(x, uq, up, left=0.0, right=1.0)
    return out


def ks_from_sketches(a: list[float], b: list[float]) -> float:
    """KS statistic approximated from two quantile sketches (resolution 1/(len-1))."""
    grid = np.union1d(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    return float(np.abs(sketch_cdf(a, grid) - sketch_cdf(b, grid)).max())


def wasserstein_from_sketches(a: list[float], b: list[float]) -> float:
    """1-Wasserstein distance = integral over p of |Qa(p) - Qb(p)| (trapezoid on the sketch grid)."""
    qa, qb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(qa) != len(qb):
        p = np.linspace(0, 1, max(len(qa), len(qb)))
        qa = np.interp(p, np.linspace(0, 1, len(qa)), qa)
        qb = np.interp(p, np.linspace(0, 1, len(qb)), qb)
    d = np.abs(qa - qb)
    return float(((d[1:] + d[:-1]) / 2).sum() / (len(d) - 1))


def binned_probs(sketch: list[float], edges: np.ndarray) -> np.ndarray:
    """Probability mass of each bin between consecutive `edges` (first/last open-ended)."""
    cdf = sketch_cdf(sketch, np.asarray(edges[1:-1], dtype=float))
    cdf = np.concatenate([[0.0], cdf, [1.0]])
    return np.diff(cdf)


def reference_bins(ref_sketch: list[float], n_bins: int = 10) -> np.ndarray:
    """Equal-frequency bin edges from the reference sketch (deciles by default)."""
    q = np.asarray(ref_sketch, dtype=float)
    inner = np.interp(np.linspace(0, 1, n_bins + 1)[1:-1], np.linspace(0, 1, len(q)), q)
    inner = np.unique(inner)
    return np.concatenate([[-np.inf], inner, [np.inf]])


# -- exact KS from raw values in linear time ---------------------------------------------------
def ks_binned(A, B) -> float:
    """Exact two-sample KS statistic D = sup |Fa - Fb| from two samples binned on the same
    grid (see Binned), without sorting everything.

    The CDF difference is known exactly at every cell edge, and inside a cell it can move by
    at most that cell's mass; only cells whose bound could beat the best edge value are
    sorted and scanned exactly."""
    n, m = len(A.x), len(B.x)
    if n == 0 or m == 0:
        return float("nan")
    # integer arithmetic (CDFs scaled by n*m) keeps D exact and comparisons honest
    fa = np.concatenate([[0], A.cum]) * m
    fb = np.concatenate([[0], B.cum]) * n
    diff = fa - fb  # scaled CDF difference at the left edge of each cell
    best = int(np.abs(diff).max())
    upper = np.maximum(np.abs(fa[1:] - fb[:-1]), np.abs(fa[:-1] - fb[1:]))
    cand = np.flatnonzero(upper > best)
    if len(cand):
        want = np.zeros(A.k, dtype=bool)
        want[cand] = True
        xa, xb = A.x[want[A.cells]], B.x[want[B.cells]]
        vals = np.concatenate([xa, xb])
        w = np.concatenate([np.full(len(xa), m, np.int64), np.full(len(xb), -n, np.int64)])
        order = np.argsort(vals, kind="stable")
        vals, w = vals[order], w[order]
        bid = A.cell_of(vals)
        # running difference inside each candidate cell, from its exact left-edge value
        cs = np.cumsum(w)
        start = np.searchsorted(bid, bid, side="left")
        before = np.where(start > 0, cs[start - 1], 0)
        run = diff[bid] + cs - before
        # the CDFs are right-continuous: only the last of a run of equal values counts
        last = np.ones(len(vals), dtype=bool)
        last[:-1] = vals[1:] != vals[:-1]
        best = max(best, int(np.abs(run[last]).max()))
    return best / (n * m)


def ks_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sample KS statistic of two arrays of finite values."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    k = grid_size(len(a) + len(b))
    return ks_binned(Binned.build(a, lo, hi, k), Binned.build(b, lo, hi, k))


@dataclass
class Binned:
    """Values counted into `k` equal cells over [lo, hi]: the basis of linear-time exact
    order statistics and KS. Two sides binned on the same grid can be compared cell by cell."""

    x: np.ndarray
    lo: float
    hi: float
    k: int
    cells: np.ndarray  # cell index of each value
    cum: np.ndarray  # number of values in cells <= j

    @classmethod
    def build(cls, x: np.ndarray, lo: float, hi: float, k: int) -> Binned:
        if not hi > lo:
            k = 1
        scale = k / (hi - lo) if hi > lo else 0.0
        t = np.subtract(x, lo)
        t *= scale
        b = t.astype(np.int64)  # values are >= lo, so truncation is floor
        del t
        np.minimum(b, k - 1, out=b)
        np.maximum(b, 0, out=b)
        return cls(x, lo, hi, k, b, np.cumsum(np.bincount(b, minlength=k)))

    def cell_of(self, v: np.ndarray) -> np.ndarray:
        """Cells of (sorted) values, computed exactly as in build()."""
        if self.k == 1:
            return np.zeros(len(v), dtype=np.int64)
        b = (np.subtract(v, self.lo) * (self.k / (self.hi - self.lo))).astype(np.int64)
        return np.clip(b, 0, self.k - 1)


def grid_size(n: int) -> int:
    """Cells for n values: ~4 per cell keeps the cells to sort small, bounded for memory."""
    return min(65536, max(1024, n // 4))
