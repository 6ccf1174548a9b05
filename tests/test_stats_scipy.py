"""Drift p-values are scipy's: KS as ks_2samp(method="auto") gives it (exact distribution up to
10,000 rows per side, asymptotic above), chi-squared as chi2_contingency; without scipy the core
still imports and drift names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from data_helpers import ROOT, frame
from hypothesis import given, settings
from hypothesis import strategies as st

import mlops_jupyter as mj
from mlops_jupyter.data import stats

sps = pytest.importorskip("scipy.stats")

# (reference rows, current rows) from 20 to 200k, on both sides of scipy's 10,000 switch
SIZES = [
    (20, 20),
    (20, 35),
    (60, 80),
    (137, 500),
    (999, 1000),
    (3001, 5000),
    (10_000, 10_000),
    (10_000, 10_001),
    (30_000, 20_000),
    (200_000, 200_000),
]


@pytest.mark.parametrize(("n", "m"), SIZES)
def test_ks_pvalue_equals_scipy_ks_2samp(n, m):
    r = np.random.default_rng(n * 7 + m)
    for shift in (0.0, 0.05, 0.5):
        a, b = r.normal(size=n), r.normal(shift, 1.0, size=m)
        want = sps.ks_2samp(a, b, method="auto")
        d = stats.ks_exact(a, b)
        assert d == pytest.approx(want.statistic, abs=1e-12)
        assert stats.ks_pvalue(d, n, m) == pytest.approx(want.pvalue, rel=1e-9, abs=1e-9)


def test_small_borderline_sample_gets_the_exact_p_value():
    # 60 vs 80 rows with a 0.5 sd shift: the asymptotic value (0.01207) differed from scipy's
    r = np.random.default_rng(0)
    a, b = r.normal(size=60), r.normal(0.5, 1.0, size=80)
    want = sps.ks_2samp(a, b, method="auto").pvalue
    asymp = sps.ks_2samp(a, b, method="asymp").pvalue
    assert want == pytest.approx(0.012711, abs=1e-6)  # the value the issue quotes
    assert abs(want - asymp) > 5e-5  # the case matters: exact and asymptotic differ here
    rep = mj.drift(pl.DataFrame({"x": a}), pl.DataFrame({"x": b}), num_method="ks", store=False)
    assert rep.column("x")["statistic"] == pytest.approx(want, rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    a=st.lists(st.integers(-5, 5), min_size=1, max_size=60),
    b=st.lists(st.integers(-5, 5), min_size=1, max_size=60),
)
def test_ks_pvalue_with_ties_equals_scipy(a, b):
    x, y = np.array(a, dtype=float), np.array(b, dtype=float)
    want = sps.ks_2samp(x, y, method="auto")
    d = stats.ks_exact(x, y)
    assert d == pytest.approx(want.statistic, abs=1e-12)
    assert stats.ks_pvalue(d, len(x), len(y)) == pytest.approx(want.pvalue, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(d=st.floats(0.0, 1.0), n=st.integers(1, 300), m=st.integers(1, 300))
def test_ks_pvalue_of_any_sketch_statistic_is_a_probability(d, n, m):
    # a D read off quantile sketches need not be one two real samples can have
    p = stats.ks_pvalue(d, n, m)
    assert 0.0 <= p <= 1.0


@pytest.mark.parametrize("n", [20, 200, 2_000, 20_000, 200_000])
def test_chi2_equals_scipy_chi2_contingency(n):
    r = np.random.default_rng(n)
    for p_cur in ([0.4, 0.3, 0.2, 0.1, 0.0], [0.3, 0.3, 0.2, 0.15, 0.05], [0.5, 0.5, 0, 0, 0]):
        ref = np.bincount(r.choice(5, n, p=[0.4, 0.3, 0.2, 0.1, 0.0]), minlength=5)
        cur = np.bincount(r.choice(5, n * 3 // 2, p=p_cur), minlength=5)
        chi, p, dof = stats.chi2_two_sample(ref, cur)
        keep = (ref + cur) > 0  # empty categories carry no information
        want = sps.chi2_contingency(np.vstack([ref[keep], cur[keep]]), correction=False)
        assert dof == want.dof
        assert chi == pytest.approx(want.statistic, rel=1e-9)
        assert p == pytest.approx(want.pvalue, rel=1e-9, abs=1e-9)


def test_raw_drift_report_p_values_equal_scipy():
    ref, cur = frame(800, 3), frame(900, 4, shift=0.15, p=[0.35, 0.3, 0.2, 0.15])
    rep = mj.drift(ref.drop("id"), cur.drop("id"), store=False)
    for col in ("x0", "x1", "x2"):
        c = rep.column(col)
        assert c["method"] == "ks"
        want = sps.ks_2samp(ref[col].to_numpy(), cur[col].to_numpy(), method="auto").pvalue
        assert c["statistic"] == pytest.approx(want, rel=1e-9, abs=1e-12)
    ra = ref["c0"].value_counts().sort("c0")["count"].to_numpy()
    ca = cur["c0"].value_counts().sort("c0")["count"].to_numpy()
    want = sps.chi2_contingency(np.vstack([ra, ca]), correction=False).pvalue
    assert rep.column("c0")["statistic"] == pytest.approx(want, rel=1e-9)


def test_ks_p_value_only_where_ks_gives_the_verdict():
    # auto picks Wasserstein above 1,000 reference rows: no KS p-value is computed there (it
    # costs scipy 0.1-0.2 s per column at 200k rows) and none is shown as if it were
    ref, cur = frame(20_000, 5).drop("id"), frame(20_000, 6, shift=0.04).drop("id")
    auto = mj.drift(ref, cur, store=False)
    ks = mj.drift(ref, cur, num_method="ks", store=False)
    for col in ("x0", "x1", "x2"):
        a, k = auto.column(col), ks.column(col)
        assert a["method"] == "wasserstein" and a["stats"]["ks"] is None
        assert a["stats"]["ks_d"] == k["stats"]["ks_d"]  # D is always there
        want = sps.ks_2samp(ref[col].to_numpy(), cur[col].to_numpy(), method="auto").pvalue
        assert k["statistic"] == k["stats"]["ks"] == pytest.approx(want, rel=1e-9, abs=1e-12)
    html = auto._repr_html_()
    assert "KS p <span" in html and "not computed" in html and "KS p –" not in html
    assert "not computed" not in ks._repr_html_()
    assert auto.to_dict()["columns"][0]["stats"]["ks"] is None


def test_without_scipy_core_imports_and_drift_names_the_extra(tmp_path):
    code = f"""
import sys
sys.modules["scipy"] = None  # as if scipy were not installed
import numpy as np
import mlops_jupyter as mj
mj.set_store({str(tmp_path / "s.db")!r})
from mlops_jupyter.data.stats import MissingExtraError
try:
    mj.drift(np.array([[1.0], [2.0]]), np.array([[1.0], [3.0]]), store=False)
except MissingExtraError as e:
    print("ERR", e)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "mlops-jupyter[data]" in out.stdout
