"""A/B statistics (mlops_jupyter.serving.abtest): the fixed tests equal scipy on the same
data, the sequential verdict keeps its false-positive rate under peeking after every batch
(where the naive fixed test does not), the stated sample sizes give the stated power, and
bad input is refused with nothing changed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.stats.proportion as smp
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.serving import abtest, power, sequential
from mlops_jupyter.serving.abtest import (
    ABTest,
    BinarySummary,
    ContinuousSummary,
    compare,
    report,
    summarize,
    two_proportions_ztest,
    welch_ttest,
)

sps = pytest.importorskip("scipy.stats")

ALPHA = 0.05
EXPERIMENTS = 500
# binomial standard error of a rate near 0.8 over 500 experiments: sqrt(0.8 * 0.2 / 500)
SE_500 = math.sqrt(0.8 * 0.2 / EXPERIMENTS)  # 0.0179; 3 SE = 5.4 points


# -- fixed-horizon tests equal scipy -------------------------------------------------------
def _hand_ztest(x1, n1, x2, n2, alpha=ALPHA):
    p1, p2, pool = x1 / n1, x2 / n2, (x1 + x2) / (n1 + n2)
    z = (p2 - p1) / math.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2))
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    q = sps.norm.ppf(1 - alpha / 2)
    return z, 2 * sps.norm.sf(abs(z)), (p2 - p1 - q * se, p2 - p1 + q * se)


@settings(max_examples=60, deadline=None)
@given(
    n1=st.integers(1, 10**6),
    n2=st.integers(1, 10**6),
    f1=st.floats(0, 1),
    f2=st.floats(0, 1),
    alpha=st.sampled_from([0.01, 0.05, 0.1, 0.025]),
)
def test_two_proportions_equals_a_scipy_z_test(n1, n2, f1, f2, alpha):
    x1, x2 = round(f1 * n1), round(f2 * n2)
    got = two_proportions_ztest(x1, n1, x2, n2, alpha=alpha)
    if x1 + x2 in (0, n1 + n2):  # no variation: defined as no evidence
        assert (got.statistic, got.pvalue) == (0.0, 1.0)
        return
    z, p, (lo, hi) = _hand_ztest(x1, n1, x2, n2, alpha)
    assert got.statistic == pytest.approx(z, rel=1e-9, abs=1e-12)
    assert got.pvalue == pytest.approx(p, rel=1e-7, abs=1e-300)
    assert (got.ci_low, got.ci_high) == pytest.approx((lo, hi), rel=1e-9, abs=1e-12)


def test_two_proportions_equals_statsmodels():
    r = np.random.default_rng(1)
    for _ in range(50):
        n = r.integers(10, 5000, size=2)
        x = r.binomial(n, r.uniform(0.02, 0.98, size=2))
        z, p = smp.proportions_ztest([x[1], x[0]], [n[1], n[0]])
        got = two_proportions_ztest(int(x[0]), int(n[0]), int(x[1]), int(n[1]))
        assert (got.statistic, got.pvalue) == pytest.approx((z, p), rel=1e-9)


def test_welch_equals_scipy_ttest_ind():
    r = np.random.default_rng(2)
    for i in range(60):
        n1, n2 = r.integers(2, 400, size=2)
        a = r.normal(0, r.uniform(0.1, 5), n1)
        b = r.normal(r.normal(0, 0.5), r.uniform(0.1, 5), n2)
        alpha = (0.01, 0.05, 0.1)[i % 3]
        want = sps.ttest_ind(b, a, equal_var=False)
        ci = want.confidence_interval(1 - alpha)
        got = compare(a, b, alpha=alpha, metric="continuous")
        assert got.statistic == pytest.approx(want.statistic, rel=1e-9)
        assert got.pvalue == pytest.approx(want.pvalue, rel=1e-8, abs=1e-300)
        assert got.df == pytest.approx(want.df, rel=1e-9)
        assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-8)
        # the same from (n, mean, variance), as a monitoring window would hand them over
        again = welch_ttest(
            n1, a.mean(), a.var(ddof=1), n2, b.mean(), b.var(ddof=1), alpha=alpha
        )  # fmt: skip
        assert again.pvalue == pytest.approx(got.pvalue, rel=1e-9, abs=1e-300)


def test_batch_summaries_merge_to_the_summary_of_all_rows():
    r = np.random.default_rng(3)
    x = r.normal(1e6, 3.0, 10_000)  # a large offset: sums of squares would cancel here
    parts = np.array_split(x, 37)
    merged = ContinuousSummary.from_values(parts[0])
    for p in parts[1:]:
        merged = merged.merge(ContinuousSummary.from_values(p))
    assert merged.n == x.size
    assert merged.mean == pytest.approx(x.mean(), rel=1e-12)
    assert merged.variance == pytest.approx(x.var(ddof=1), rel=1e-9)
    y = r.random(1000) < 0.3
    assert summarize(y) == BinarySummary(int(y.sum()), 1000)
    assert summarize(y.astype(int)) == summarize(y)
    assert summarize((30, 100)) == BinarySummary(30, 100)
    assert summarize({"n": 10, "mean": 2.0, "variance": 4.0}).variance == pytest.approx(4.0)
    assert summarize(np.array([0.5, 1.0, 2.0])).metric == "continuous"


# -- the sequential test under A/A, checked after every batch -------------------------------
BATCHES = 50


def test_binary_aa_false_positive_rate_with_a_look_after_every_batch():
    """500 A/A experiments, 50 batches of 100 trials per arm each, the report read after
    every batch: the verdict (always-valid) is wrong in <= 5 % of experiments, while acting
    on the fixed test's p-value at each look would be wrong far more often."""
    r = np.random.default_rng(10)
    counts = r.binomial(100, 0.1, size=(EXPERIMENTS, BATCHES, 2))
    verdict_wrong = naive_wrong = 0
    for e in range(EXPERIMENTS):
        test = ABTest("v3", ["v4"], metric="binary")
        wrong = naive = False
        for b in range(BATCHES):
            test.update({"v3": (int(counts[e, b, 0]), 100), "v4": (int(counts[e, b, 1]), 100)})
            row = test.report()["v4"]
            wrong |= row.action != "keep collecting"
            naive |= row.pvalue <= ALPHA
        verdict_wrong += wrong
        naive_wrong += naive
    assert verdict_wrong / EXPERIMENTS <= ALPHA
    assert naive_wrong / EXPERIMENTS > 2 * ALPHA  # the check above can fail: peeking inflates


