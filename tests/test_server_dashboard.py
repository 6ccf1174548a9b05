"""The dashboard's queries (table with columns, groups, CSV rows, incremental series) on a
real store file, and the shared decimation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.store import api_queries as aq
from mlops_jupyter.store import api_table as at
from mlops_jupyter.store.series import decimate
from mlops_jupyter.tracking.api import current_store
from mlops_jupyter.widgets import render


@pytest.fixture
def sweep():
    ids = []
    for i in range(12):
        params = {"lr": 0.001 * (i + 1), "opt": "adam" if i % 3 else "sgd", "name": f"<b>{i}</b>"}
        with mj.start_run(f"t-{i:02d}", experiment="sweep", params=params) as r:
            mj.set_tags({"team": "a" if i < 6 else "b"})
            for s in range(5):
                mj.log(step=s, loss=1.0 / (s + 1) + i, acc=i / 12)
        ids.append(r.id)
    with mj.start_run("other", experiment="else", params={"lr": 9.0}):
        mj.log(loss=100.0)
    mj.flush()
    return ids


def test_columns_lists_keys_of_the_experiment(sweep):
    c = at.columns(current_store(), "sweep")
    assert c["params"] == ["lr", "name", "opt"]
    assert set(c["metrics"]) == {"loss", "acc"} and c["tags"][:1] == ["team"]
    assert c["has_user"] is False and c["has_host"] is False  # one local host


def test_table_columns_sort_filter_and_pages(sweep):
    s = current_store()
    t = at.table(
        s,
        columns=["params.lr", "metrics.loss", "tags.team", "params.name"],
        experiment="sweep",
        sort="params.lr",
        order="desc",
        limit=5,
    )
    assert t["total"] == 12 and len(t["rows"]) == 5
    f = t["fields"]
    assert f[: len(at.BASE_FIELDS)] == at.BASE_FIELDS
    assert f[len(at.BASE_FIELDS) :] == [
        "params.lr",
        "metrics.loss.last",
        "tags.team",
        "params.name",
    ]
    lr = [r[f.index("params.lr")] for r in t["rows"]]
    assert lr == sorted(lr, reverse=True) and lr[0] == pytest.approx(0.012)
    assert t["rows"][0][f.index("metrics.loss.last")] == pytest.approx(1 / 5 + 11)
    assert t["rows"][0][f.index("params.name")] == "<b>11</b>"  # data, not markup
    # sort by a metric, filter with the runs-list conditions, page on
    t2 = at.table(
        s,
        columns=["metrics.loss.min"],
        conditions=["params.opt=adam", "metrics.loss<5"],
        sort="metrics.loss.min",
        order="asc",
        limit=2,
        offset=1,
    )
    assert t2["total"] == 3  # i in 1, 2, 4
    assert [r[1] for r in t2["rows"]] == ["t-02", "t-04"]
    with pytest.raises(InvalidInputError, match="column"):
        at.table(s, columns=["weights.x"])
    with pytest.raises(InvalidInputError, match="limit"):
        at.table(s, limit=at.MAX_TABLE_LIMIT + 1)
    with pytest.raises(InvalidInputError, match="bad filter"):
        at.table(s, conditions=["params.lr>>1"])


def test_export_rows_match_the_table(sweep):
    s = current_store()
    cols = ["params.lr", "metrics.acc"]
    rows = list(
        at.export_rows(s, columns=cols, experiment="sweep", sort="name", order="asc", batch=5)
    )
    assert rows[0] == at.BASE_FIELDS + ["params.lr", "metrics.acc.last"]
    assert [r[1] for r in rows[1:]] == [f"t-{i:02d}" for i in range(12)]
    assert rows[-1][-1] == pytest.approx(11 / 12)


def test_groups_mean_and_std(sweep):
    g = at.groups(current_store(), "params.opt", ["metrics.loss"], experiment="sweep")
    by = {x["value"]: x for x in g}
    assert by["adam"]["n"] == 8 and by["sgd"]["n"] == 4
    sgd = [1 / 5 + i for i in range(12) if i % 3 == 0]
    m = by["sgd"]["metrics"]["metrics.loss.last"]
    assert m["mean"] == pytest.approx(np.mean(sgd)) and m["std"] == pytest.approx(
        np.std(sgd, ddof=1)
    )
    tg = at.groups(current_store(), "tags.team", ["metrics.acc.max"], experiment="sweep")
    assert {x["value"] for x in tg} == {"a", "b"}
    with pytest.raises(InvalidInputError, match="param or tag"):
        at.groups(current_store(), "metrics.loss", [])


def test_series_since_step_sends_only_new_points():
    run = mj.start_run("inc")
    for s in range(100):
        mj.log(step=s, loss=float(s))
    mj.flush()
    st_ = current_store()
    full = aq.series(st_, run._rid, "loss", 1000)
    assert full["last_step"] == 99 and len(full["step"]) == 100
    assert aq.series(st_, run._rid, "loss", 1000, since_step=99)["step"] == []
    for s in range(100, 130):
        mj.log(step=s, loss=-1.0)
    mj.flush()
    new = aq.series(st_, run._rid, "loss", 1000, since_step=99)
    assert new["step"] == list(range(100, 130)) and new["n"] == 130 and new["last_step"] == 129
    c = aq.compare(st_, [run._rid], ["loss"], 1000, since_step=125)
    assert c["curves"]["loss"][0]["step"] == [126, 127, 128, 129]
    mj.end_run()


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.floats(-1e6, 1e6), st.just(math.nan), st.just(math.inf)),
        min_size=1,
        max_size=3000,
    ),
    buckets=st.integers(1, 300),
)
def test_widget_and_server_decimate_alike(values, buckets):
    """One algorithm: the widget's points are the server's for the same budget, and both
    keep the extremes and (when the budget allows) a gap."""
    y = np.array(values, dtype=float)
    x = np.arange(len(y))
    wx, wy = render.decimate(x, y, buckets)
    idx, _ = decimate(x, y, 2 * buckets + 2)
    assert np.array_equal(wx, x[idx])
    assert len(wx) <= 2 * buckets + 2
    finite = y[np.isfinite(y)]
    if len(finite):
        assert np.nanmax(wy[np.isfinite(wy)]) == finite.max()
        assert np.nanmin(wy[np.isfinite(wy)]) == finite.min()
    if (~np.isfinite(y)).any() and buckets >= 2:
        assert (~np.isfinite(wy)).any()


def test_user_and_host_columns_on_a_shared_store(sweep):
    """A store with runs from several hosts and a `user` column (a team store) makes the
    dashboard show both; a local one-host store does not."""
    s = current_store()
    assert at.columns(s)["has_user"] is False  # one user on one host
    with s.write() as c:
        c.execute("UPDATE runs SET username = 'ana', host = 'gpu-1' WHERE name = 't-00'")
    cols = at.columns(s)
    assert cols["has_user"] is True and cols["has_host"] is True
    t = at.table(s, experiment="sweep", sort="host", order="asc", limit=50)
    f = t["fields"]
    row = next(r for r in t["rows"] if r[f.index("name")] == "t-00")
    assert row[f.index("user")] == "ana" and row[f.index("host")] == "gpu-1"
