"""A/B statistics per variant: summaries of binary and continuous metrics (mergeable batch
by batch) and the fixed-horizon tests (two proportions, Welch's t). Differences are always
variant - control. Pure numpy, plus scipy.special for the t distribution (imported on first
use; the `data` extra). The report and the running test are in abtest.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from ..errors import InvalidInputError

Metric = Literal["binary", "continuous"]
_N = NormalDist()


# -- per-variant summaries ----------------------------------------------------------------
def _count(value, what: str) -> int:
    if type(value) is int and value >= 0:  # the common case, checked fast (per batch)
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float)):
        raise InvalidInputError(f"{what} must be a whole number, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InvalidInputError(f"{what} must be a whole number, got {value!r}")
    if value < 0:
        raise InvalidInputError(f"{what} must not be negative, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class BinarySummary:
    """Successes out of n trials."""

    successes: int
    n: int

    def __post_init__(self) -> None:
        s, n = _count(self.successes, "successes"), _count(self.n, "n")
        if s > n:
            raise InvalidInputError(f"successes ({s}) exceed the number of trials n ({n})")
        object.__setattr__(self, "successes", s)
        object.__setattr__(self, "n", n)

    metric = "binary"

    @property
    def mean(self) -> float:
        return self.successes / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """Per-observation variance p(1 - p)."""
        return self.mean * (1 - self.mean)

    def merge(self, other: BinarySummary) -> BinarySummary:
        return BinarySummary(self.successes + other.successes, self.n + other.n)


@dataclass(frozen=True)
class ContinuousSummary:
    """n, mean and m2 (the sum of squared deviations from the mean), mergeable per batch."""

    n: int
    mean: float
    m2: float

    metric = "continuous"

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _count(self.n, "n"))
        for name in ("mean", "m2"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
                raise InvalidInputError(f"{name} must be a finite number, got {v!r}")
        if self.m2 < 0:
            raise InvalidInputError(f"the variance must not be negative (m2={self.m2!r})")

    @classmethod
    def from_values(cls, values) -> ContinuousSummary:
        x = np.asarray(values, dtype=float).ravel()
        if not np.isfinite(x).all():
            raise InvalidInputError("observations contain NaN or infinite values")
        if x.size == 0:
            return cls(0, 0.0, 0.0)
        mean = float(x.mean())
        return cls(int(x.size), mean, float(((x - mean) ** 2).sum()))

    @classmethod
    def from_moments(cls, n: int, mean: float, variance: float) -> ContinuousSummary:
        """From n, the mean and the sample variance (ddof=1)."""
        n = _count(n, "n")
        if not isinstance(variance, (int, float, np.number)) or not math.isfinite(variance):
            raise InvalidInputError(f"variance must be a finite number, got {variance!r}")
        if variance < 0:
            raise InvalidInputError(f"variance must not be negative, got {variance!r}")
        if n < 2 and variance != 0:
            raise InvalidInputError(f"a variance needs n >= 2 observations, got n={n}")
        return cls(n, float(mean), float(variance) * max(n - 1, 0))

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); NaN below two observations."""
        return self.m2 / (self.n - 1) if self.n >= 2 else math.nan

    def merge(self, other: ContinuousSummary) -> ContinuousSummary:
        # Chan et al.'s pairwise update: stable where sums of squares would cancel
        n = self.n + other.n
        if n == 0:
            return self
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        return ContinuousSummary(n, mean, self.m2 + other.m2 + delta**2 * self.n * other.n / n)


Summary = BinarySummary | ContinuousSummary


def summarize(data, metric: Metric | None = None) -> Summary:
    """A summary from raw observations or counts.

    - a BinarySummary / ContinuousSummary: as is;
    - (successes, n): binary; (n, mean, variance): continuous; a mapping with those keys;
    - an array of observations: binary when `metric="binary"` or, when metric is None, when
      it is boolean or holds only 0 and 1; continuous otherwise.
    """
    if metric not in (None, "binary", "continuous"):
        raise InvalidInputError(f"metric must be 'binary' or 'continuous', got {metric!r}")
    if isinstance(data, (BinarySummary, ContinuousSummary)):
        out = data
    elif isinstance(data, tuple) and len(data) in (2, 3):  # before Mapping: abc checks are slow
        out = BinarySummary(*data) if len(data) == 2 else ContinuousSummary.from_moments(*data)
    elif isinstance(data, Mapping):
        if {"successes", "n"} <= data.keys():
            out = BinarySummary(data["successes"], data["n"])
        elif {"n", "mean", "variance"} <= data.keys():
            out = ContinuousSummary.from_moments(data["n"], data["mean"], data["variance"])
        else:
            raise InvalidInputError(
                "a summary mapping needs keys (successes, n) or (n, mean, variance), got "
                f"{sorted(data)}"
            )
    else:
        x = np.asarray(data)
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise InvalidInputError(f"observations must be numbers, got dtype {x.dtype}")
        xf = x.astype(float).ravel()
        if not np.isfinite(xf).all():
            raise InvalidInputError("observations contain NaN or infinite values")
        is01 = bool(np.isin(xf, (0.0, 1.0)).all())
        if metric == "binary" or (metric is None and xf.size and is01):
            if not is01:
                raise InvalidInputError("binary observations must all be 0/1 or booleans")
            out = BinarySummary(int(xf.sum()), int(xf.size))
        else:
            out = ContinuousSummary.from_values(xf)
    if metric is not None and out.metric != metric:
        raise InvalidInputError(f"expected a {metric} summary, got a {out.metric} one")
    return out