def _batch_moments(x):
    return x.shape[-1], x.mean(-1), x.var(-1, ddof=1)


def test_continuous_aa_false_positive_rate_with_a_look_after_every_batch():
    """The same for a skewed continuous metric (exponential, like revenue per request),
    Welch's t on the fixed side. The always-valid p-value is a running minimum, so a false
    verdict at any look shows in the p-value after the last; the naive rate comes from
    scipy's Welch test on the running totals."""
    r = np.random.default_rng(11)
    x = r.exponential(2.0, size=(EXPERIMENTS, BATCHES, 2, 100))
    n, mean, var = _batch_moments(x)
    verdict_wrong = 0
    for e in range(EXPERIMENTS):
        test = ABTest("v3", ["v4"], metric="continuous")
        first = None
        for b in range(BATCHES):
            test.update(
                {
                    "v3": (n, float(mean[e, b, 0]), float(var[e, b, 0])),
                    "v4": (n, float(mean[e, b, 1]), float(var[e, b, 1])),
                }
            )
            if first is None and test.states["v4"].pvalue <= ALPHA:
                first = b
        final = test.report()["v4"]
        if first is not None:  # once wrong, the report stays wrong: it never un-rejects
            assert final.action.startswith(("promote", "roll back"))
        verdict_wrong += final.action != "keep collecting"
    assert verdict_wrong / EXPERIMENTS <= ALPHA
    # naive: scipy's Welch test on the cumulative sums after every batch
    cn = 100 * np.arange(1, BATCHES + 1)[None, :, None]
    s = np.cumsum(x.sum(-1), axis=1)  # (experiment, batch, arm) running totals
    sq = np.cumsum((x**2).sum(-1), axis=1)
    m = s / cn
    v = (sq - cn * m**2) / (cn - 1)
    p = sps.ttest_ind_from_stats(
        m[..., 1], np.sqrt(v[..., 1]), cn[..., 0], m[..., 0], np.sqrt(v[..., 0]), cn[..., 0],
        equal_var=False,
    ).pvalue  # fmt: skip
    assert (p <= ALPHA).any(axis=1).mean() > 2 * ALPHA


