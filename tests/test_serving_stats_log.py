"""The Serving view's figures on a big prediction log (200k rows, written through the
store's own bulk logging path): per-variant totals, per-window counts, latency percentiles
and the A/B feedback counts equal a plain numpy computation over the same rows, on the
backend under test (SQLite, or PostgreSQL with MLOPS_TEST_BACKEND=postgresql)."""

from __future__ import annotations

import numpy as np
import pytest

import mlops_jupyter as mj
from mlops_jupyter.server.serving import serving_detail
from mlops_jupyter.store import open_store
from mlops_jupyter.store import serving as sstore
from mlops_jupyter.store.serving_stats import (
    answered_versions,
    feedback_counts,
    model_stats,
    served_models,
)

N = 200_000
SPAN = 6 * 3600.0
T0 = 1_700_000_000.0 + 0.25  # not on a window boundary
# (variant, version) pairs and their shares; None: a row without a variant ("v3"), and
# variant "v1" at version 4 besides version 1: both count under one name
PAIRS = [("v1", 1), ("v1", 4), ("v2", 2), (None, 3), ("shadow:v2", 2)]
SHARES = [0.55, 0.05, 0.2, 0.1, 0.1]


def _name(variant: str | None, version: int) -> str:
    return variant or f"v{version}"


@pytest.fixture
def log(store_path):
    store = open_store(store_path)
    rng = np.random.default_rng(7)
    pair = rng.choice(len(PAIRS), size=N, p=SHARES)
    ts = T0 + np.sort(rng.uniform(0, SPAN, N))
    status = rng.choice([200, 500, 503, 422, 429], size=N, p=[0.93, 0.02, 0.01, 0.03, 0.01])
    lat = rng.gamma(2.0, 5.0, N) + pair  # each pair a little slower
    lat[rng.random(N) < 0.001] = np.nan  # a request whose time was not measured
    rids = [f"r{i}" for i in range(N)]
    rows = [
        (rids[i], "clf", PAIRS[p][1], PAIRS[p][0], float(ts[i]),
         None if np.isnan(lat[i]) else float(lat[i]), int(status[i]), None, 1, 1, "[0]", "w")
        for i, p in enumerate(pair.tolist())
    ]  # fmt: skip
    rows.append(("o1", "other", 1, "v1", T0, 1.0, 200, None, 1, 1, "[0]", "w"))
    for k in range(0, len(rows), 50_000):
        sstore.log_predictions(store, rows[k : k + 50_000])
    # binary feedback on some answered, served (not shadow) requests; a second value for a
    # request replaces the first
    names = np.array([_name(*PAIRS[p]) for p in pair])
    fed = np.flatnonzero((status == 200) & (names != "shadow:v2"))
    fed = rng.choice(fed, size=600, replace=False)
    y = (rng.random(len(fed)) < np.where(names[fed] == "v2", 0.5, 0.2)).astype(int)
    for i, v in zip(fed.tolist(), y.tolist()):
        sstore.add_feedback(store, rids[i], 1 - v)
    for i, v in zip(fed[:100].tolist(), y[:100].tolist()):
        sstore.add_feedback(store, rids[i], 1 - v)
        sstore.add_feedback(store, rids[i], v)
    for i, v in zip(fed[100:].tolist(), y[100:].tolist()):
        sstore.add_feedback(store, rids[i], v)
    return {"store": store, "names": names, "pair": pair, "ts": ts, "status": status,
            "lat": lat, "fed": fed, "y": y}  # fmt: skip


