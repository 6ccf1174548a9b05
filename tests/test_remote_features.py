"""The feature store through a real `mlops-jupyter server` process (real tokens): a view
registered over the server equals the same registered on a store directly (version, code
hash, definition, schema, data version); re-registering is idempotent; changed code under an
explicit version is refused with the local message; training_set over the server equals
the one joined on the server's store directly, with its lineage and run link recorded; a
read token reads but cannot register; the online store (the team store's table through
the server, or Redis) reads back over the server what the store gives directly. One
server for the module (SQLite, or PostgreSQL in the CI's PostgreSQL pass)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from test_features_online import redis_url  # noqa: F401 (a real redis-server, module scope)
from trackserver_helpers import RemoteServer, module_remote, request, use_remote

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError, StoreError
from mlops_jupyter.features import FeatureVersionConflictError, feature_view_usage
from mlops_jupyter.features.join import training_set_sources

pytestmark = pytest.mark.timeout(120)


def T(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, day, hour)


EVENTS = pl.DataFrame(
    {
        "user_id": [1, 1, 2, 1, 2, 4, 1],
        "event_ts": [T(1), T(5), T(2), T(3), T(10), T(4, 12), T(5)],
        "clicks": [10, 50, 20, 30, 100, 40, 55],
    }
)
LABELS = pl.DataFrame(
    {
        "user_id": [1, 1, 2, 3, 1, None, 2],
        "event_ts": [T(4), T(5), T(6), T(5), T(8, 1), T(5), T(10)],
        "label": [0, 1, 0, 1, 1, 0, 1],
    }
)
SPEND = pl.DataFrame(
    {
        "user_id": [1, 2, 2],
        "event_ts": [T(2), T(3), T(9)],
        "spend": [1.5, 2.5, 9.0],
        "tier": ["a", "b", "c"],
    }
)


@mj.feature_view(entity="user_id", timestamp="event_ts", ttl="3d")
def user_stats(events: pl.DataFrame) -> pl.DataFrame:
    """Clicks and their double."""
    return events.with_columns(double=pl.col("clicks") * 2)


@mj.feature_view(entity="user_id", timestamp="event_ts", ttl="3d", name="user_stats", version=1)
def user_stats_changed(events: pl.DataFrame) -> pl.DataFrame:
    return events.with_columns(double=pl.col("clicks") * 3)


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, request):
    yield from module_remote(tmp_path_factory, request, "remote-features")


@pytest.fixture
def rs(remote_server, monkeypatch, tmp_path) -> RemoteServer:
    monkeypatch.delenv("MLOPS_JUPYTER_ONLINE_STORE", raising=False)
    return use_remote(monkeypatch, remote_server, tmp_path)


def _direct(rs: RemoteServer, monkeypatch) -> None:
    """From here on this process opens the server's store itself."""
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(rs.loc))
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(rs.artifacts))
    monkeypatch.delenv("MLOPS_JUPYTER_TOKEN", raising=False)


def _register_both() -> None:
    user_stats(EVENTS)
    mj.register_features("spend", SPEND, entity="user_id", timestamp="event_ts", ttl="5d")


def _definition(info) -> tuple:
    return (
        info.name,
        info.version,
        info.code_hash,
        info.entities,
        info.timestamp,
        info.ttl_s,
        info.schema,
        info.features,
        info.n_rows,
        info.newest,
        info.data_version,
    )


def test_register_over_server_equals_direct(rs, monkeypatch, tmp_path):
    _register_both()
    remote = {n: mj.features.get_feature_view(n) for n in ("user_stats", "spend")}
    assert remote["user_stats"].version == 1 and remote["user_stats"].code_hash
    assert remote["user_stats"].frame().equals(user_stats.fn(EVENTS))  # downloaded, verified
    # idempotent: the same definition and data again records nothing new
    again = user_stats.materialize_offline(EVENTS)
    assert again.version == 1 and not again.is_new
    n_views = rs.rows("SELECT count(*) FROM feature_views")[0][0]
    n_mats = rs.rows("SELECT count(*) FROM feature_materializations")[0][0]
    assert (n_views, n_mats) == (2, 2)
    # changed code under an explicit existing version: refused with the local message
    with pytest.raises(FeatureVersionConflictError, match="code changed without a new version"):
        user_stats_changed(EVENTS)
    # new data under the same definition: same version, a new materialization
    info = user_stats.materialize_offline(EVENTS.head(5))
    assert info.version == 1 and info.n_rows == 5
    user_stats(EVENTS)  # back to the full data
    listed = mj.feature_views()
    assert listed.get_column("name").to_list() == ["spend", "user_stats"]
    from mlops_jupyter.magics.features import FeatureMagics

    shown = FeatureMagics(None).mlops_features("user_stats")  # %mlops_features user_stats
    assert shown.get_column("version").to_list() == [1] and shown["rows"][0] == EVENTS.height
    assert rs.rows("SELECT count(*) FROM feature_views")[0][0] == n_views
    # the same registered on another store directly: the same definition and data version
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(tmp_path / "direct"))
    monkeypatch.delenv("MLOPS_JUPYTER_TOKEN")
    _register_both()
    for n in ("user_stats", "spend"):
        local = mj.features.get_feature_view(n)
        assert _definition(local) == _definition(remote[n])
        assert local.frame().equals(user_stats.fn(EVENTS) if n == "user_stats" else SPEND)
    # read on the server's store itself: what was registered over the server
    _direct(rs, monkeypatch)
    for n in ("user_stats", "spend"):
        assert _definition(mj.features.get_feature_view(n)) == _definition(remote[n])