@pytest.mark.parametrize("tau", [0.02, 0.1, 0.5])
def test_canary_split_aa_false_positive_rate_for_any_tau(tau):
    """A 90/10 canary split at a 5 % rate, 2000 A/A experiments of 50 looks each, with the
    vectorised formulas (equal to the per-batch state, see below): still <= alpha."""
    r = np.random.default_rng(14)
    e, na, nb = 2000, 180, 20
    xa = np.cumsum(r.binomial(na, 0.05, (e, BATCHES)), axis=1)
    xb = np.cumsum(r.binomial(nb, 0.05, (e, BATCHES)), axis=1)
    ca, cb = na * np.arange(1, BATCHES + 1), nb * np.arange(1, BATCHES + 1)
    pool = (xa + xb) / (ca + cb)
    se0 = np.sqrt(pool * (1 - pool) * (1 / ca + 1 / cb))
    z = np.divide(xb / cb - xa / ca, se0, out=np.zeros_like(se0), where=se0 > 0)
    p = sequential.always_valid_pvalue(z, ca, cb, tau)
    p[:, cb < sequential.DEFAULT_MIN_N] = 1.0
    assert (p.min(axis=1) <= ALPHA).mean() <= ALPHA


def test_sequential_detects_a_real_effect_and_its_interval_covers_it():
    r = np.random.default_rng(12)
    test = ABTest("v3", ["v4"], metric="binary")
    for _ in range(200):
        test.update({"v3": r.random(500) < 0.10, "v4": r.random(500) < 0.12})
        if test.report()["v4"].action != "keep collecting":
            break
    row = test.report()["v4"]
    assert row.action == "promote v4"
    assert row.cs_low <= 0.02 <= row.cs_high
    assert row.cs_low <= row.ci_low and row.ci_high <= row.cs_high  # wider than fixed


def test_always_valid_interval_covers_the_true_difference_at_every_look():
    """1000 experiments with a real effect (10 % -> 12 %), 50 looks each: the running
    interval the report shows holds the true difference at all looks at once in >= 95 %."""
    r = np.random.default_rng(15)
    e, n, pa, pb = 1000, 100, 0.10, 0.12
    xa = np.cumsum(r.binomial(n, pa, (e, BATCHES)), axis=1)
    xb = np.cumsum(r.binomial(n, pb, (e, BATCHES)), axis=1)
    c = n * np.arange(1, BATCHES + 1)
    p1, p2 = xa / c, xb / c
    se = np.sqrt(p1 * (1 - p1) / c + p2 * (1 - p2) / c)
    missed = 0
    for i in range(e):
        s, miss = sequential.SequentialState(), False
        for b in range(BATCHES):
            d = float(p2[i, b] - p1[i, b])
            s.look(z=0.0, diff=d, se=float(se[i, b]), n_a=int(c[b]), n_b=int(c[b]))
            miss |= not (s.ci_low <= pb - pa <= s.ci_high)
        missed += miss
    assert missed / e <= ALPHA
    # the fixed 95 % interval read at every look misses far more often: the check can fail
    fixed_missed = (np.abs(p2 - p1 - (pb - pa)) > 1.959964 * se).any(axis=1).mean()
    assert fixed_missed > 2 * ALPHA


def test_state_look_equals_the_vectorised_formulas():
    r = np.random.default_rng(13)
    z, se = r.normal(0, 3, 100), r.uniform(0.01, 1, 100)
    na, nb = r.integers(20, 10_000, 100), r.integers(20, 10_000, 100)
    p = sequential.always_valid_pvalue(z, na, nb, 0.2)
    half = sequential.confidence_halfwidth(se, na, nb, 0.2, 0.01)
    for i in range(100):
        s = sequential.SequentialState()
        s.look(z=z[i], diff=1.0, se=se[i], n_a=int(na[i]), n_b=int(nb[i]), tau=0.2, alpha=0.01)
        assert s.pvalue == pytest.approx(p[i], rel=1e-12)
        assert s.ci_high - 1.0 == pytest.approx(half[i], rel=1e-12)
        # the interval is the inverted test: at its edge the likelihood ratio is 1/alpha
        edge = sequential.log_likelihood_ratio(half[i] / se[i], na[i], nb[i], 0.2)
        assert edge == pytest.approx(math.log(100), rel=1e-9)


