"""The Serving view's routes (`GET /mlops/api/v1/serving[/{model}]`) of a real `jupyter lab`
and the store queries behind them, on a store whose prediction log and feedback were written
with the store's serving operations: the numbers equal a direct computation from the logged
rows, the verdict equals mj.ab_report's, and bad input is a JSON 4xx."""

from __future__ import annotations

import math
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
from browser_helpers import running_lab
from serving_view_helpers import LAYOUT, MODEL, prepare

import mlops_jupyter as mj
from mlops_jupyter.server.serving import serving_detail
from mlops_jupyter.store import open_store
from mlops_jupyter.store.serving_stats import auto_window, model_stats, served_models


@pytest.fixture(scope="module")
def served(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("serving-view")
    mp = pytest.MonkeyPatch()
    if os.environ.get("MLOPS_TEST_BACKEND") == "postgresql":
        store = request.getfixturevalue("pg_server").new_database("servingview")
        mp.setenv("MLOPS_JUPYTER_ARTIFACTS", str(tmp / "artifacts"))
    else:
        store = tmp / "store.db"
    mp.setenv("MLOPS_JUPYTER_STORE", str(store))
    try:
        yield {"store": store, "tmp": tmp, **prepare(store)}
    finally:
        mj.set_store(None)
        mp.undo()


def _expected(rows: list[tuple], lat_range: tuple[float, float]) -> dict[str, dict]:
    """Per variant of MODEL, straight from the logged rows; latencies of the requests in
    `lat_range` only (the windows shown, which the percentiles cover)."""
    out: dict[str, dict] = {}
    for _rid, model, version, variant, ts, lat, status, *_ in rows:
        if model != MODEL:
            continue
        v = out.setdefault(variant, {"n": 0, "err": 0, "client": 0, "lat": [], "ver": set()})
        v["n"] += 1
        v["err"] += status >= 500
        v["client"] += 400 <= status < 500
        v["ver"].add(version)
        if status == 200 and lat_range[0] <= ts < lat_range[1]:
            v["lat"].append(lat)
    return out


def _check_stats(d: dict, rows: list[tuple]) -> None:
    # the percentiles cover the windows shown: from the first window's start to the end
    # of the last one
    r = d["percentile_range"]
    w = d["windows"]
    assert r["since"] == w["start"][0] and r["until"] == w["start"][-1] + w["window_s"]
    want = _expected(rows, (r["since"], r["until"]))
    got = {v["variant"]: v for v in d["variants"]}
    assert set(got) == {"v1", "v2", "shadow:v2"} == set(want)
    served_n = want["v1"]["n"] + want["v2"]["n"]
    for name, w in want.items():
        g = got[name]
        assert g["requests"] == w["n"] and g["errors"] == w["err"]
        assert g["client_errors"] == w["client"] and g["versions"] == sorted(w["ver"])
        assert g["error_rate"] == pytest.approx(w["err"] / w["n"])
        for p in (50, 95, 99):
            assert g[f"p{p}_ms"] == pytest.approx(float(np.percentile(w["lat"], p)))
        if name.startswith("shadow:"):
            assert g["shadow"] is True and g["share"] is None
        else:
            assert g["shadow"] is False and g["share"] == pytest.approx(w["n"] / served_n)
    assert d["requests"] == sum(w["n"] for w in want.values())


def test_stats_equal_a_direct_computation(served):
    store = open_store(served["store"])
    d = model_stats(store, MODEL, window=600, windows=8)
    _check_stats(d, served["rows"])
    # per window: requests, errors and p95 of each variant in its 600 s bucket
    w = d["windows"]
    assert w["window_s"] == 600 and len(w["start"]) == 8
    assert w["start"][-1] <= d["last_ts"] < w["start"][-1] + 600
    assert all(s % 600 == 0 for s in w["start"])
    series = {s["variant"]: s for s in w["series"]}
    for k, start in enumerate(w["start"]):
        inside = [r for r in served["rows"] if r[1] == MODEL and start <= r[4] < start + 600]
        for name, s in series.items():
            mine = [r for r in inside if r[3] == name]
            assert s["requests"][k] == len(mine)
            assert s["errors"][k] == sum(r[6] >= 500 for r in mine)
            lat = [r[5] for r in mine if r[6] == 200]
            if lat:
                assert s["p95_ms"][k] == pytest.approx(float(np.percentile(lat, 95)))
                assert s["error_rate"][k] == pytest.approx(s["errors"][k] / len(mine))
            else:
                assert s["p95_ms"][k] is None
    # a range that holds nothing, and bad sizes
    assert model_stats(store, MODEL, until=1.0) is None
    with pytest.raises(mj.InvalidInputError, match="windows"):
        model_stats(store, MODEL, windows=0)
    with pytest.raises(mj.InvalidInputError, match="window"):
        model_stats(store, MODEL, window=-5)
    assert auto_window(3600, 48) == 300 and auto_window(10, 48) == 1


def test_served_models_and_verdict_equal_ab_report(served):
    store = open_store(served["store"])
    models = {m["model"]: m for m in served_models(store)}
    assert set(models) == {MODEL, "other"}
    mine = [r for r in served["rows"] if r[1] == MODEL]
    assert models[MODEL]["requests"] == len(mine)
    assert models[MODEL]["first_ts"] == pytest.approx(min(r[4] for r in mine))
    assert models[MODEL]["last_ts"] == pytest.approx(max(r[4] for r in mine))
    d = serving_detail(store, MODEL)
    _check_stats(d, served["rows"])
    mj.set_store(served["store"])
    try:
        want = mj.ab_report(MODEL).to_dict()
    finally:
        mj.set_store(None)
    got = d["verdict"]
    assert got["control"] == want["control"] == "v1" and got["metric"] == "binary"
    assert got["winner"] == "v2" and d["verdict_note"] is None
    (row,), (want_row,) = got["variants"], want["variants"]
    for k, v in want_row.items():
        if isinstance(v, float) and math.isfinite(v):
            assert row[k] == pytest.approx(v), k
        else:
            assert row[k] == v, k
    assert row["action"] == "promote v2"
    # the rollout history, and the notes of parts that have nothing to show
    assert [r["reason"] for r in d["rollouts"]] == [LAYOUT]
    assert d["rollouts"][0]["user"] == "tester"
    # drift per window, newest first: the second window drifted in column x
    assert [(w["drifted"], w["columns"]) for w in d["drift"]] == [(True, ["x"]), (False, [])]
    assert d["drift"][0]["variant"] == "v2" and d["drift"][0]["share"] == pytest.approx(0.5)
    assert d["canary"] is not None or d["canary_note"]
    # the control can be named; one without feedback gives a note, not an error
    other = serving_detail(store, MODEL, control="v2")
    assert other["verdict"]["control"] == "v2"
    assert other["verdict"]["variants"][0]["action"] == "roll back v1"
    none = serving_detail(store, MODEL, control="shadow:v2")
    assert none["verdict"] is None and "no feedback" in none["verdict_note"]
    assert serving_detail(store, "other")["verdict_note"].startswith("no feedback yet")


def test_route_answers_json_and_refuses_bad_input(served):
    with running_lab(served["tmp"] / "root", served["store"]) as server:
        status, body = server.api("mlops/api/v1/serving")
        assert status == 200, body
        assert [m["model"] for m in body["models"]][0] == MODEL
        status, body = server.api(f"mlops/api/v1/serving/{MODEL}?window=10m&windows=6")
        assert status == 200, body
        _check_stats(body, served["rows"])
        assert body["windows"]["window_s"] == 600 and len(body["windows"]["start"]) == 6
        assert body["verdict"]["winner"] == "v2"
        assert body["verdict"]["variants"][0]["action"] == "promote v2"
        assert body["rollouts"][0]["reason"] == LAYOUT
        for path, code, words in [
            ("serving/nosuch", 404, "no logged predictions of model 'nosuch'"),
            (f"serving/{MODEL}?window=soon", 400, "interval"),
            (f"serving/{MODEL}?window=-1", 400, "window"),
            (f"serving/{MODEL}?windows=0", 400, "windows"),
            (f"serving/{MODEL}?since=yesterday", 400, "since"),
        ]:
            status, body = server.api(f"mlops/api/v1/{path}")
            assert status == code and body["status"] == code, (path, body)
            assert words in body["error"], (path, body)
        # Jupyter's authentication applies
        try:
            with urllib.request.urlopen(server.url + "mlops/api/v1/serving", timeout=10) as r:
                code = r.status
        except urllib.error.HTTPError as e:
            code = e.code
        assert code == 403


def test_stored_rollout_state_is_shown():
    rollouts = pytest.importorskip("mlops_jupyter.store.serving_rollouts")
    from mlops_jupyter.store import serving as sstore
    from mlops_jupyter.tracking.api import current_store

    mj.register_model("cm", {"w": 1})
    store = current_store()
    sstore.log_predictions(store, [("r1", "cm", 1, "v1", 1e9, 2.0, 200, None, 1, 1, "[0]", "w")])
    d = serving_detail(store, "cm")
    assert d["canary"] is None and "no stored rollout" in d["canary_note"]
    layout = {"split": {"v1": 100}}
    assert rollouts.set_layout(store, "cm", layout, "stable", "split v1=100", "tester") == 1
    d = serving_detail(store, "cm")
    assert d["canary"]["state"] == "stable" and d["canary"]["layout"] == layout
    assert d["canary"]["generation"] == 1 and d["canary_note"] is None
    assert [r["reason"] for r in d["rollouts"]] == ["split v1=100"]
