"""The queries behind the REST API, in process on a real store file."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.store import api_queries as aq
from mlops_jupyter.store import runs as rstore
from mlops_jupyter.tracking.api import current_store


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=1, max_size=3000),
    max_points=st.integers(4, 500),
)
def test_decimate_bounds_and_keeps_extremes(values, max_points):
    vals = np.array(values, dtype=float)
    steps = np.arange(len(vals))
    idx, dec = aq.decimate(steps, vals, max_points)
    assert len(idx) <= max_points and np.all(np.diff(idx) > 0)
    assert dec == (len(vals) > max_points)
    assert idx[0] == 0 and idx[-1] == len(vals) - 1
    finite = vals[~np.isnan(vals)]
    if len(finite):
        kept = vals[idx]
        assert np.nanmax(kept) == finite.max() and np.nanmin(kept) == finite.min()


def test_series_follows_a_live_run():
    run = mj.start_run("live", params={"lr": 0.1})
    for s in range(3000):
        mj.log(step=s, loss=float(s))
    mj.flush()
    st = current_store()
    a = aq.series(st, run._rid, "loss", 100)
    assert a["n"] == 3000 and len(a["step"]) <= 100 and a["value"][-1] == 2999.0
    assert aq.series(st, run._rid, "loss", 100) == a  # answered again from the cache
    for s in range(3000, 3500):
        mj.log(step=s, loss=-float(s))
    mj.flush()
    b = aq.series(st, run._rid, "loss", 100)
    assert b["n"] == 3500 and min(b["value"]) == -3499.0 and b["step"][-1] == 3499
    mj.end_run()


def test_series_out_of_order_steps_are_sorted():
    with mj.start_run("ooo") as run:
        for s in (5, 1, 3, 2, 4):
            mj.log(step=s, loss=float(s))
    st = current_store()
    s = aq.series(st, run._rid, "loss", 100)
    assert s["step"] == [1, 2, 3, 4, 5] and s["value"] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_list_runs_validation_and_missing_areas_are_empty():
    with mj.start_run("one", params={"opt": "adam", "ok": True}) as run:
        mj.log(loss=0.5)
    st = current_store()
    with pytest.raises(InvalidInputError, match="sort"):
        aq.list_runs(st, sort="nope")
    with pytest.raises(InvalidInputError, match="filter"):
        aq.list_runs(st, conditions=["nonsense"])
    assert aq.list_runs(st, conditions=["params.ok=true"])["total"] == 1
    assert aq.list_runs(st, conditions=["params.opt!=adam"])["total"] == 0
    assert aq.list_runs(st, conditions=["tags.none=x"])["total"] == 0
    d = aq.run_detail(st, run._rid)
    assert isinstance(d["cells"], list) and isinstance(d["data_versions"], list)
    assert isinstance(aq.drift(st), list)
    # an area whose query fails answers [] instead of breaking the route
    assert aq._optional("mlops_jupyter.store.api_queries", "parse_condition", "bad") == []
    assert aq._optional("mlops_jupyter.no_such_module", "f") == []


def test_crashed_runs_are_reconciled_before_listing():
    st = current_store()
    rid, uid, _ = rstore.create_run(st, "ghost", "default")
    with st.write() as c:  # a process that no longer exists owns it
        c.execute("UPDATE runs SET pid = 999999999, pid_start = 1 WHERE id = ?", (rid,))
    aq._last_reconcile.clear()
    page = aq.list_runs(st)
    assert [r["status"] for r in page["runs"] if r["id"] == uid] == ["crashed"]


_LIKE_NAMES = ["p%q", "p_q", "pq", "p\\q", "%", "_", "x%%y", "q_p%", "plain"]


@pytest.fixture(scope="module")
def like_store(tmp_path_factory):
    from mlops_jupyter.store.sqlite import SqliteStore as Store

    store = Store(tmp_path_factory.mktemp("like") / "store.db")
    for name in _LIKE_NAMES:
        rid, _, _ = rstore.create_run(store, name, "zz", params={"v": name})
        rstore.finish_run(store, rid, "finished")
    yield store
    store.close()


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet="pq%_\\xy", min_size=1, max_size=4))
def test_search_and_contains_match_text_literally(like_store, text):
    page = aq.list_runs(like_store, search=text, limit=100)
    # names only: no uid (hex) or experiment name ("zz") holds these characters
    assert sorted(r["name"] for r in page["runs"]) == sorted(n for n in _LIKE_NAMES if text in n)
    got = aq.list_runs(like_store, conditions=[f"params.v~{text}"], limit=100)
    # params are stored as JSON: a backslash is stored doubled
    want = sorted(n for n in _LIKE_NAMES if text in n.replace("\\", "\\\\"))
    assert sorted(r["name"] for r in got["runs"]) == want


def test_condition_limits_are_clear_errors():
    st_ = current_store()
    with pytest.raises(InvalidInputError, match="offset"):
        aq.list_runs(st_, offset=10**24)
    with pytest.raises(InvalidInputError, match="at most 50 conditions"):
        aq.list_runs(st_, conditions=["params.lr>0"] * 1000)
    with pytest.raises(InvalidInputError, match="contains"):
        aq.list_runs(st_, conditions=["metrics.loss~0.5"])
    assert aq.list_runs(st_, conditions=["params.lr>0"] * 50)["total"] == 0


def test_server_config_names_the_store(tmp_path, monkeypatch):
    """`c.MlopsJupyter.store` (and `.artifacts`) in jupyter_server_config choose the store
    the sidebar reads, before MLOPS_JUPYTER_STORE."""
    import os

    from jupyter_server.serverapp import ServerApp
    from traitlets.config import Config

    from mlops_jupyter.server.handlers import _store_path

    monkeypatch.delenv("MLOPS_JUPYTER_ARTIFACTS", raising=False)
    cfg = Config()
    cfg.MlopsJupyter.store = "postgresql://team@db.example:5432/mlops"
    cfg.MlopsJupyter.artifacts = str(tmp_path / "shared")
    app = ServerApp(config=cfg, root_dir=str(tmp_path))
    assert _store_path(app) == "postgresql://team@db.example:5432/mlops"
    assert os.environ["MLOPS_JUPYTER_ARTIFACTS"] == str(tmp_path / "shared")
    assert _store_path(ServerApp(root_dir=str(tmp_path))) == os.environ["MLOPS_JUPYTER_STORE"]