# -- power at the stated sample size --------------------------------------------------------
def test_proportions_power_matches_the_stated_sample_size():
    p1, mde = 0.10, 0.03
    na, nb = power.sample_size_proportions(p1, mde)
    assert power.power_proportions(p1, p1 + mde, na, nb) == pytest.approx(0.8, abs=2e-3)
    r = np.random.default_rng(20)

    def rejections(na, nb):
        xa, xb = r.binomial(na, p1, EXPERIMENTS), r.binomial(nb, p1 + mde, EXPERIMENTS)
        return np.mean([two_proportions_ztest(a, na, b, nb).pvalue <= ALPHA
                        for a, b in zip(xa.tolist(), xb.tolist())])  # fmt: skip

    assert abs(rejections(na, nb) - 0.8) <= 3 * SE_500
    assert rejections(na // 2, nb // 2) < 0.8 - 3 * SE_500  # half the size: clearly less


def test_means_power_matches_the_stated_sample_size_with_unequal_split():
    sd_a, sd_b, mde = 1.0, 1.5, 0.25
    na, nb = power.sample_size_means(sd_a, mde, sd_variant=sd_b, ratio=0.5)
    assert nb == math.ceil(na * 0.5)
    r = np.random.default_rng(21)

    def rejections(na, nb):
        a = r.normal(0.0, sd_a, (EXPERIMENTS, na))
        b = r.normal(mde, sd_b, (EXPERIMENTS, nb))
        return np.mean([welch_ttest(na, ma, va, nb, mb, vb).pvalue <= ALPHA
                        for ma, va, mb, vb in zip(a.mean(1), a.var(1, ddof=1),
                                                  b.mean(1), b.var(1, ddof=1))])  # fmt: skip

    assert abs(rejections(na, nb) - 0.8) <= 3 * SE_500
    assert rejections(na // 2, nb // 2) < 0.8 - 3 * SE_500


def test_report_states_the_sample_still_needed():
    data = {"v3": (100, 1000), "v4": (120, 1000)}
    row = report(data, "v3", mde=0.02)["v4"]
    need = power.sample_size_proportions(0.1, 0.02, ratio=1.0)
    assert (row.n_needed_control, row.n_needed_variant) == (need[0] - 1000, need[1] - 1000)
    assert row.effect_for_n == 0.02
    # no mde: sized for the observed difference
    row = report(data, "v3")["v4"]
    assert row.effect_for_n == pytest.approx(0.02)
    assert row.n_needed_control > 0 and row.action == "keep collecting"
    # once the sequential verdict is in, nothing more is needed
    row = report({"v3": (1000, 10_000), "v4": (1300, 10_000)}, "v3", mde=0.005)["v4"]
    assert row.action == "promote v4"
    assert (row.n_needed_control, row.n_needed_variant) == (0, 0)


# -- actions, several variants -------------------------------------------------------------
def test_actions_follow_the_documented_rule():
    r = np.random.default_rng(30)
    big = 200_000
    up = {"v3": (r.random(big) < 0.10), "v4": (r.random(big) < 0.11)}
    assert report(up, "v3").actions == {"v4": "promote v4"}
    assert report(up, "v3", higher_is_better=False).actions == {"v4": "roll back v4"}
    same = {"v3": (r.random(big) < 0.10), "v4": (r.random(big) < 0.10)}
    assert report(same, "v3", mde=0.01).actions == {"v4": "no difference: keep control"}
    assert report(same, "v3").actions == {"v4": "keep collecting"}  # no mde: never "no diff"
    small = {"v3": (10, 100), "v4": (12, 100)}
    assert report(small, "v3", mde=0.01).actions == {"v4": "keep collecting"}


def test_several_variants_are_bonferroni_corrected():
    r = np.random.default_rng(31)
    data = {v: r.normal(mu, 1.0, 400) for v, mu in [("v3", 0), ("v4", 0.1), ("v5", 0.3)]}
    rep = report(data, "v3")
    single = report({"v3": data["v3"], "v5": data["v5"]}, "v3")["v5"]
    row = rep["v5"]
    fixed = compare(data["v3"], data["v5"], alpha=ALPHA / 2)
    assert row.pvalue == pytest.approx(min(1.0, 2 * fixed.pvalue))
    assert (row.ci_low, row.ci_high) == pytest.approx((fixed.ci_low, fixed.ci_high))
    assert row.always_valid_p == pytest.approx(min(1.0, 2 * single.always_valid_p))
    assert row.cs_high - row.cs_low > single.cs_high - single.cs_low
    assert set(rep.actions) == {"v4", "v5"} and "v5" in str(rep)
    data = {v: r.normal(mu, 1.0, 2000) for v, mu in [("v3", 0), ("v4", 0.0), ("v5", 0.3)]}
    assert report(data, "v3").actions == {"v4": "keep collecting", "v5": "promote v5"}
    assert report(data, "v3").winner == "v5"
    both = report({**data, "v4": r.normal(0.5, 1.0, 2000)}, "v3")
    assert both.actions == {"v4": "promote v4", "v5": "promote v5"}
    assert both.winner == "v4"  # the best estimate of those promoted
    assert report(data, "v3", higher_is_better=False).winner is None  # v5 is rolled back
    assert rep.to_dict()["variants"][1]["variant"] == "v5"


# -- bad input -----------------------------------------------------------------------------
BAD_INPUT = [
    (lambda: BinarySummary(-1, 10), "negative"),
    (lambda: BinarySummary(11, 10), "exceed"),
    (lambda: BinarySummary(1.5, 10), "whole number"),
    (lambda: BinarySummary(True, 10), "whole number"),
    (lambda: summarize([1.0, float("nan")]), "NaN"),
    (lambda: summarize([0, 1, 2], metric="binary"), "0/1"),
    (lambda: summarize(["a", "b"]), "numbers"),
    (lambda: summarize({"n": 3}), "keys"),
    (lambda: ContinuousSummary.from_moments(1, 0.0, 1.0), "n >= 2"),
    (lambda: ContinuousSummary.from_moments(5, float("nan"), 1.0), "finite"),
    (lambda: ContinuousSummary.from_moments(5, 0.0, -1.0), "negative"),
    (lambda: welch_ttest(1, 0.0, 0.0, 5, 1.0, 1.0), "n >= 2"),
    (lambda: two_proportions_ztest(0, 0, 1, 5), "at least one"),
    (lambda: two_proportions_ztest(1, 5, 1, 5, alpha=1.5), "alpha"),
    (lambda: compare((1, 5), (5, 1.0, 1.0)), "binary"),
    (lambda: power.sample_size_proportions(0.99, 0.05), "rate"),
    (lambda: power.sample_size_means(1.0, 0.0), "non-zero"),
    (lambda: power.sample_size_means(-1.0, 0.1), "standard deviations"),
    (lambda: ABTest("v3", []), "at least one variant"),
    (lambda: ABTest("v3", ["v3"]), "distinct"),
    (lambda: report({"v4": (1, 5)}, "v3"), "control"),
    (lambda: sequential.always_valid_pvalue(1.0, 10, 10, tau=0.0), "tau"),
]


def test_bad_input_is_refused_with_a_clear_error():
    # one test for all cases: the per-test store fixture would cost more than the cases
    for i, (call, message) in enumerate(BAD_INPUT):
        with pytest.raises(InvalidInputError, match=message):
            call()
            pytest.fail(f"case {i} ({message!r}) was accepted")


def test_a_bad_batch_changes_nothing():
    test = ABTest("v3", ["v4"])
    test.update({"v3": [0, 1, 1, 0] * 10, "v4": [1, 1, 1, 0] * 10})
    before = (dict(test.summaries), test.looks, test.report())
    with pytest.raises(InvalidInputError, match="NaN"):
        test.update({"v3": [0, 1], "v4": [1.0, float("nan")]})
    with pytest.raises(InvalidInputError, match="unknown variant"):
        test.update({"v3": [0, 1], "v9": [1, 0]})
    with pytest.raises(InvalidInputError, match="binary"):
        test.update({"v3": [0.5, 2.0]})  # the test is binary since the first batch
    assert (dict(test.summaries), test.looks, test.report()) == before
    assert abtest.summarize(test.summaries["v3"]).n == 40


def test_state_survives_json_and_continues_identically():
    """A server keeps the running state between processes: through JSON and back, the test
    goes on exactly as the one kept in memory."""
    import json

    r = np.random.default_rng(40)
    for metric, draw in [
        ("binary", lambda mu: r.random(300) < 0.1 + mu),
        ("continuous", lambda mu: r.exponential(1.0 + mu, 300)),
    ]:
        kept = ABTest("v3", ["v4", "v5"], metric=metric, mde=0.02)
        batches = [{"v3": draw(0), "v4": draw(0.02), "v5": draw(0)} for _ in range(30)]
        for b in batches[:15]:
            kept.update(b)
        restored = ABTest.from_state(json.loads(json.dumps(kept.to_state(), allow_nan=False)))
        assert restored.report() == kept.report()
        for b in batches[15:]:
            kept.update(b)
            restored.update(b)
        assert restored.report() == kept.report()
        assert restored.states["v4"].looks == restored.looks == 30
        assert math.isfinite(restored.states["v4"].ci_low)  # the interval went through JSON
    state = kept.to_state()
    for broken in [
        {**state, "summaries": {"v9": ["binary", 1, 2]}},
        {**state, "summaries": {"v3": ["counts", 1, 2]}},
        {**state, "sequential": {"v4": [1.0]}},
        {k: v for k, v in state.items() if k != "alpha"},
        {**state, "summaries": {"v3": ["binary", 5, 2]}},
    ]:
        with pytest.raises(InvalidInputError):
            ABTest.from_state(broken)