def test_training_set_over_server_equals_direct(rs, monkeypatch, tmp_path):
    _register_both()
    feats = ["user_stats:*", "spend:spend", "spend:tier"]
    with mj.start_run("train", experiment="remote-features") as run:
        got = mj.training_set(LABELS, feats, name="ts_remote")
    assert got.height == LABELS.height and got.columns[:3] == LABELS.columns
    assert got.get_column("clicks").to_list() == [30, 55, None, None, None, None, 100]
    # pandas labels give pandas, as locally
    pdf = mj.training_set(LABELS.to_pandas(), feats, record=False)
    assert pl.from_pandas(pdf).equals(got)
    src = training_set_sources("ts_remote")
    assert src.get_column("role").to_list() == ["labels", "features", "features"]
    assert src.get_column("view").to_list()[1:] == ["spend", "user_stats"]
    used = feature_view_usage("user_stats")
    assert run.id in used.get_column("run").to_list()
    # the run links the training set as an input, on the server's store
    linked = rs.rows(
        "SELECT d.vid FROM run_data rd JOIN runs r ON r.id = rd.run_id"
        " JOIN data_versions d ON d.id = rd.version_id WHERE r.uid=? AND rd.role='input'",
        run.id,
    )
    assert len(linked) == 1
    # the Feast export reads the views and their data through the server too
    from mlops_jupyter.features.feast_export import export_feast

    out = export_feast(tmp_path / "feast")
    assert sorted(out["views"]) == ["spend", "user_stats"]
    assert pl.read_parquet(tmp_path / "feast" / "data" / "spend.parquet").height == 3
    # the same join on the server's store directly: the same frame and data versions
    n_versions = rs.rows("SELECT count(*) FROM data_versions")[0][0]
    _direct(rs, monkeypatch)
    with pytest.warns(RuntimeWarning, match="already stored"):
        direct = mj.training_set(LABELS, feats, name="ts_remote", run=False)
        mj.version(direct, name="ts_again", run=False)
    assert direct.equals(got)
    assert rs.rows("SELECT count(*) FROM data_versions")[0][0] == n_versions
    assert training_set_sources("ts_remote").equals(src)


def test_read_token_reads_but_cannot_register(rs, monkeypatch):
    _register_both()
    before = rs.rows("SELECT count(*) FROM feature_materializations")[0][0]
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.rtok)
    assert "user_stats" in mj.feature_views().get_column("name").to_list()
    got = mj.training_set(LABELS, ["user_stats:clicks"], record=False)
    assert got.get_column("clicks").to_list()[:2] == [30, 55]
    with pytest.raises(StoreError, match="may not register feature view 'user_stats'") as e:
        user_stats(EVENTS.head(3))
    assert rs.rtok not in str(e.value)
    with pytest.raises(StoreError, match="may not record training set"):
        mj.training_set(LABELS, ["user_stats:clicks"], run=False)
    assert rs.rows("SELECT count(*) FROM feature_materializations")[0][0] == before
    # an unknown view: the local error
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.wtok)
    with pytest.raises(mj.features.FeatureViewNotFoundError, match="no feature view named"):
        mj.training_set(LABELS, ["nope:x"], record=False)


def test_server_refuses_data_that_does_not_match(rs):
    """Uploaded bytes are kept only under their sha256, and a view is recorded only when
    the parquet has the schema and row count sent."""
    import hashlib
    import io

    buf = io.BytesIO()
    SPEND.write_parquet(buf)
    raw = buf.getvalue()
    digest = hashlib.sha256(raw).hexdigest()
    url, tok = rs.srv.url, rs.wtok
    bad = hashlib.sha256(b"x").hexdigest()
    assert request(url, "PUT", f"/api/v1/features/v/blobs/{bad}", tok, raw=raw)[0] == 400
    assert request(url, "PUT", f"/api/v1/features/v/blobs/{digest}", rs.rtok, raw=raw)[0] == 403
    st, out = request(url, "PUT", f"/api/v1/features/v/blobs/{digest}", tok, raw=raw)
    assert st == 200 and out["sha256"] == digest
    schema = [{"name": c, "dtype": str(t)} for c, t in SPEND.schema.items()]
    body = {
        "view": {"entities": ["user_id"], "timestamp": "event_ts", "schema": schema[:3]},
        "data": {"id": "x" * 16, "fingerprint": "f" * 32, "kind": "table"},
        "materialization": {"digest": digest, "size": len(raw), "n_rows": 3},
    }
    before = rs.rows("SELECT count(*) FROM feature_views")[0][0]
    st, out = request(url, "POST", "/api/v1/features/views/v", tok, body)
    assert st == 400 and "nothing recorded" in out["message"]
    body["view"]["schema"], body["materialization"]["n_rows"] = schema, 4
    assert request(url, "POST", "/api/v1/features/views/v", tok, body)[0] == 400
    assert rs.rows("SELECT count(*) FROM feature_views")[0][0] == before
    assert request(url, "GET", f"/api/v1/features/data/{bad}", tok)[0] == 404


