"""The Features view's routes (`GET /mlops/api/v1/features[/{name}]`) of a real `jupyter lab`
and the functions behind them, on a store prepared with mj.register_features, a training set
built in a run, a registered model and an online materialization: freshness, drift and usage
equal what the Python API says; an unknown view is a JSON 404."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from browser_helpers import running_lab
from features_view_helpers import T0, N, prepare

import mlops_jupyter as mj
from mlops_jupyter.server.features import feature_view_detail, list_feature_views
from mlops_jupyter.store import open_store


@pytest.fixture(scope="module")
def feats(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("features-view")
    mp = pytest.MonkeyPatch()
    if os.environ.get("MLOPS_TEST_BACKEND") == "postgresql":
        store = request.getfixturevalue("pg_server").new_database("featuresview")
        mp.setenv("MLOPS_JUPYTER_ARTIFACTS", str(tmp / "artifacts"))
    else:
        store = tmp / "store.db"
    mp.setenv("MLOPS_JUPYTER_STORE", str(store))
    try:
        yield {"store": store, "tmp": tmp, **prepare(store)}
    finally:
        mj.set_store(None)
        mp.undo()


def _check_list(body: dict, feats: dict) -> None:
    views = {v["name"]: v for v in body["views"]}
    assert sorted(views) == ["fresh", "user_stats"]
    u, fr = views["user_stats"], views["fresh"]
    c = feats["infos"][2]
    assert (u["version"], u["versions"], u["entities"], u["timestamp"]) == (
        2,
        2,
        ["user_id"],
        "event_ts",
    )
    assert u["ttl_s"] == 86400 and u["features"] == ["clicks", "score"] and u["rows"] == N
    assert u["data_version"] == c.data_version and u["owner"] == c.owner
    newest = (T0 + dt.timedelta(hours=N - 1)).timestamp()
    assert u["newest"] == pytest.approx(newest)
    assert u["age_s"] == pytest.approx(body["now"] - newest) and u["stale"] is True
    assert u["online"]["version"] == 2 and u["online"]["rows"] == feats["online"].rows == 30
    assert fr["ttl_s"] is None and fr["stale"] is False and fr["online"] is None
    assert fr["features"] == ["level"] and fr["rows"] == 2 and fr["versions"] == 1
    assert 0 <= fr["age_s"] < 3600


def _check_detail(d: dict, feats: dict) -> None:
    a, b, c = feats["infos"]
    assert d["name"] == "user_stats" and d["version"] == 2
    assert [v["version"] for v in d["versions"]] == [2, 1]
    assert [m["data_version"] for m in d["versions"][1]["materializations"]] == [
        a.data_version,
        b.data_version,
    ]
    assert d["versions"][0]["current"] and not d["versions"][1]["current"]
    assert d["versions"][0]["online"][0]["rows"] == 30
    # newest pair first: v1 -> v2 moved score, v1's two materializations moved clicks
    pairs = [(p["from"]["data_version"], p["to"]["data_version"]) for p in d["drift"]]
    assert pairs == [(b.data_version, c.data_version), (a.data_version, b.data_version)]
    flags = [{k: col["drifted"] for k, col in p["columns"].items()} for p in d["drift"]]
    assert flags == [{"clicks": False, "score": True}, {"clicks": True, "score": False}]
    # the same numbers as mj.drift on the two data versions
    for p in d["drift"]:
        rep = mj.drift(p["from"]["data_version"], p["to"]["data_version"], store=False)
        want = {r["column"]: r for r in rep.to_dict()["columns"]}
        for k, col in p["columns"].items():
            assert col["method"] == want[k]["method"]
            assert col["statistic"] == pytest.approx(want[k]["statistic"])
        assert p["n_drifted"] == 1
    use = mj.features.feature_view_usage("user_stats")
    assert [(u["run"], u["run_name"], u["training_set"]) for u in d["usage"]] == list(
        use.select("run", "run_name", "training_set").iter_rows()
    )
    assert d["usage"][0]["run"] == feats["run"].id
    assert d["usage"][0]["training_set_name"] == "ts_train"
    assert [(m["name"], m["version"], m["run_id"]) for m in d["models"]] == [
        ("churn", feats["model_version"], feats["run"].id)
    ]


def test_functions_equal_the_python_api(feats):
    store = open_store(feats["store"])
    mj.set_store(feats["store"])
    try:
        _check_list(list_feature_views(store), feats)
        _check_detail(feature_view_detail(store, "user_stats"), feats)
        fresh = feature_view_detail(store, "fresh")
        assert fresh["drift"] == [] and fresh["usage"] == [] and fresh["models"] == []
    finally:
        mj.set_store(None)


def test_routes_answer_json_and_404(feats):
    with running_lab(feats["tmp"] / "root", feats["store"]) as server:
        status, body = server.api("mlops/api/v1/features")
        assert status == 200, body
        _check_list(body, feats)
        status, body = server.api("mlops/api/v1/features/user_stats")
        assert status == 200, body
        mj.set_store(feats["store"])
        try:
            _check_detail(body, feats)
        finally:
            mj.set_store(None)
        status, body = server.api("mlops/api/v1/features/nosuch")
        assert status == 404 and body["status"] == 404
        assert "no feature view named 'nosuch'" in body["error"]


def _stable(obj):
    """Without the fields computed from the clock at answer time."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if k not in ("now", "age_s")}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def test_tracking_server_answers_the_same(feats, tmp_path):
    from trackserver_helpers import Server, request, token

    env = {**os.environ, "MLOPS_JUPYTER_STORE": str(feats["store"])}
    tok = token(env, "reader", "read")
    store = open_store(feats["store"])
    with Server(env, tmp_path) as srv:
        status, body = request(srv.url, "GET", "/mlops/api/v1/features", tok)
        assert status == 200, body
        assert _stable(body) == _stable(list_feature_views(store))
        status, body = request(srv.url, "GET", "/mlops/api/v1/features/user_stats", tok)
        assert status == 200, body
        assert _stable(body) == _stable(feature_view_detail(store, "user_stats"))
        status, body = request(srv.url, "GET", "/mlops/api/v1/features/nosuch", tok)
        assert status == 404 and "no feature view named 'nosuch'" in body["error"]
