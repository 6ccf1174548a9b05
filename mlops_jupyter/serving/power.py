"""Sample sizes and power of the fixed-horizon A/B tests (two-sided, level alpha).

- Two proportions (pooled z-test): the normal-approximation formula (Fleiss, without
  continuity correction) for control rate p1, variant rate p2 = p1 + mde and allocation
  k = n_variant / n_control:
      n_control = (z_{1-a/2} sqrt(pbar qbar (1 + 1/k)) + z_{1-b} sqrt(p1 q1 + p2 q2 / k))^2 / mde^2
  with pbar = (p1 + k p2) / (1 + k), the rate the pooled estimate converges to.
- Means (Welch's t-test): the smallest n whose power, from the noncentral t distribution
  with the Welch-Satterthwaite degrees of freedom, reaches the target; it starts from the
  normal formula n_control = (z_{1-a/2} + z_{1-b})^2 (sd1^2 + sd2^2 / k) / mde^2.

These are sizes for a test looked at once, at that n. The sequential test needs more
observations for the same power; that is the price of being allowed to look at any time.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from ..errors import InvalidInputError

_N = NormalDist()
_MAX_STEPS = 10_000  # the t correction adds a handful of observations to the normal n


def _check(alpha: float, power: float, ratio: float) -> None:
    if not (0 < alpha < 1):
        raise InvalidInputError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    if not (0 < power < 1):
        raise InvalidInputError(f"power must lie strictly between 0 and 1, got {power!r}")
    if not (math.isfinite(ratio) and ratio > 0):
        raise InvalidInputError(f"ratio (n_variant / n_control) must be > 0, got {ratio!r}")


def _check_effect(mde: float) -> float:
    if not (isinstance(mde, (int, float)) and math.isfinite(mde)) or mde == 0:
        raise InvalidInputError(f"the effect (mde) must be a non-zero finite number, got {mde!r}")
    return abs(float(mde))


def _sizes(n_control: float, ratio: float) -> tuple[int, int]:
    n_a = max(2, math.ceil(n_control - 1e-9))  # 1e-9: a formula landing on an integer keeps it
    return n_a, max(2, math.ceil(ratio * n_a - 1e-9))


def sample_size_proportions(
    p_control: float, mde: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> tuple[int, int]:
    """(n_control, n_variant) for the pooled two-proportion z-test to detect a change of
    `mde` (absolute, e.g. 0.02 for 10% -> 12%) from `p_control` with the given power."""
    _check(alpha, power, ratio)
    d = _check_effect(mde)
    p1 = float(p_control)
    if not (0 < p1 < 1):
        raise InvalidInputError(f"p_control must lie strictly between 0 and 1, got {p_control!r}")
    p2 = p1 + math.copysign(d, mde)
    if not (0 < p2 < 1):
        raise InvalidInputError(f"p_control + mde = {p2:g} is not a rate strictly within (0, 1)")
    pbar = (p1 + ratio * p2) / (1 + ratio)
    za, zb = _N.inv_cdf(1 - alpha / 2), _N.inv_cdf(power)
    root = za * math.sqrt(pbar * (1 - pbar) * (1 + 1 / ratio)) + zb * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2) / ratio
    )
    return _sizes(root**2 / d**2, ratio)


def power_proportions(
    p_control: float, p_variant: float, n_control: int, n_variant: int, *, alpha: float = 0.05
) -> float:
    """Power of the two-sided pooled z-test at these sizes (normal approximation)."""
    p1, p2 = float(p_control), float(p_variant)
    pbar = (n_control * p1 + n_variant * p2) / (n_control + n_variant)
    se0 = math.sqrt(pbar * (1 - pbar) * (1 / n_control + 1 / n_variant))
    se1 = math.sqrt(p1 * (1 - p1) / n_control + p2 * (1 - p2) / n_variant)
    za, d = _N.inv_cdf(1 - alpha / 2), abs(p2 - p1)
    return _N.cdf((d - za * se0) / se1) + _N.cdf((-d - za * se0) / se1)


def power_means(
    sd_control: float,
    sd_variant: float,
    mde: float,
    n_control: int,
    n_variant: int,
    *,
    alpha: float = 0.05,
) -> float:
    """Power of the two-sided Welch t-test at these sizes: noncentral t with the
    Welch-Satterthwaite degrees of freedom of the true variances."""
    from scipy import special

    va, vb = sd_control**2 / n_control, sd_variant**2 / n_variant
    df = (va + vb) ** 2 / (va**2 / (n_control - 1) + vb**2 / (n_variant - 1))
    ncp = abs(mde) / math.sqrt(va + vb)
    t = float(special.stdtrit(df, 1 - alpha / 2))
    return float(1 - special.nctdtr(df, ncp, t) + special.nctdtr(df, ncp, -t))


def sample_size_means(
    sd_control: float,
    mde: float,
    *,
    sd_variant: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
) -> tuple[int, int]:
    """(n_control, n_variant) for Welch's t-test to detect a difference of means of `mde`
    (absolute) when the per-observation standard deviations are sd_control and sd_variant
    (default: the same as the control)."""
    _check(alpha, power, ratio)
    d = _check_effect(mde)
    sd_b = sd_control if sd_variant is None else sd_variant
    for sd in (sd_control, sd_b):
        if not (math.isfinite(sd) and sd > 0):
            raise InvalidInputError(f"standard deviations must be > 0 and finite, got {sd!r}")
    za, zb = _N.inv_cdf(1 - alpha / 2), _N.inv_cdf(power)
    n_a, n_b = _sizes((za + zb) ** 2 * (sd_control**2 + sd_b**2 / ratio) / d**2, ratio)
    for _ in range(_MAX_STEPS):
        if power_means(sd_control, sd_b, d, n_a, n_b, alpha=alpha) >= power:
            return n_a, n_b
        n_a, n_b = _sizes(n_a + 1, ratio)
    return n_a, n_b