@pytest.mark.parametrize("where", ["store", "redis"])
def test_online_store_over_server(rs, monkeypatch, request, where):
    """Materialized over the server, read over the server and on the store directly: the
    same values (the team store's table through the server's routes, or Redis)."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    fresh = pl.DataFrame(
        {
            "user_id": [1, 1, 2, 3],
            "event_ts": [now - dt.timedelta(days=2), now - dt.timedelta(hours=2)] * 2,
            "clicks": [4, 9, 2, 7],
            "tier": ["a", "b", None, "d"],
        }
    )
    name = f"fresh_{where}"
    mj.register_features(name, fresh, entity="user_id", timestamp="event_ts", ttl="30d")
    if where == "redis":
        import redis

        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        monkeypatch.setenv("MLOPS_JUPYTER_ONLINE_STORE", url)
    feats = [f"{name}:clicks", f"{name}:tier"]
    with pytest.raises(InvalidInputError, match="run mj.materialize"):
        mj.online_features([1], feats)
    done = mj.materialize(name)
    assert done.rows == 3 and done.backend == ("store" if where == "store" else url)
    got = mj.online_features([3, 1, 2, 99, 1], feats)
    assert got.get_column("clicks").to_list() == [7, 9, 2, None, 9]
    assert got.get_column("tier").to_list() == ["d", "b", None, None, "b"]
    # an older range materialized later changes nothing (newer values win)
    mj.materialize(name, end=now - dt.timedelta(days=1))
    assert mj.online_features([3, 1, 2, 99, 1], feats).equals(got)
    log = mj.features.online_materializations(name)
    assert log.get_column("rows").to_list() == [2, 3]
    # serving's --features filler reads the same values over the server
    import json

    from mlops_jupyter.features.serving import FeatureFiller

    filled = FeatureFiller(feats).fill(json.dumps({"instances": [{"user_id": 3}]}).encode())
    assert json.loads(filled) == {"instances": [{"clicks": 7, "tier": "d"}]}
    # a read token reads, but cannot write
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", rs.rtok)
    assert mj.online_features([3, 1, 2, 99, 1], feats).equals(got)
    with pytest.raises(StoreError, match="may not"):
        mj.materialize(name)
    # on the server's store directly: the same values and the same log
    _direct(rs, monkeypatch)
    assert mj.online_features([3, 1, 2, 99, 1], feats).equals(got)
    assert mj.features.online_materializations(name).equals(log)


def test_online_log_entry_sent_again_with_its_key_is_logged_once(rs):
    from lossy_proxy import LossyProxy

    from mlops_jupyter.remote import features as rfeat
    from mlops_jupyter.remote.api import remote_store

    mj.register_features("idem_log", SPEND, entity="user_id", timestamp="event_ts", ttl="5d")
    path = "/api/v1/features/views/idem_log/versions/1/online"

    def log(key: object) -> tuple[int, dict]:
        body = {"backend": "store", "start": None, "end": 1.7e9, "rows": 3, "key": key}
        return request(rs.srv.url, "POST", path, rs.wtok, body)

    def entries() -> list[dict]:
        return mj.features.online_materializations("idem_log").to_dicts()

    # the same request twice (a retry after a lost answer): one log entry, the same answer
    first = log("k-1")
    assert first[0] == 200 and isinstance(first[1]["id"], int)
    assert log("k-1") == first
    assert len(entries()) == 1
    # another key is another entry
    other = log("k-2")
    assert other[0] == 200 and other[1]["id"] != first[1]["id"]
    assert len(entries()) == 2
    for bad in ("", "k" * 65, 3, "k\x00"):
        st, out = log(bad)
        assert st == 400 and "key" in out["message"], (bad, out)
    assert len(entries()) == 2
    # the client: answers lost twice, one key sent three times, one entry more
    with LossyProxy(rs.srv.url, drop=2) as proxy:
        rfeat.record_online(remote_store(proxy.url), "idem_log", 1, "store", 5.0, 1.8e9, 4)
    sent = [r["body"] for r in proxy.requests() if r["path"] == path]
    assert len(sent) == 3 and len({b["key"] for b in sent}) == 1
    got = entries()
    assert len(got) == 3 and got[0]["rows"] == 4
    assert (got[0]["start"].timestamp(), got[0]["end"].timestamp()) == (5.0, 1.8e9)
