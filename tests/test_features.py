"""Feature store: feature view versions, point-in-time correct training sets (a hand-made
timeline with known answers and a property test against a naive per-row reference),
lineage, bad input and the %mlops_features magic. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.features import FeatureVersionConflictError, get_feature_view
from mlops_jupyter.features.join import training_set_sources
from mlops_jupyter.features.views import code_of, parse_ttl


def T(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, day, hour)


# registration order matters: u1's T3 row arrives late (after T5), and u1 has two rows at
# T5 of which the one registered last (55) wins
FEATURES = pl.DataFrame(
    {
        "user_id": [1, 1, 2, 1, 2, 4, 1],
        "event_ts": [T(1), T(5), T(2), T(3), T(10), T(4, 12), T(5)],
        "clicks": [10, 50, 20, 30, 100, 40, 55],
        "score": [0.1, 0.5, 0.2, 0.3, 1.0, 0.4, 0.55],
    }
)
# (user_id, label time, expected clicks): before, exactly at, after, TTL edge and expiry,
# future-only values, entities without features, duplicate label rows, null keys
CASES = [
    (1, T(4), 30),  # latest before: the late-arriving T3 row
    (1, T(2), 10),
    (2, T(6), None),  # T2 is 4 days old (TTL 3d); T10 lies in the future
    (1, T(5), 55),  # exactly at the label time; duplicate timestamps: last registered wins
    (1, T(8), 55),  # exactly TTL old: still valid (TTL is inclusive)
    (1, T(8, 1), None),  # one hour beyond the TTL
    (2, T(10), 100),
    (3, T(5), None),  # an entity without features
    (1, T(2), 10),  # a duplicate label row stays
    (4, T(4), None),  # its only row is 12 h after the label
    (1, T(3), 30),  # exactly at the late-arriving row
    (None, T(5), None),
    (1, None, None),
]


def _labels() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [c[0] for c in CASES],
            "event_ts": [c[1] for c in CASES],
            "label": list(range(len(CASES))),
        },
        schema={"user_id": pl.Int64, "event_ts": pl.Datetime("us"), "label": pl.Int64},
    )


def test_hand_made_timeline_gives_the_known_answers():
    mj.register_features("user_stats", FEATURES, entity="user_id", timestamp="event_ts", ttl="3d")
    profile = pl.DataFrame({"user_id": [1, 2], "since": [T(1), T(1)], "tier": ["gold", "silver"]})
    mj.register_features("user_profile", profile, entity="user_id", timestamp="since")
    labels = _labels()
    out = mj.training_set(
        labels,
        ["user_stats:clicks", "user_stats:score", "user_profile:*"],
        timestamp="event_ts",
        record=False,
    )
    assert out.columns == ["user_id", "event_ts", "label", "clicks", "score", "tier"]
    assert out.select(labels.columns).equals(labels)  # order and count kept exactly
    assert out["clicks"].to_list() == [c[2] for c in CASES]
    scores = out["score"].to_list()
    assert scores[3] == 0.55 and scores[2] is None
    # no TTL on user_profile: u2 at T6 still gets its T1 tier; u3 has none
    assert out["tier"].to_list()[:3] == ["gold", "gold", "silver"]
    assert out["tier"].to_list()[7] is None


def test_training_set_is_recorded_with_lineage_and_linked_to_the_run():
    info = mj.register_features("user_stats", FEATURES, entity="user_id", timestamp="event_ts")
    labels = _labels().drop_nulls()
    with mj.start_run("train") as run:
        out = mj.training_set(labels, ["user_stats:*"], name="ts1")
    assert out.columns[-2:] == ["clicks", "score"]
    src = training_set_sources("ts1")
    assert src["role"].to_list() == ["labels", "features"]
    assert src.row(1) == ("features", info.data_version, "user_stats", 1, "clicks, score")
    from mlops_jupyter.store import data as dstore
    from mlops_jupyter.tracking.api import current_store

    lin = [v for v in dstore.versions_for_run(current_store(), run.store_id) if v["name"] == "ts1"]
    assert len(lin) == 1 and lin[0]["role"] == "input" and lin[0]["n_rows"] == labels.height
    use = mj.features.feature_view_usage("user_stats")
    assert use.select("version", "run", "run_name").rows() == [(1, run.id, "train")]
    assert use["training_set"][0] == lin[0]["id"]
    # an explicit run (here one that has ended) is linked too; run=False links none
    mj.training_set(labels.head(3), ["user_stats:clicks"], name="ts2", run=run)
    mj.training_set(labels.head(2), ["user_stats:clicks"], name="ts3", run=False)
    use = mj.features.feature_view_usage("user_stats")
    assert {(r["run"], r["training_set"] is not None) for r in use.iter_rows(named=True)} == {
        (run.id, True),
        (None, True),
    }
    assert use.height == 3


def test_artifacts_gc_keeps_the_offline_parquet():
    from mlops_jupyter.artifacts.gc import find_orphans
    from mlops_jupyter.tracking.api import current_store

    info = mj.register_features("user_stats", FEATURES, entity="user_id", timestamp="event_ts")
    store = current_store()
    report = find_orphans(store, store.artifacts, grace_s=0, now=time.time() + 60)
    assert report.scanned >= 1 and report.orphans == []
    assert info.frame().equals(FEATURES)


def test_offline_data_on_object_storage(s3_url, monkeypatch):
    from mlops_jupyter.features.views import read_offline
    from mlops_jupyter.tracking.api import current_store

    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", s3_url)
    mj.set_store(None)
    store = current_store()
    assert store.artifacts.kind == "s3"
    mj.register_features("user_stats", FEATURES, entity="user_id", timestamp="event_ts")
    assert [o.size > 0 for o in store.artifacts.list("artifacts")] == [True]
    read_offline.cache_clear()  # read it back from the server, not from memory
    out = mj.training_set(_labels(), ["user_stats:clicks"], record=False)
    assert out["clicks"].to_list()[:4] == [30, 10, 20, 55]


def test_pandas_in_pandas_out_keeps_the_index():
    pd = pytest.importorskip("pandas")
    mj.register_features("user_stats", FEATURES.to_pandas(), entity="user_id", timestamp="event_ts")
    labels = pd.DataFrame(
        {"user_id": [1, 2], "event_ts": pd.to_datetime(["2024-01-04", "2024-01-06"])},
        index=[10, 20],
    )
    out = mj.training_set(labels, ["user_stats:clicks"], record=False)
    assert isinstance(out, pd.DataFrame) and list(out.index) == [10, 20]
    assert out["clicks"].tolist() == [30, 20]


def test_timezones_and_entity_names_map():
    feats = FEATURES.with_columns(pl.col("event_ts").dt.replace_time_zone("UTC"))
    mj.register_features("user_stats", feats, entity="user_id", timestamp="event_ts")
    # the same instants in another zone, with other column names
    labels = pl.DataFrame({"uid": [1], "at": [T(4, 1)]}).with_columns(
        pl.col("at").dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Tokyo")
    )
    out = mj.training_set(labels, ["user_stats:clicks"], entity="uid", timestamp="at", record=False)
    assert out["clicks"].to_list() == [30]
    with pytest.raises(InvalidInputError, match="timezone-naive"):
        mj.training_set(
            labels.with_columns(pl.col("at").dt.replace_time_zone(None)),
            ["user_stats:clicks"],
            entity="uid",
            timestamp="at",
            record=False,
        )


def test_compound_entities_dates_and_entity_dtypes():
    feats = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2],
            "item": ["a", "b", "a", "a"],
            "day": [
                dt.date(2024, 1, 1),
                dt.date(2024, 1, 2),
                dt.date(2024, 1, 3),
                dt.date(2024, 1, 1),
            ],
            "price": [1.0, 2.0, 3.0, 4.0],
        }
    )
    mj.register_features("prices", feats, entity=["user_id", "item"], timestamp="day", ttl="1d")
    labels = pl.DataFrame(
        {
            "user_id": pl.Series([1, 1, 1, 2, 2], dtype=pl.Int32),  # cast to the view's Int64
            "item": ["a", "a", "b", "a", "b"],
            "day": [T(2, 12), T(3), T(4), T(2), T(2)],
        }
    )
    out = mj.training_set(labels, ["prices:price"], record=False)
    # (1,a) at Jan 2 12h: Jan 1 is 1.5 days old (TTL 1d) -> null; at Jan 3 exactly -> 3.0;
    # (1,b) at Jan 4: Jan 2 is 2 days old -> null; (2,a) at Jan 2: exactly 1 day -> 4.0
    assert out["price"].to_list() == [None, 3.0, None, 4.0, None]
    assert out["user_id"].dtype == pl.Int32  # the labels come back as they were


# -- versions -----------------------------------------------------------------------------


def test_same_code_same_version_changed_code_new_version():
    src = FEATURES.select("user_id", "event_ts", "clicks")

    @mj.feature_view(entity="user_id", timestamp="event_ts", ttl="30d", name="clicks")
    def clicks_v1(df):
        return df.with_columns(pl.col("clicks") * 2)

    out = clicks_v1(src)
    assert out["clicks"].to_list()[0] == 20
    first = clicks_v1.info()
    assert first.version == 1 and first.code_hash and "clicks_v1" in first.code
    assert first.owner and first.n_rows == src.height and first.ttl == "30d"
    assert clicks_v1.materialize_offline(src).version == 1  # idempotent

    @mj.feature_view(entity="user_id", timestamp="event_ts", ttl="30d", name="clicks")
    def clicks_v1(df):  # noqa: F811 - the same code, reformatted and commented
        # doubled
        return df.with_columns(
            pl.col("clicks") * 2,
        )

    assert clicks_v1.materialize_offline(src).version == 1

    @mj.feature_view(entity="user_id", timestamp="event_ts", ttl="30d", name="clicks")
    def clicks_v1(df):  # noqa: F811 - changed code
        return df.with_columns(pl.col("clicks") * 3)

    second = clicks_v1.materialize_offline(src)
    assert second.version == 2 and second.code_hash != first.code_hash
    assert second.frame()["clicks"].to_list()[0] == 30
    assert get_feature_view("clicks", 1).frame()["clicks"].to_list()[0] == 20
    views = mj.feature_views()
    assert views.filter(pl.col("name") == "clicks")["version"].to_list() == [2]
    assert mj.feature_views(all_versions=True).height == 2


def test_changed_code_with_an_existing_explicit_version_is_refused():
    src = FEATURES.select("user_id", "event_ts", "clicks")

    @mj.feature_view(entity="user_id", timestamp="event_ts", name="clicks", version=1)
    def f(df):
        return df

    f(src)

    @mj.feature_view(entity="user_id", timestamp="event_ts", name="clicks", version=1)
    def f(df):  # noqa: F811
        return df.with_columns(pl.col("clicks") + 1)

    with pytest.raises(FeatureVersionConflictError, match="code changed without a new version"):
        f(src)
    # nothing was lost: version 1 keeps its data, and a new version is accepted
    assert get_feature_view("clicks", 1).frame()["clicks"].to_list() == src["clicks"].to_list()
    with pytest.raises(InvalidInputError, match="changed without a new version"):
        mj.register_features(
            "clicks", src, entity="user_id", timestamp="event_ts", ttl="1d", version=1
        )
    assert (
        mj.register_features(
            "clicks", src, entity="user_id", timestamp="event_ts", ttl="1d", version=5
        ).version
        == 5
    )


def test_concurrent_registrations_agree_on_versions(python, child_env, tmp_path):
    """Processes registering at once: one definition -> one version; two -> two."""
    import subprocess

    path = tmp_path / "f.parquet"
    FEATURES.write_parquet(path)
    script = (
        "import sys, polars as pl, mlops_jupyter as mj\n"
        f"df = pl.read_parquet({str(path)!r})\n"
        "ttl = sys.argv[1] if sys.argv[1] != '-' else None\n"
        "v = mj.register_features('race', df, entity='user_id', timestamp='event_ts', ttl=ttl)\n"
        "print(v.version)\n"
    )
    procs = [
        subprocess.Popen(
            [python, "-c", script, ttl], env=child_env, stdout=subprocess.PIPE, text=True
        )
        for ttl in ("-", "-", "2d")
    ]
    got = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert got[0] == got[1] != got[2] and sorted({*got}) == ["1", "2"]
    assert mj.feature_views(all_versions=True).height == 2


def test_reverted_code_makes_its_version_current_again():
    src = FEATURES.select("user_id", "event_ts", "clicks")
    a = mj.register_features("v", src, entity="user_id", timestamp="event_ts")
    b = mj.register_features("v", src, entity="user_id", timestamp="event_ts", ttl="1d")
    assert (a.version, b.version) == (1, 2)
    mj.register_features("v", src, entity="user_id", timestamp="event_ts")
    assert get_feature_view("v").version == 1


def test_code_hash_ignores_decorators_comments_and_layout():
    def make(variant: int):
        if variant == 0:

            def g(x):
                return x + 1

        elif variant == 1:

            @staticmethod
            def g(x):
                # a comment
                return x + 1  # another

        else:

            def g(x):
                return x + 2

        return g

    h0, h1, h2 = (code_of(make(i))[1] for i in range(3))
    assert h0 == h1 != h2


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ttl, secs",
    [
        ("30d", 2592000),
        ("12h", 43200),
        ("1d12h", 129600),
        ("90m", 5400),
        ("2w", 1209600),
        (45, 45),
        (dt.timedelta(hours=1), 3600),
        (None, None),
    ],
)
def test_ttl_parsing(ttl, secs):
    assert parse_ttl(ttl) == secs


@pytest.mark.parametrize("ttl", ["30 days", "d", "", "-1d", "1x", 0, -5, True, [1]])
def test_bad_ttl_is_refused(ttl):
    with pytest.raises(InvalidInputError, match="ttl"):
        mj.register_features("x", FEATURES, entity="user_id", timestamp="event_ts", ttl=ttl)


def test_bad_input_gives_clear_errors():
    reg = mj.register_features
    with pytest.raises(InvalidInputError, match="no entity column 'uid'"):
        reg("x", FEATURES, entity="uid", timestamp="event_ts")
    with pytest.raises(InvalidInputError, match="no timestamp column 'ts'"):
        reg("x", FEATURES, entity="user_id", timestamp="ts")
    text_ts = FEATURES.with_columns(pl.col("event_ts").cast(pl.String))
    with pytest.raises(InvalidInputError, match="must hold datetimes"):
        reg("x", text_ts, entity="user_id", timestamp="event_ts")
    with pytest.raises(InvalidInputError, match="no feature columns"):
        reg("x", FEATURES.select("user_id", "event_ts"), entity="user_id", timestamp="event_ts")
    with pytest.raises(InvalidInputError, match="name"):
        reg("bad name", FEATURES, entity="user_id", timestamp="event_ts")
    with pytest.raises(InvalidInputError, match="polars or pandas"):
        reg("x", [1, 2], entity="user_id", timestamp="event_ts")
    reg("user_stats", FEATURES, entity="user_id", timestamp="event_ts")
    labels = _labels()
    ts = mj.training_set
    with pytest.raises(InvalidInputError, match="no feature view named 'nope'"):
        ts(labels, ["nope:clicks"])
    with pytest.raises(InvalidInputError, match="has no version 7"):
        ts(labels, ["user_stats@7:clicks"])
    with pytest.raises(InvalidInputError, match="no feature 'likes'.*clicks, score"):
        ts(labels, ["user_stats:likes"])
    with pytest.raises(InvalidInputError, match="must look like"):
        ts(labels, ["user_stats.clicks"])
    with pytest.raises(InvalidInputError, match="labels has no entity column 'user_id'"):
        ts(labels.rename({"user_id": "u"}), ["user_stats:clicks"])
    with pytest.raises(InvalidInputError, match="labels has no timestamp column 'when'"):
        ts(labels, ["user_stats:clicks"], timestamp="when")
    with pytest.raises(InvalidInputError, match="must hold datetimes"):
        ts(labels.with_columns(pl.col("event_ts").cast(pl.String)), ["user_stats:clicks"])
    aware = labels.with_columns(pl.col("event_ts").dt.replace_time_zone("UTC"))
    with pytest.raises(InvalidInputError, match="timezone-aware.*timezone-naive"):
        ts(aware, ["user_stats:clicks"])
    with pytest.raises(InvalidInputError, match="does not match"):
        ts(labels.with_columns(pl.lit("a").alias("user_id")), ["user_stats:clicks"])
    with pytest.raises(InvalidInputError, match="clash.*full_names"):
        ts(labels.rename({"label": "clicks"}), ["user_stats:clicks"])
    out = ts(
        labels.rename({"label": "clicks"}), ["user_stats:clicks"], full_names=True, record=False
    )
    assert "user_stats__clicks" in out.columns
    with pytest.raises(InvalidInputError, match="one labels column per entity"):
        ts(labels, ["user_stats:clicks"], entity=["user_id", "label"])


def test_magic_lists_views():
    from IPython.core.interactiveshell import InteractiveShell

    from mlops_jupyter.magics.features import FeatureMagics

    mj.register_features("user_stats", FEATURES, entity="user_id", timestamp="event_ts", ttl="3d")
    ip = InteractiveShell.instance()
    try:
        ip.register_magics(FeatureMagics(ip))
        out = ip.run_line_magic("mlops_features", "")
        mj.register_features("user_stats", FEATURES, entity="user_id", timestamp="event_ts")
        both = ip.run_line_magic("mlops_features", "user_stats")
        current = ip.run_line_magic("mlops_features", "")
    finally:
        InteractiveShell.clear_instance()
    assert out.columns == [
        "name",
        "version",
        "entity",
        "ttl",
        "features",
        "rows",
        "freshness",
        "created",
    ]
    row = out.row(0, named=True)
    assert (row["name"], row["ttl"], row["rows"], row["features"]) == ("user_stats", "3d", 7, 2)
    assert row["freshness"] == dt.datetime(2024, 1, 10, tzinfo=dt.timezone.utc)
    assert both["version"].to_list() == [1, 2] and current["version"].to_list() == [2]


# -- property: training_set agrees with a naive per-row reference ---------------------------


def _reference(labels, feats, ttl_h):
    """For each label row, scan every feature row: the latest at or before the label time
    within the TTL; among equal timestamps the one registered last."""
    out = []
    for e, t in labels:
        best = None
        for i, (fe, ft, v) in enumerate(feats):
            if e is None or t is None or fe != e or ft > t:
                continue
            if ttl_h is not None and t - ft > ttl_h:
                continue
            if best is None or (ft, i) > (best[0], best[1]):
                best = (ft, i, v)
        out.append(None if best is None else best[2])
    return out


_ent = st.integers(0, 3)
_hour = st.integers(0, 60)


_feats = st.lists(
    st.tuples(_ent, _hour, st.one_of(st.none(), st.integers(-1000, 1000))),
    min_size=1,
    max_size=25,
)
_ttl = st.one_of(st.none(), st.integers(1, 30))


def _view(name: str, feats, ttl_h, ts_unit: str = "us"):
    base = dt.datetime(2024, 1, 1)
    fdf = pl.DataFrame(
        {
            "e": [f[0] for f in feats],
            "ts": [base + dt.timedelta(hours=f[1]) for f in feats],
            "v": [f[2] for f in feats],
        },
        schema={"e": pl.Int64, "ts": pl.Datetime(ts_unit), "v": pl.Int64},
    )
    ttl = None if ttl_h is None else ttl_h * 3600
    return mj.register_features(name, fdf, entity="e", timestamp="ts", ttl=ttl)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    feats=_feats,
    feats2=_feats,
    labels=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 4)), st.one_of(st.none(), _hour)),
        min_size=0,
        max_size=25,
    ),
    ttl_h=_ttl,
    ttl2_h=_ttl,
)
def test_training_set_matches_the_naive_reference(feats, feats2, labels, ttl_h, ttl2_h):
    """Two views in one call (one sort of the labels serves both; the second view's times
    in another unit), each against the reference."""
    a = _view("pit", feats, ttl_h)
    b = _view("pit2", feats2, ttl2_h, "ms")
    base = dt.datetime(2024, 1, 1)
    ldf = pl.DataFrame(
        {
            "e": [x[0] for x in labels],
            "ts": [None if x[1] is None else base + dt.timedelta(hours=x[1]) for x in labels],
        },
        schema={"e": pl.Int64, "ts": pl.Datetime("us")},
    )
    refs = [f"pit@{a.version}:v", f"pit2@{b.version}:v"]
    out = mj.training_set(ldf, refs, full_names=True, record=False)
    assert out.height == len(labels)
    assert out["pit__v"].to_list() == _reference(labels, feats, ttl_h)
    assert out["pit2__v"].to_list() == _reference(labels, feats2, ttl2_h)
