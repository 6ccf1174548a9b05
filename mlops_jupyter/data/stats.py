"""Drift statistics in plain numpy: KS (exact D from raw values, or from quantile sketches),
chi-squared two-sample test, PSI, Jensen-Shannon distance and normed Wasserstein.

p-values are computed here (asymptotic Kolmogorov distribution, regularized incomplete
gamma) so the core needs no scipy."""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-4  # probability floor for empty bins in PSI/JS (the usual choice, as in Evidently)


# -- p-values -----------------------------------------------------------------------------
def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution (limit of sqrt(n) * D_n)."""
    if lam <= 0:
        return 1.0
    if lam < 1.18:
        # the alternating series converges slowly for small lam; use the dual (theta) form
        y = math.exp(-(math.pi**2) / (8 * lam * lam))
        s = sum(y ** ((2 * k - 1) ** 2) for k in range(1, 8))
        return max(0.0, min(1.0, 1.0 - math.sqrt(2 * math.pi) / lam * s))
    s = 0.0
    for k in range(1, 101):
        t = 2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam)
        s += t
        if abs(t) < 1e-17:
            break
    return max(0.0, min(1.0, s))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Two-sided two-sample KS p-value (asymptotic, with Stephens' small-sample correction)."""
    if n <= 0 or m <= 0:
        return float("nan")
    en = math.sqrt(n * m / (n + m))
    return kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def _gammq(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (series / continued fraction)."""
    if x <= 0:
        return 1.0
    gln = math.lgamma(a)
    if x < a + 1:
        ap, s = a, 1.0 / a
        d = s
        for _ in range(10000):
            ap += 1
            d *= x / ap
            s += d
            if abs(d) < abs(s) * 1e-15:
                break
        return max(0.0, 1.0 - s * math.exp(-x + a * math.log(x) - gln))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - gln) * h)


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-squared distribution."""
    if dof <= 0:
        return 1.0
    return _gammq(dof / 2.0, x / 2.0)


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
    tot = r + c
    er = tot * nr / (nr + nc)
    ec = tot * nc / (nr + nc)
    stat = float(((r - er) ** 2 / er).sum() + ((c - ec) ** 2 / ec).sum())
    return stat, chi2_sf(stat, k - 1), k - 1


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
    grid (see profile.Binned), without sorting everything.

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
    from .profile import Binned, grid_size

    if len(a) == 0 or len(b) == 0:
        return float("nan")
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    k = grid_size(len(a) + len(b))
    return ks_binned(Binned.build(a, lo, hi, k), Binned.build(b, lo, hi, k))
