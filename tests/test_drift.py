"""Drift: synthetic shifts are detected, identical distributions are not flagged, statistics
agree with scipy, stored versions compare from profiles alone, reports are aggregates only."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from data_helpers import frame

import mlops_jupyter as mj
from mlops_jupyter.data import stats
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.store import data as dstore
from mlops_jupyter.tracking.api import current_store

TESTS = {"num_method": "ks", "cat_method": "chisquare"}


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_identical_distributions_are_not_flagged(seed):
    ref, cur = frame(20_000, seed), frame(20_000, seed + 100)
    for kw in (TESTS, {}, {"num_method": "psi", "cat_method": "psi"}):
        rep = mj.drift(ref.drop("id"), cur.drop("id"), store=False, **kw)
        assert rep.n_drifted == 0, (kw, rep.to_frame())
        assert not rep.dataset_drift


def test_synthetic_shifts_are_detected():
    ref = frame(20_000, 1)
    cur = frame(20_000, 2, shift=0.3, scale=1.5, p=[0.25, 0.25, 0.25, 0.25])
    rep = mj.drift(ref.drop("id"), cur.drop("id"), store=False, **TESTS)
    # at alpha 0.05 an unchanged column may be flagged by chance; the shifted ones must be
    assert {"x0", "x1", "c0"} <= set(rep.drifted_columns)
    assert rep.drift_share >= 3 / 5 and rep.dataset_drift
    sps = pytest.importorskip("scipy.stats")
    for col in ("x0", "x1", "x2"):  # exact KS on the raw values
        want = sps.ks_2samp(ref[col].to_numpy(), cur[col].to_numpy(), method="asymp")
        assert rep.column(col)["stats"]["ks_d"] == pytest.approx(want.statistic, abs=1e-12)
    # distances see the same shifts with their default thresholds
    rep2 = mj.drift(ref.drop("id"), cur.drop("id"), store=False)
    assert rep2.column("x0")["method"] == "wasserstein"
    assert rep2.column("c0")["method"] == "jensenshannon"
    assert {"x0", "x1", "c0"} == set(rep2.drifted_columns)
    x0 = rep2.column("x0")
    assert x0["stats"]["wasserstein"] == pytest.approx(0.3, abs=0.03)
    assert x0["stats"]["psi"] > 0.05 and x0["stats"]["ks_d"] > 0.05
    # the KS p-value is left out where Wasserstein decides (slow at large n, unused)
    assert x0["stats"]["ks"] is None
    # a small sample: hypothesis tests are picked automatically
    small = mj.drift(ref.head(500), cur.head(500), store=False)
    assert small.column("x0")["method"] == "ks" and small.column("c0")["method"] == "chisquare"


def test_statistics_agree_with_scipy():
    sps = pytest.importorskip("scipy.stats")
    from scipy.spatial.distance import jensenshannon

    r = np.random.default_rng(5)
    a, b = r.normal(size=30_000), r.normal(0.1, 1, size=25_000)
    w = stats.wasserstein_from_sketches(
        np.quantile(a, np.linspace(0, 1, 201)), np.quantile(b, np.linspace(0, 1, 201))
    )
    assert w == pytest.approx(sps.wasserstein_distance(a, b), rel=0.05)
    for a, b in (
        (r.normal(size=30_000), r.normal(0.02, 1, size=25_000)),
        (r.integers(0, 7, 40_000).astype(float), r.integers(0, 8, 30_000).astype(float)),
        (r.lognormal(size=900), r.lognormal(0.2, size=700)),
        (np.r_[r.normal(size=5000), 1e12], r.normal(size=4000)),
    ):
        d = stats.ks_exact(a, b)
        ref = sps.ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(ref.statistic, abs=1e-12)
        want = sps.ks_2samp(a, b, method="auto").pvalue
        assert stats.ks_pvalue(d, len(a), len(b)) == pytest.approx(want, rel=1e-9, abs=1e-12)
    ra, rb = np.array([120, 80, 40, 10]), np.array([100, 95, 30, 25])
    chi, p, dof = stats.chi2_two_sample(ra, rb)
    want = sps.chi2_contingency(np.vstack([ra, rb]), correction=False)
    assert chi == pytest.approx(want.statistic) and p == pytest.approx(want.pvalue)
    assert dof == want.dof
    pa, pb = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    assert stats.js_distance(pa, pb) == pytest.approx(jensenshannon(pa, pb))


def test_stored_versions_compare_from_profiles_alone():
    ref = frame(30_000, 21)
    same = frame(30_000, 22)
    shifted = frame(30_000, 23, shift=0.4, p=[0.1, 0.2, 0.3, 0.4])
    v_ref = mj.version(ref.drop("id"), name="reference")
    v_same = mj.version(same.drop("id"), name="same")
    v_shift = mj.version(shifted.drop("id"), name="shifted")
    del ref, same, shifted  # no raw data from here on
    ok = mj.drift("reference", "same")
    assert ok.mode == "profile" and ok.n_drifted == 0
    bad = mj.drift(v_ref, v_shift.id)
    assert set(bad.drifted_columns) == {"x0", "c0"}
    assert mj.drift(v_ref, v_shift, **TESTS).drifted_columns == ["x0", "c0"]
    stored = dstore.drift_reports(current_store())
    assert stored[0]["reference"]["id"] == v_ref.id and stored[0]["current"]["id"] == v_shift.id
    assert {c["column"] for c in stored[0]["columns"] if c["drifted"]} == {"x0", "c0"}
    assert stored[-1]["current"]["name"] == "same" and stored[-1]["n_drifted"] == 0
    x0 = next(c for c in stored[0]["columns"] if c["column"] == "x0")  # pinned KS: a p-value
    assert x0["method"] == "ks" and x0["stats"]["ks"] == x0["statistic"] < 0.05
    x0 = next(c for c in stored[1]["columns"] if c["column"] == "x0")  # auto: none stored
    assert x0["method"] == "wasserstein" and x0["stats"]["ks"] is None
    assert v_same.id != v_ref.id


def test_profile_mode_agrees_with_raw_mode():
    ref = frame(40_000, 31).drop("id")
    cur = frame(40_000, 32, shift=0.05).drop("id")
    raw = mj.drift(ref, cur, store=False)
    vr, vc = mj.version(ref), mj.version(cur)
    prof = mj.drift(vr, vc, store=False)
    for a, b in zip(raw.columns, prof.columns):
        assert a["column"] == b["column"] and a["drifted"] == b["drifted"]
        keys = ("wasserstein", "psi", "jensenshannon") if a["kind"] == "numeric" else ("chi2",)
        for k in keys:
            assert a["stats"][k] == pytest.approx(b["stats"][k], rel=1e-9, abs=1e-12)
        if a["kind"] == "numeric":  # KS: exact vs sketch resolution (1/200)
            assert abs(a["stats"]["ks_d"] - b["stats"]["ks_d"]) < 0.006


def test_report_size_does_not_grow_with_rows():
    sizes = []
    for n in (2_000, 200_000):
        ref = frame(n, 41).drop("id")
        cur = frame(n, 42, shift=0.2).drop("id")
        rep = mj.drift(ref, cur, store=False)
        html = rep._repr_html_()
        assert "<script" not in html and "x0" in html
        sizes.append((len(html), len(str(rep.to_dict()))))
    (h1, d1), (h2, d2) = sizes
    assert abs(h2 - h1) < 0.02 * h1 and abs(d2 - d1) < 0.05 * d1
    assert h2 < 40_000


def test_drift_is_stored_and_linked_to_the_run():
    ref, cur = frame(3000, 51).drop("id"), frame(3000, 52, shift=1.0).drop("id")
    with mj.start_run("monitor") as run:
        rep = mj.drift(ref, cur)
    assert rep.id and rep.dataset_drift is False  # 1 of 5 columns
    rows = dstore.drift_reports(current_store(), run._rid)
    assert len(rows) == 1 and rows[0]["id"] == rep.id and rows[0]["run_id"] == run.id
    assert rows[0]["reference"]["id"] == mj.version(ref).id
    events = [e for e in mj.get_run(run.id)["events"] if e["kind"] == "drift"]
    assert events and events[0]["data"]["report"] == rep.id
    again = mj.data.drift_reports(run)
    assert again[0].drifted_columns == ["x0"] and "x0" in again[0]._repr_html_()
    assert dstore.get_drift(current_store(), rep.id)["n_drifted"] == 1


def test_pandas_and_mixed_inputs():
    pytest.importorskip("pandas")
    ref = frame(4000, 61).drop("id")
    cur = frame(4000, 62, shift=0.5).drop("id")
    rep = mj.drift(ref.to_pandas(), cur, store=False, **TESTS)
    assert rep.mode == "raw" and "x0" in rep.drifted_columns
    v = mj.version(ref)
    mixed = mj.drift(v, cur.to_pandas(), store=False, **TESTS)
    assert mixed.mode == "profile" and "x0" in mixed.drifted_columns


def test_columns_nulls_and_mismatches():
    ref = frame(2000, 71).drop("id")
    cur = frame(2000, 72).drop("id").with_columns(pl.col("x2").cast(pl.String), extra=pl.lit(1))
    rep = mj.drift(ref, cur, store=False)
    assert "x2" in {s["column"] for s in rep.data["skipped"]}
    assert "extra" not in {c["column"] for c in rep.columns}
    only = mj.drift(ref, frame(2000, 73).drop("id"), columns=["x0", "c1"], store=False)
    assert [c["column"] for c in only.columns] == ["x0", "c1"]
    with_nulls = ref.with_columns(
        pl.when(pl.col("x0") > 0).then(None).otherwise(pl.col("x0")).alias("x0")
    )
    r2 = mj.drift(with_nulls, ref, store=False)
    assert r2.column("x0")["ref"]["nulls"] > 800
    as_cat = mj.drift(ref, ref, categorical=["c1", "x0"], store=False, columns=["x0"])
    assert as_cat.column("x0")["kind"] == "categorical"


def test_bad_arguments():
    ref = frame(100, 1)
    with pytest.raises(InvalidInputError):
        mj.drift(ref, ref, num_method="magic")
    with pytest.raises(InvalidInputError):
        mj.drift(ref, ref, thresholds={"nope": 1})
    with pytest.raises(InvalidInputError):
        mj.drift(ref, ref, columns=["missing"])
    with pytest.raises(mj.data.DataVersionNotFoundError):
        mj.drift("no-such-version", ref)
    with pytest.raises(InvalidInputError):
        mj.drift(ref, ref, drift_share=0)


def test_altair_chart():
    pytest.importorskip("altair")
    rep = mj.drift(frame(500, 1), frame(500, 2, shift=1), store=False)
    spec = rep.to_altair().to_dict()
    assert len(spec["data"]["values"]) == rep.data["n_columns"]