# -- fixed-horizon tests ------------------------------------------------------------------
@dataclass(frozen=True)
class TestResult:
    """A two-sided test of variant - control = 0 and the interval of that difference."""

    __test__ = False  # not a pytest class

    method: str
    statistic: float
    pvalue: float
    diff: float
    se: float  # unpooled standard error of diff (the interval's)
    ci_low: float
    ci_high: float
    df: float | None = None  # degrees of freedom (Welch); None for z


def _alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise InvalidInputError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    return float(alpha)


def two_proportions_ztest(
    successes_control: int,
    n_control: int,
    successes_variant: int,
    n_variant: int,
    *,
    alpha: float = 0.05,
) -> TestResult:
    """Pooled two-proportion z-test (two-sided), as statsmodels' proportions_ztest; the
    (1 - alpha) interval of the difference uses the unpooled standard error. With no
    variation at all (every trial a success, or none) z = 0 and p = 1."""
    a = BinarySummary(successes_control, n_control)
    b = BinarySummary(successes_variant, n_variant)
    if a.n < 1 or b.n < 1:
        raise InvalidInputError("each variant needs at least one observation")
    alpha = _alpha(alpha)
    p1, p2 = a.mean, b.mean
    pool = (a.successes + b.successes) / (a.n + b.n)
    se0 = math.sqrt(pool * (1 - pool) * (1 / a.n + 1 / b.n))
    diff = p2 - p1
    z = diff / se0 if se0 > 0 else 0.0
    pvalue = math.erfc(abs(z) / math.sqrt(2))  # = 2 * (1 - Phi(|z|))
    se = math.sqrt(p1 * (1 - p1) / a.n + p2 * (1 - p2) / b.n)
    half = _N.inv_cdf(1 - alpha / 2) * se
    return TestResult("two-proportion z-test", z, pvalue, diff, se, diff - half, diff + half)


def welch_ttest(
    n_control: int,
    mean_control: float,
    var_control: float,
    n_variant: int,
    mean_variant: float,
    var_variant: float,
    *,
    alpha: float = 0.05,
) -> TestResult:
    """Welch's t-test (two-sided) from n, mean and sample variance (ddof=1) per variant, as
    scipy.stats.ttest_ind(variant, control, equal_var=False), with the (1 - alpha) interval
    of the difference of means on the Welch-Satterthwaite degrees of freedom. Both variances
    zero: p = 1 when the means are equal, 0 otherwise."""
    a = ContinuousSummary.from_moments(n_control, mean_control, var_control)
    b = ContinuousSummary.from_moments(n_variant, mean_variant, var_variant)
    return _welch(a, b, _alpha(alpha))


def _welch(a: ContinuousSummary, b: ContinuousSummary, alpha: float) -> TestResult:
    if a.n < 2 or b.n < 2:
        raise InvalidInputError(
            f"Welch's t-test needs n >= 2 per variant for a variance, got {a.n} and {b.n}"
        )
    from scipy import special

    va, vb = a.variance / a.n, b.variance / b.n
    se = math.sqrt(va + vb)
    diff = b.mean - a.mean
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        return TestResult("Welch's t-test", t, p, diff, 0.0, diff, diff, float(a.n + b.n - 2))
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    t = diff / se
    pvalue = float(2 * special.stdtr(df, -abs(t)))
    half = float(special.stdtrit(df, 1 - alpha / 2)) * se
    return TestResult("Welch's t-test", t, pvalue, diff, se, diff - half, diff + half, df)


def compare(control, variant, *, alpha: float = 0.05, metric: Metric | None = None) -> TestResult:
    """The fixed-horizon test suited to the metric: two proportions or Welch's t."""
    a, b = summarize(control, metric), summarize(variant, metric)
    if a.metric != b.metric:
        raise InvalidInputError(f"control is {a.metric} but the variant is {b.metric}")
    if a.metric == "binary":
        return two_proportions_ztest(a.successes, a.n, b.successes, b.n, alpha=alpha)
    return _welch(a, b, _alpha(alpha))


def _z_for_sequential(a: Summary, b: Summary) -> tuple[float, float, float]:
    """(z under H0, diff, unpooled se) for the sequential test; NaN z where undefined."""
    if a.n < 2 or b.n < 2:
        return math.nan, math.nan, math.nan
    if a.metric == "binary":  # two_proportions_ztest's formulas, without its checks (per look)
        p1, p2 = a.successes / a.n, b.successes / b.n
        pool = (a.successes + b.successes) / (a.n + b.n)
        se0 = math.sqrt(pool * (1 - pool) * (1 / a.n + 1 / b.n))
        se = math.sqrt(p1 * (1 - p1) / a.n + p2 * (1 - p2) / b.n)
        return ((p2 - p1) / se0 if se0 > 0 else 0.0), p2 - p1, se
    va, vb = a.variance / a.n, b.variance / b.n
    se, diff = math.sqrt(va + vb), b.mean - a.mean
    if se == 0:
        return (0.0 if diff == 0 else math.nan), diff, 0.0
    return diff / se, diff, se
