"""Privacy accounting for DP-SGD: epsilon of (noise multiplier, sample rate, steps, delta)
from Opacus' accountants (RDP, PRV) or Google's dp-accounting (RDP, PLD), noise
calibration for a target epsilon, and the checks on (delta, sigma, q) every entry point shares.

Both frameworks (torch and MLX) go through these functions, so the epsilon of a run does not
depend on which framework trained it. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import InvalidInputError, MlopsJupyterError

__all__ = [
    "ACCOUNTANTS",
    "PrivacyError",
    "EpsilonCurve",
    "calibrate_noise",
    "check_accountant",
    "check_delta",
    "check_noise",
    "check_sample_rate",
    "epsilon",
]

# name -> (library, method). "rdp"/"prv" are Opacus' (PRV is Opacus' default);
# "dpa_rdp"/"dpa_pld" are dp-accounting's RDP and privacy-loss-distribution accountants.
ACCOUNTANTS: dict[str, tuple[str, str]] = {
    "rdp": ("opacus", "rdp"),
    "prv": ("opacus", "prv"),
    "dpa_rdp": ("dp_accounting", "rdp"),
    "dpa_pld": ("dp_accounting", "pld"),
}


class PrivacyError(MlopsJupyterError):
    """A DP-SGD setup that cannot give the promised guarantee (e.g. unsupported layers)."""


def _num(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        and not hasattr(value, "__float__")
    ):
        raise InvalidInputError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v):
        raise InvalidInputError(f"{name} must be a number, got NaN")
    return v


def check_accountant(accountant: Any) -> str:
    """Validate an accountant name (see ACCOUNTANTS)."""
    if accountant not in ACCOUNTANTS:
        raise InvalidInputError(
            f"accountant must be one of {sorted(ACCOUNTANTS)}, got {accountant!r}"
        )
    return accountant


def check_noise(noise_multiplier: Any) -> float:
    """sigma >= 0 (0 means no noise: no privacy, epsilon is infinite)."""
    s = _num("noise_multiplier", noise_multiplier)
    if s < 0 or math.isinf(s):
        raise InvalidInputError(
            f"noise_multiplier must be a finite number >= 0 (typically 0.5-2), got {s}; "
            "pass a positive noise_multiplier or target_epsilon= to have it calibrated"
        )
    return s


def check_sample_rate(sample_rate: Any) -> float:
    """0 < q <= 1: the probability that one example is in a batch (batch size / N)."""
    q = _num("sample_rate", sample_rate)
    if not 0 < q <= 1:
        raise InvalidInputError(f"sample_rate must be in (0, 1] (batch_size / N), got {q}")
    return q


def check_delta(delta: Any, n: int | None = None) -> float:
    """0 < delta < 1/N: a delta of 1/N or more allows leaking one whole example outright."""
    d = _num("delta", delta)
    if not 0 < d < 1:
        raise InvalidInputError(f"delta must be in (0, 1), got {d}")
    if n is not None and d >= 1.0 / n:
        raise InvalidInputError(
            f"delta={d:g} is >= 1/N = 1/{n}: a mechanism may then publish a whole example and "
            f"still meet it; choose delta well below 1/N, e.g. delta={_suggest_delta(n):g}"
        )
    return d


def _suggest_delta(n: int) -> float:
    # The usual rule of thumb: a power of ten at or below 1/(10 N).
    return 10.0 ** math.floor(math.log10(1.0 / (10 * n)))


def check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not hasattr(steps, "__index__"):
        raise InvalidInputError(f"steps must be a non-negative integer, got {steps!r}")
    s = int(steps.__index__())
    if s < 0:
        raise InvalidInputError(f"steps must be a non-negative integer, got {s}")
    return s


def epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "prv",
) -> float:
    """Epsilon spent after `steps` Poisson-sampled Gaussian steps, from the accountant's
    library itself (Opacus or dp-accounting). 0 steps spend 0; sigma 0 spends infinity."""
    sigma = check_noise(noise_multiplier)
    q = check_sample_rate(sample_rate)
    steps = check_steps(steps)
    delta = check_delta(delta)
    lib, method = ACCOUNTANTS[check_accountant(accountant)]
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    if lib == "opacus":
        from opacus.accountants import PRVAccountant, RDPAccountant

        acc = RDPAccountant() if method == "rdp" else PRVAccountant()
        acc.history = [(sigma, q, steps)]
        return float(acc.get_epsilon(delta))
    import dp_accounting

    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    dacc = (
        dp_accounting.rdp.RdpAccountant() if method == "rdp" else dp_accounting.pld.PLDAccountant()
    )
    dacc.compose(event, steps)
    return float(dacc.get_epsilon(delta))


@lru_cache(maxsize=64)
def _opacus_rdp_per_step(sigma: float, q: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as ardp

    orders = tuple(RDPAccountant.DEFAULT_ALPHAS)
    per_step = ardp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(orders))
    return orders, tuple(float(x) for x in per_step)


@dataclass
class EpsilonCurve:
    """epsilon(steps) for fixed (sigma, q, delta, accountant), memoised.

    Opacus' RDP composes linearly in the number of steps, so its per-order RDP of one step
    is computed once and epsilon is converted for blocks of step counts at once (the same
    numbers as Opacus' RDPAccountant, about a microsecond per step). The other accountants
    call their library (0.05-1 s each): `fast` tells which case this is."""

    noise_multiplier: float
    sample_rate: float
    delta: float
    accountant: str = "prv"

    def __post_init__(self) -> None:
        self.noise_multiplier = check_noise(self.noise_multiplier)
        self.sample_rate = check_sample_rate(self.sample_rate)
        self.delta = check_delta(self.delta)
        check_accountant(self.accountant)
        self._memo: dict[int, float] = {0: 0.0}

    @property
    def fast(self) -> bool:
        return self.accountant == "rdp" or self.noise_multiplier == 0

    def __call__(self, steps: int) -> float:
        eps = self._memo.get(steps)
        if eps is not None:
            return eps
        steps = check_steps(steps)
        if self.noise_multiplier == 0:
            eps = math.inf
        elif self.accountant == "rdp":
            return self._rdp_block(steps)
        else:
            eps = epsilon(
                self.noise_multiplier, self.sample_rate, steps, self.delta, self.accountant
            )
        if len(self._memo) > 100_000:  # a very long run: keep memory bounded
            self._memo.clear()
        self._memo[steps] = eps
        return eps

    _BLOCK = 256

    def _rdp_block(self, steps: int) -> float:
        """Opacus' RDP-to-epsilon conversion (get_privacy_spent: the same arithmetic, so the
        same floats) for a block of consecutive step counts at once: about a microsecond
        per training step instead of tens."""
        import numpy as np

        orders_t, per_step_t = _opacus_rdp_per_step(self.noise_multiplier, self.sample_rate)
        orders, per_step = np.asarray(orders_t), np.asarray(per_step_t)
        counts = np.arange(steps, steps + self._BLOCK)
        rdp = per_step[None, :] * counts[:, None]
        eps = (
            rdp
            - (np.log(self.delta) + np.log(orders)) / (orders - 1)
            + np.log((orders - 1) / orders)
        )
        with np.errstate(invalid="ignore"):
            best = np.where(np.isnan(eps).all(axis=1), np.inf, np.nanmin(eps, axis=1))
        if len(self._memo) > 100_000:  # a very long run: keep memory bounded
            self._memo = {0: 0.0}
        self._memo.update(zip(counts.tolist(), best.tolist()))
        return self._memo[steps]

    def max_steps(self, target_epsilon: float, limit: int = 10**9) -> int:
        """The most steps, up to `limit`, whose epsilon stays <= target_epsilon (0 if even
        one step exceeds it).

        Epsilon grows with the steps, roughly as their square root, so the search
        interpolates on epsilon squared (a handful of evaluations, which matters for the
        slow accountants) and falls back to bisection whenever the bracket shrinks by less
        than half, so it never needs more than about twice a bisection's evaluations."""
        target = _num("target_epsilon", target_epsilon)
        limit = check_steps(limit)
        if limit == 0 or self(1) > target:
            return 0
        lo, e_lo = 1, self(1)
        # bracket: extrapolate from the largest known in-budget point until one is over
        hi = None
        while hi is None:
            if lo >= limit:
                return limit
            guess = lo * (target / e_lo) ** 2 * 1.1 if e_lo > 0 else lo * 2
            n = min(limit, max(lo * 2, int(guess) + 1))
            e = self(n)
            if e <= target:
                lo, e_lo = n, e
            else:
                hi, e_hi = n, e
        bisect = False
        while hi - lo > 1:  # invariant: eps(lo) <= target < eps(hi)
            width = hi - lo
            if bisect or not (math.isfinite(e_hi) and e_hi > e_lo):
                n = (lo + hi) // 2
            else:
                t = (target**2 - e_lo**2) / (e_hi**2 - e_lo**2)
                n = min(hi - 1, max(lo + 1, lo + int(round(t * width))))
            e = self(n)
            if e <= target:
                lo, e_lo = n, e
                # the answer is probably just above: check the next step right away
                if n + 1 < hi and self(n + 1) > target:
                    return n
            else:
                hi, e_hi = n, e
            bisect = hi - lo > width // 2
        return lo


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
    tolerance: float = 0.01,
) -> float:
    """The smallest noise multiplier (to within the search) whose epsilon after `steps`
    steps is <= target_epsilon and >= target_epsilon - tolerance."""
    target = _num("target_epsilon", target_epsilon)
    if not 0 < target < math.inf:
        raise InvalidInputError(f"target_epsilon must be a positive finite number, got {target}")
    q = check_sample_rate(sample_rate)
    d = check_delta(delta)
    steps = check_steps(steps)
    check_accountant(accountant)
    tol = _num("tolerance", tolerance)
    if tol <= 0:
        raise InvalidInputError(f"tolerance must be > 0, got {tol}")
    if steps == 0:
        raise InvalidInputError(
            "steps must be >= 1 to calibrate the noise (give epochs= or steps=)"
        )

    def eps(s: float) -> float:
        return epsilon(s, q, steps, d, accountant)

    lo, hi = 0.0, 10.0
    while eps(hi) > target:  # too little noise even at hi: widen
        lo, hi = hi, 2 * hi
        if hi > 1e4:
            raise InvalidInputError(
                f"target_epsilon={target} is out of reach with sample_rate={q} and "
                f"steps={steps}; train fewer steps, use a smaller batch, or raise the target"
            )
    e_hi = eps(hi)
    # bisection on sigma: eps(hi) <= target always holds; stop when it is within tolerance
    for _ in range(100):
        if target - e_hi <= tol:
            break
        mid = (lo + hi) / 2
        e_mid = eps(mid)
        if e_mid > target:
            lo = mid
        else:
            hi, e_hi = mid, e_mid
    return hi
