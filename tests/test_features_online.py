"""Feature store online store: materialize then read back equals the offline join at "now"
(same values, same nulls), newer values win, TTL expiry, missing entities, bad references,
and an unreachable Redis. Each test runs on the team-store backend (SQLite, or PostgreSQL
with MLOPS_TEST_BACKEND=postgresql) and on a real redis-server started on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import time

import polars as pl
import pytest

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.features import online_materializations

NOW = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # naive UTC, as the views' data


def ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


# user 1: an old row, a newer one, a late-arriving newest one and a duplicate of its
# timestamp (registered last: wins); user 2: only a value beyond the 3-day TTL; user 3: only
# a value from the future; user 4: a fresh value; user 5: a fresh null value
FEATURES = pl.DataFrame(
    {
        "user_id": [1, 1, 2, 3, 4, 1, 1, 5],
        "event_ts": [ago(2), ago(10), ago(5), ago(-1), ago(1), ago(0.5), ago(0.5), ago(1)],
        "clicks": [20, 10, 50, 99, 40, 30, 35, None],
        "score": [0.2, 0.1, 0.5, 0.9, 0.4, 0.3, 0.35, 0.6],
    }
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A real redis-server on 127.0.0.1 for this module (no persistence)."""
    pytest.importorskip("redis", reason="the redis client (the features extra) is not installed")
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(params=["store", "redis"])
def online(request, monkeypatch):
    """The online backend under test: the team store, or Redis (emptied for each test)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        import redis

        redis.Redis.from_url(url).flushdb()
        monkeypatch.setenv("MLOPS_JUPYTER_ONLINE_STORE", url)
    else:
        monkeypatch.delenv("MLOPS_JUPYTER_ONLINE_STORE", raising=False)
    return request.param


def _register(frame: pl.DataFrame = FEATURES, ttl: str = "3d"):
    return mj.register_features(
        "user_stats", frame, entity="user_id", timestamp="event_ts", ttl=ttl
    )


def _offline_at_now(users: list, features: list[str]) -> pl.DataFrame:
    labels = pl.DataFrame({"user_id": users, "event_ts": [NOW] * len(users)})
    return mj.training_set(labels, features=features, record=False).drop("event_ts")


def test_materialize_then_read_equals_offline_join(online):
    _register()
    got = mj.materialize("user_stats")
    assert (got.view, got.version, got.rows) == ("user_stats", 1, 4)  # user 3: future only
    users = [4, 1, 2, 3, 5, 6, 1]  # request order kept, duplicates too; 6 is unknown
    feats = ["user_stats:clicks", "user_stats:score"]
    on = mj.online_features(users, feats)
    off = _offline_at_now(users, feats)
    assert on.columns == ["user_id", "clicks", "score"]
    assert on.schema == off.schema
    assert on.to_dicts() == off.to_dicts()
    assert on["clicks"].to_list() == [40, 35, None, None, None, None, 35]
    assert on["score"].to_list() == [0.4, 0.35, None, None, 0.6, None, 0.35]
    log = online_materializations("user_stats")
    assert log.height == 1 and log["rows"][0] == 4 and log["backend"][0].startswith(online)
    # a dict of entity columns or a frame works too; "view:*" takes every feature
    assert mj.online_features({"user_id": [1]}, "user_stats:*").row(0) == (1, 35, 0.35)
    assert mj.online_features(pl.DataFrame({"user_id": [4]}), feats).row(0) == (4, 40, 0.4)
    empty = mj.online_features([], feats)
    assert empty.height == 0 and empty.schema == off.schema


def test_newer_values_win_and_ranges(online):
    _register()
    assert mj.materialize("user_stats", end=ago(1.5)).rows == 2  # users 1 (at -2d) and 2
    assert mj.online_features([1], "user_stats:clicks")["clicks"].to_list() == [20]
    mj.materialize("user_stats")
    assert mj.online_features([1], "user_stats:clicks")["clicks"].to_list() == [35]
    # an older range again: the stored newer value stays
    mj.materialize("user_stats", start=ago(20), end=ago(9))
    assert mj.online_features([1], "user_stats:clicks")["clicks"].to_list() == [35]
    # new offline data with a newer value for user 1 replaces it
    later = pl.DataFrame({"user_id": [1], "event_ts": [ago(0.1)], "clicks": [77], "score": [0.77]})
    _register(pl.concat([FEATURES, later]))
    mj.materialize("user_stats", start=dt.timedelta(days=1))
    assert mj.online_features([1, 4], "user_stats:clicks")["clicks"].to_list() == [77, 40]
    with pytest.raises(InvalidInputError, match="start is after end"):
        mj.materialize("user_stats", start=ago(1), end=ago(2))


def test_ttl_expiry_at_read_time(online):
    _register(ttl="1d")
    mj.materialize("user_stats")
    # user 4's value is exactly 1 day old at NOW: by the time of the read it is older
    on = mj.online_features([1, 4, 2], "user_stats:clicks")
    assert on["clicks"].to_list() == [35, None, None]


def test_compound_keys_and_two_views(online):
    _register()
    items = pl.DataFrame(
        {
            "user_id": [1, 1, 2],
            "shop": ["a", "b", "a"],
            "ts": [ago(1), ago(1), ago(1)],
            "spend": [1.5, 2.5, 3.5],
        }
    )
    mj.register_features("user_shop", items, entity=["user_id", "shop"], timestamp="ts")
    mj.materialize("user_stats")
    mj.materialize("user_shop")
    on = mj.online_features(
        {"user_id": [1, 2, 1], "shop": ["b", "a", "z"]},
        ["user_stats:clicks", "user_shop:spend"],
    )
    assert on.to_dicts() == [
        {"user_id": 1, "shop": "b", "clicks": 35, "spend": 2.5},
        {"user_id": 2, "shop": "a", "clicks": None, "spend": 3.5},
        {"user_id": 1, "shop": "z", "clicks": 35, "spend": None},
    ]
    assert mj.online_features([(2, "a")], "user_shop:spend")["spend"].to_list() == [3.5]
    with pytest.raises(InvalidInputError, match="different entity columns"):
        mj.online_features([1], ["user_stats:clicks", "user_shop:spend"])


def test_bad_references(online):
    with pytest.raises(InvalidInputError, match="no feature view named 'nope'"):
        mj.online_features([1], "nope:clicks")
    _register()
    with pytest.raises(InvalidInputError, match="has not been materialized"):
        mj.online_features([1], "user_stats:clicks")
    mj.materialize("user_stats")
    with pytest.raises(InvalidInputError, match="has no feature 'clickz'"):
        mj.online_features([1], "user_stats:clickz")
    with pytest.raises(InvalidInputError, match="must look like"):
        mj.online_features([1], "user_stats")
    with pytest.raises(InvalidInputError, match="entity column 'user_id'"):
        mj.online_features(["abc"], "user_stats:clicks")
    with pytest.raises(InvalidInputError, match="no column 'user_id'"):
        mj.online_features({"uid": [1]}, "user_stats:clicks")
    with pytest.raises(InvalidInputError, match="has no version 3"):
        mj.materialize("user_stats@3")


def test_unreachable_redis_writes_nothing(monkeypatch):
    pytest.importorskip("redis", reason="the redis client (the features extra) is not installed")
    _register()
    monkeypatch.setenv("MLOPS_JUPYTER_ONLINE_STORE", f"redis://:pw@127.0.0.1:{_free_port()}/0")
    from mlops_jupyter.features.redis_store import OnlineStoreError

    with pytest.raises(OnlineStoreError, match="could not be reached") as e:
        mj.materialize("user_stats")
    assert "pw" not in str(e.value)
    assert online_materializations().height == 0
    monkeypatch.setenv("MLOPS_JUPYTER_ONLINE_STORE", "memcached://x")
    with pytest.raises(InvalidInputError, match="redis://"):
        mj.materialize("user_stats")


def test_serving_fills_features_by_entity_id():
    import json
    import urllib.request

    import numpy as np

    LogisticRegression = pytest.importorskip("sklearn.linear_model").LogisticRegression

    _register()
    mj.materialize("user_stats")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2))
    est = LogisticRegression().fit(X, (X[:, 0] > 0).astype(np.int64))
    mj.register_model(
        "churn", est, signature={"columns": {"clicks": "float64", "score": "float64"}}
    )

    def post(srv, obj) -> tuple[int, dict]:
        req = urllib.request.Request(
            srv.url + "/predict", json.dumps(obj).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    feats = ["user_stats:clicks", "user_stats:score"]
    with mj.serve("churn", trusted=True, features=feats, entity_key="user_id") as srv:
        st, obj = post(srv, {"instances": [{"user_id": 4}, {"user_id": 1}]})
        assert st == 200, obj
        assert obj["predictions"] == est.predict(np.array([[40, 0.4], [35, 0.35]])).tolist()
        # columns, and values the request sends itself are kept
        st, obj = post(srv, {"inputs": {"user_id": [1], "clicks": [-100.0]}})
        assert st == 200 and obj["predictions"] == est.predict(np.array([[-100, 0.35]])).tolist()
        # the usual feature columns still work; a bad entity id is a clear 422
        st, obj = post(srv, {"instances": [{"clicks": 1.0, "score": 0.5}]})
        assert st == 200
        st, obj = post(srv, {"instances": [{"user_id": "abc"}]})
        assert st == 422 and "entity column 'user_id'" in obj["error"]
    from mlops_jupyter.serving.client import ServeError

    with pytest.raises(ServeError, match="no feature 'nope'"):
        mj.serve("churn", trusted=True, features=["user_stats:nope"])


def test_feature_types_round_trip(online):
    frame = pl.DataFrame(
        {
            "device": ["a", "b"],
            "ts": [ago(1), ago(2)],
            "seen": [ago(3), None],
            "day": [dt.date(2024, 2, 29), dt.date(2025, 1, 1)],
            "ok": [True, None],
            "name": ['x\u00e9"y', None],
            "n": pl.Series([2**40, -1], dtype=pl.Int64),
            "f32": pl.Series([1.5, float("nan")], dtype=pl.Float32),
        }
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Paris"))
    mj.register_features("devices", frame, entity="device", timestamp="ts")
    mj.materialize("devices")
    on = mj.online_features(["b", "a"], "devices:*")
    labels = pl.DataFrame({"device": ["b", "a"], "ts": [NOW, NOW]}).with_columns(
        pl.col("ts").dt.replace_time_zone("UTC")
    )
    off = mj.training_set(labels, features=["devices:*"], record=False).drop("ts")
    assert on.schema == off.schema
    assert (
        on.select(pl.all().exclude("f32")).to_dicts()
        == off.select(pl.all().exclude("f32")).to_dicts()
    )
    assert on["f32"][1] == 1.5 and on["f32"][0] != on["f32"][0]  # NaN stays NaN
