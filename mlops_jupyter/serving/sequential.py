"""Always-valid inference for A/B tests: the mixture sequential probability ratio test.

mSPRT (Johari, Koomen, Pekelis & Walsh, "Always valid inference: continuous monitoring of
A/B tests", Operations Research 2022; arXiv 2015/2017). The difference of the variant and the
control, theta_hat, is treated as normal with variance s^2 (a plug-in estimate). Mixing the
alternative theta ~ N(0, tau^2) gives the likelihood ratio against theta = 0

    Lambda = sqrt(s^2 / (s^2 + tau^2)) * exp(theta_hat^2 tau^2 / (2 s^2 (s^2 + tau^2)))

which under H0 is a non-negative martingale with mean 1, so by Ville's inequality
P(Lambda ever reaches 1/alpha) <= alpha: the p-value p_n = min(1, 1/Lambda_1, ..., 1/Lambda_n)
stays valid however often it is looked at, and the test may stop whenever it rejects.

Here tau is given in units of the per-observation standard deviation sigma (a standardised
effect size, Cohen's d), tau_abs = tau * sigma with s^2 = sigma^2 (1/n_a + 1/n_b). Then with
r = (1/n_a + 1/n_b) / tau^2 = s^2 / tau_abs^2 and z = theta_hat / s

    log Lambda = 0.5 log(r / (1 + r)) + z^2 / (2 (1 + r))

depends only on z and the counts, so the running state is a few numbers per variant.
Inverting the test gives a confidence sequence: theta_hat +- s sqrt((1 + r)(2 log(1/alpha) +
log(1 + 1/r))); the running intersection of these intervals is the always-valid interval.

tau sets where the test is most powerful: about the standardised effect you care about.
The default 0.1 (a tenth of a standard deviation) suits typical model rollouts; a smaller
tau detects small effects sooner and large ones later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

DEFAULT_TAU = 0.1
DEFAULT_MIN_N = 20  # per arm before the plug-in variance is trusted (the p-value stays 1)


def _check_tau_alpha(tau: float, alpha: float | None = None) -> None:
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise InvalidInputError(f"tau must be a positive finite number, got {tau!r}")
    if alpha is not None and not (0 < alpha < 1):
        raise InvalidInputError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")


def _ratio(n_a, n_b, tau: float):
    """r = s^2 / tau_abs^2 = (1/n_a + 1/n_b) / tau^2 (arrays broadcast)."""
    return (1.0 / np.asarray(n_a, dtype=float) + 1.0 / np.asarray(n_b, dtype=float)) / tau**2


def log_likelihood_ratio(z, n_a, n_b, tau: float = DEFAULT_TAU):
    """log Lambda of the normal-mixture SPRT for the z statistic of a difference between
    samples of sizes n_a and n_b (numpy arrays broadcast)."""
    _check_tau_alpha(tau)
    r = _ratio(n_a, n_b, tau)
    z = np.asarray(z, dtype=float)
    out = 0.5 * np.log(r / (1.0 + r)) + z**2 / (2.0 * (1.0 + r))
    return float(out) if out.ndim == 0 else out


def always_valid_pvalue(z, n_a, n_b, tau: float = DEFAULT_TAU):
    """min(1, 1/Lambda) at one look; take the running minimum over looks (SequentialState
    does) for the always-valid p-value of a monitored test."""
    out = np.minimum(1.0, np.exp(-np.asarray(log_likelihood_ratio(z, n_a, n_b, tau))))
    return float(out) if out.ndim == 0 else out


def confidence_halfwidth(se, n_a, n_b, tau: float = DEFAULT_TAU, alpha: float = 0.05):
    """Half-width of the (1 - alpha) confidence-sequence interval around theta_hat at one
    look, for a difference with standard error `se` (arrays broadcast)."""
    _check_tau_alpha(tau, alpha)
    r = _ratio(n_a, n_b, tau)
    out = np.asarray(se, dtype=float) * np.sqrt(
        (1.0 + r) * (2.0 * math.log(1.0 / alpha) + np.log1p(1.0 / r))
    )
    return float(out) if out.ndim == 0 else out


@dataclass
class SequentialState:
    """Running always-valid p-value and confidence interval of one variant vs the control.

    Update it after every batch (`look`); it keeps only the running minimum p-value, the
    running intersection of the intervals and the number of looks."""

    pvalue: float = 1.0
    ci_low: float = -math.inf
    ci_high: float = math.inf
    looks: int = 0

    def look(
        self,
        *,
        z: float,
        diff: float,
        se: float,
        n_a: int,
        n_b: int,
        tau: float = DEFAULT_TAU,
        alpha: float = 0.05,
        min_n: int = DEFAULT_MIN_N,
    ) -> None:
        """Take one look at the current totals: z is the test statistic under H0 (pooled
        for proportions), diff and se the difference and its unpooled standard error."""
        self.looks += 1
        if min(n_a, n_b) < max(min_n, 2) or not math.isfinite(z):
            return  # too few observations for the plug-in variance: no evidence yet
        # scalar math here (numpy on scalars costs ~10x): the same formulas as above
        r = (1.0 / n_a + 1.0 / n_b) / tau**2
        log_lr = 0.5 * math.log(r / (1.0 + r)) + z * z / (2.0 * (1.0 + r))
        self.pvalue = min(self.pvalue, math.exp(-log_lr) if log_lr > 0 else 1.0)
        if not se > 0:
            return  # no variation in either arm yet (all 0 or all 1): no spread to go on
        half = se * math.sqrt((1.0 + r) * (2.0 * math.log(1.0 / alpha) + math.log1p(1.0 / r)))
        lo, hi = diff - half, diff + half
        new_low, new_high = max(self.ci_low, lo), min(self.ci_high, hi)
        if new_low > new_high:
            # the intervals stopped overlapping: the plug-in model is off (it happens with
            # drifting traffic); restart from the current interval rather than report none
            new_low, new_high = lo, hi
        self.ci_low, self.ci_high = new_low, new_high