def _check(d: dict, log: dict, since: float | None = None, until: float | None = None) -> None:
    """model_stats' answer `d` against numpy over the logged rows in [since, until)."""
    ts, status, lat, names = log["ts"], log["status"], log["lat"], log["names"]
    inside = np.ones(N, bool)
    if since is not None:
        inside &= ts >= since
    if until is not None:
        inside &= ts < until
    assert d["requests"] == int(inside.sum())
    assert d["first_ts"] == ts[inside].min() and d["last_ts"] == ts[inside].max()
    got = {v["variant"]: v for v in d["variants"]}
    assert sorted(got) == sorted(set(names[inside].tolist()))
    served = int((inside & (names != "shadow:v2")).sum())
    r = d["percentile_range"]
    w = d["windows"]
    assert r["since"] == max(w["start"][0], since or -np.inf)
    assert r["until"] == min(w["start"][-1] + w["window_s"], until or np.inf)
    shown = inside & (ts >= r["since"]) & (ts < r["until"])
    for name, g in got.items():
        mine = inside & (names == name)
        n = int(mine.sum())
        err = int((mine & (status >= 500)).sum())
        assert g["requests"] == n and g["errors"] == err
        assert g["client_errors"] == int((mine & (status >= 400) & (status < 500)).sum())
        assert g["error_rate"] == err / n
        assert g["last_ts"] == ts[mine].max()
        pairs = {PAIRS[p] for p in np.unique(log["pair"][mine]).tolist()}
        assert g["versions"] == sorted(v for _, v in pairs)
        assert g["share"] == (None if name.startswith("shadow:") else n / served)
        ok = shown & (names == name) & (status == 200) & ~np.isnan(lat)
        for p in (50, 95, 99):
            assert g[f"p{p}_ms"] == float(np.percentile(lat[ok], p)), (name, p)
    # per window: requests, errors and percentiles of each variant in its range
    series = {s["variant"]: s for s in w["series"]}
    assert set(series) == set(got)
    for k, start in enumerate(w["start"]):
        b = inside & (ts >= start) & (ts < start + w["window_s"])
        for name, s in series.items():
            mine = b & (names == name)
            assert s["requests"][k] == int(mine.sum())
            assert s["errors"][k] == int((mine & (status >= 500)).sum())
            ok = mine & (status == 200) & ~np.isnan(lat)
            for p in (50, 99):
                want = float(np.percentile(lat[ok], p)) if ok.any() else None
                assert s[f"p{p}_ms"][k] == want, (name, k, p)


def test_figures_equal_numpy_over_the_same_rows(log):
    store = log["store"]
    # the sidebar's call: a window picked from the data, every window shown (6 h: 15 min)
    d = model_stats(store, "clf")
    assert d["windows"]["window_s"] == 900
    _check(d, log)
    # 8 windows of 30 min: the percentiles cover the last 4 h only, the totals everything
    d = model_stats(store, "clf", window=1800, windows=8)
    assert d["percentile_range"]["since"] > log["ts"].min()
    _check(d, log)
    # an asked range that starts before the windows and ends inside the log
    since, until = T0 + 600.5, T0 + 5 * 3600
    d = model_stats(store, "clf", window=600, windows=12, since=since, until=until)
    _check(d, log, since, until)
    assert d["percentile_range"]["until"] == until
    # a range that starts inside the windows: the percentiles start there too
    since = T0 + 4.5 * 3600 + 0.5
    d = model_stats(store, "clf", window=1800, windows=8, since=since)
    assert d["percentile_range"]["since"] == since > d["windows"]["start"][0]
    _check(d, log, since)
    # the served models' list counts every row
    models = {m["model"]: m for m in served_models(store)}
    assert models["clf"]["requests"] == N and models["other"]["requests"] == 1


def test_feedback_counts_and_verdict_equal_numpy(log):
    store = log["store"]
    names, fed, y = log["names"], log["fed"], log["y"]
    got = feedback_counts(store, "clf")
    for name in set(names[fed].tolist()):
        mine = names[fed] == name
        assert got[name] == {"n": int(mine.sum()), "finite": int(mine.sum()),
                             "binary": int(mine.sum()), "ones": int(y[mine].sum())}  # fmt: skip
    assert set(got) == set(names[fed].tolist())
    answered = {n: set() for n in set(names[log["status"] == 200].tolist()) - {"shadow:v2"}}
    for p in np.unique(log["pair"][log["status"] == 200]).tolist():
        if PAIRS[p][0] != "shadow:v2":
            answered[_name(*PAIRS[p])].add(PAIRS[p][1])
    assert answered_versions(store, "clf") == answered
    # the route's verdict and mj.ab_report: the same counts, the same statistics
    rep = mj.ab_report("clf", control="v1")
    for v in rep.variants:
        mine = names[fed] == v.variant
        assert (v.n, v.estimate) == (int(mine.sum()), y[mine].sum() / mine.sum())
    verdict = serving_detail(store, "clf", control="v1")["verdict"]
    assert verdict["variants"] == [v.to_dict() for v in rep.variants]
