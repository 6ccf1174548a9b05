"""Privacy accounting: our epsilon equals Opacus' and dp-accounting's, the noise calibration
hits its target, the step limit is exact, and bad settings are refused with the fix named."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("opacus")
pytest.importorskip("dp_accounting")

import dp_accounting  # noqa: E402
from opacus.accountants import PRVAccountant, RDPAccountant  # noqa: E402

from mlops_jupyter.errors import InvalidInputError  # noqa: E402
from mlops_jupyter.privacy import EpsilonCurve, calibrate_noise, compute_epsilon  # noqa: E402

# (sigma, q) pairs whose RDP series converge quickly (Opacus' fractional orders can take
# seconds for small sigma and large q), each at a short and a long training.
GRID = [
    (sigma, q, steps)
    for sigma, q in ((1.0, 0.004), (2.0, 0.004), (2.0, 0.02))
    for steps in (20, 400)
]
DELTA = 1e-5


def _opacus(kind: str, sigma: float, q: float, steps: int, delta: float) -> float:
    acc = RDPAccountant() if kind == "rdp" else PRVAccountant()
    for _ in range(steps):  # the accountant's own per-step API, as a training would call it
        acc.step(noise_multiplier=sigma, sample_rate=q)
    return float(acc.get_epsilon(delta))


def _dpa(kind: str, sigma: float, q: float, steps: int, delta: float) -> float:
    acc = dp_accounting.rdp.RdpAccountant() if kind == "rdp" else dp_accounting.pld.PLDAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    acc.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize("sigma,q,steps", GRID)
def test_epsilon_equals_opacus_and_dp_accounting(sigma, q, steps):
    refs = {
        "rdp": _opacus("rdp", sigma, q, steps, DELTA),
        "prv": _opacus("prv", sigma, q, steps, DELTA),
        "dpa_rdp": _dpa("rdp", sigma, q, steps, DELTA),
        "dpa_pld": _dpa("pld", sigma, q, steps, DELTA),
    }
    for name, ref in refs.items():
        ours = compute_epsilon(sigma, q, steps, DELTA, accountant=name)
        assert ours == pytest.approx(ref, rel=1e-6), name
        assert 0 < ours < math.inf
    # the per-step curve (what the run logs) gives the same numbers
    for name in ("rdp", "prv"):
        curve = EpsilonCurve(sigma, q, DELTA, name)
        assert curve(steps) == pytest.approx(refs[name], rel=1e-6), name


def test_fast_rdp_curve_matches_opacus_at_every_step():
    curve = EpsilonCurve(2.0, 0.02, DELTA, "rdp")
    assert curve.fast
    acc = RDPAccountant()
    for step in range(1, 301):
        acc.step(noise_multiplier=2.0, sample_rate=0.02)
        if step % 37 == 0 or step in (1, 2, 300):
            assert curve(step) == pytest.approx(acc.get_epsilon(DELTA), rel=1e-9)
    assert curve(0) == 0.0
    assert EpsilonCurve(0.0, 0.02, DELTA, "prv")(5) == math.inf


@pytest.mark.parametrize("accountant,target", [("rdp", 0.5), ("rdp", 3.0), ("prv", 1.0)])
def test_calibrated_noise_hits_target(accountant, target):
    q, steps = 0.004, 300
    sigma = calibrate_noise(target, DELTA, q, steps, accountant, tolerance=0.01)
    eps = compute_epsilon(sigma, q, steps, DELTA, accountant)
    assert target - 0.01 <= eps <= target
    # and it is the least noise that does: 2 % less noise overspends
    assert compute_epsilon(sigma * 0.98, q, steps, DELTA, accountant) > target - 0.01


def test_max_steps_is_the_exact_limit():
    curve = EpsilonCurve(2.0, 0.02, DELTA, "rdp")
    target = 1.0
    n = curve.max_steps(target)
    assert n > 10
    assert curve(n) <= target < curve(n + 1)
    assert curve.max_steps(curve(1) / 2) == 0
    assert curve.max_steps(target, limit=n - 3) == n - 3  # capped: only the limit is known
    assert curve.max_steps(target, limit=n + 3) == n


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 10**7), k=st.floats(1.0, 1e3))
def test_delta_of_one_over_n_or_more_is_refused(n, k):
    from mlops_jupyter.privacy.accounting import check_delta

    delta = min(k / n, 0.999)
    if delta < 1.0 / n:  # only when k/n was capped below 1/n (n == 1)
        return
    with pytest.raises(InvalidInputError, match=r"1/N.*choose delta well below 1/N"):
        check_delta(delta, n)
    assert check_delta(0.5 / n, n) == 0.5 / n


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"noise_multiplier": -0.5}, "noise_multiplier must be a finite number >= 0"),
        ({"noise_multiplier": float("nan")}, "noise_multiplier must be a number"),
        ({"sample_rate": 0.0}, r"sample_rate must be in \(0, 1\]"),
        ({"sample_rate": 1.5}, r"sample_rate must be in \(0, 1\]"),
        ({"delta": 0.0}, r"delta must be in \(0, 1\)"),
        ({"steps": -1}, "steps must be a non-negative integer"),
        ({"accountant": "moments"}, "accountant must be one of"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, match):
    args = {"noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 10, "delta": DELTA}
    accountant = kwargs.pop("accountant", "rdp")
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=match):
        compute_epsilon(**args, accountant=accountant)


def test_unreachable_target_says_what_to_change():
    with pytest.raises(InvalidInputError, match="out of reach"):
        calibrate_noise(1e-6, DELTA, 1.0, 10_000, "rdp")


def test_budget_rule_past_its_first_search_horizon():
    from mlops_jupyter.privacy import BudgetTracker, PrivacyBudgetExhausted

    curve = EpsilonCurve(2.0, 0.02, DELTA, "rdp")
    target = curve(5000) * (1 + 1e-12)
    t = BudgetTracker(curve, target_epsilon=target, warn_at=0.99)
    assert t.max_steps == 4096  # searched only up to the horizon so far
    with pytest.raises(PrivacyBudgetExhausted) as exc:
        for _ in range(6000):
            t.before_step()
            t.after_step()
    assert t.steps == exc.value.steps == 5000 == t.max_steps
    assert t.warn_steps == curve.max_steps(0.99 * target) + 1


@settings(max_examples=40, deadline=None)
@given(
    sigma=st.sampled_from([0.9, 1.3, 2.0, 4.0]),
    q=st.sampled_from([0.001, 0.01, 0.05, 0.2]),
    target=st.floats(0.05, 30.0),
    limit=st.integers(1, 50_000),
)
def test_step_limit_search_is_exact(sigma, q, target, limit):
    curve = EpsilonCurve(sigma, q, DELTA, "rdp")
    n = curve.max_steps(target, limit=limit)
    assert 0 <= n <= limit
    if n:
        assert curve(n) <= target
    if n < limit:
        assert curve(n + 1) > target


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"warn_at": True}, "warn_at must be a fraction"),
        ({"warn_at": 1.5}, "warn_at must be a fraction"),
        ({"target_epsilon": "3"}, "target_epsilon must be a positive finite number"),
        ({"target_epsilon": math.inf}, "target_epsilon must be a positive finite number"),
    ],
)
def test_budget_rule_settings_are_checked(kwargs, match):
    from mlops_jupyter.privacy import BudgetTracker

    with pytest.raises(InvalidInputError, match=match):
        BudgetTracker(EpsilonCurve(2.0, 0.02, DELTA, "rdp"), **kwargs)
