"""`mlops-jupyter features export --to-feast DIR` checked with the real Feast (feast 0.67 in
`.venv-feast`, built by `make feast` from .ci/feast-requirements.txt): the exported
repository passes `feast apply`, and Feast's `get_historical_features` on the same labels
gives the same rows as `mj.training_set` (same values, same nulls) on a hand-made timeline:
features changing before, exactly at and after label times, TTL expiry and its inclusive
edge, a late-arriving row, duplicate feature timestamps, a view without TTL, unknown
entities, duplicate label rows.

Feast returns one row per distinct (entity, timestamp) of the labels, sorted its own way
(it drops duplicate label rows), so its rows are matched to ours by those keys. Labels
with a null entity or timestamp are not sent to Feast (it cannot take them); ours gives
them null features."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import mlops_jupyter as mj
from mlops_jupyter.cli import main as cli
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.features.feast_export import export_feast
from mlops_jupyter.features.views import read_offline

ROOT = Path(__file__).resolve().parents[1]
FEAST_BIN = ROOT / ".venv-feast" / "bin"
FEATURES = ["user_stats:clicks", "user_stats:score", "user_stats:tier", "user_profile:*"]
# run by the Feast venv's python in the repository: per query (labels parquet=feature refs)
# its features parquet
HISTORICAL = """
import sys
import pandas as pd
from feast import FeatureStore
store = FeatureStore(repo_path=".")
# `feast apply` registered the entities too (materialize needs them)
assert {e.name for e in store.list_entities()} == {"user_id"}, store.list_entities()
for i, query in enumerate(sys.argv[2:]):
    labels, refs = query.split("=")
    out = store.get_historical_features(entity_df=pd.read_parquet(labels), features=refs.split(","))
    out.to_df().to_parquet(f"{sys.argv[1]}/out{i}.parquet")
"""


def T(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, day, hour)


# registration order matters: u1's T3 row arrives late (after T5), and u1 has two rows at
# T5 of which the one registered last (55) wins; u2's T10 row has null features
STATS = pl.DataFrame(
    {
        "user_id": [1, 1, 2, 1, 2, 4, 1, 5, None],
        "event_ts": [T(1), T(5), T(2), T(3), T(10), T(4, 12), T(5), None, T(1)],
        "clicks": [10, 50, 20, 30, None, 40, 55, 1, 2],
        "score": [0.1, 0.5, 0.2, 0.3, None, 0.4, 0.55, 1.0, 2.0],
        "tier": ["a", "b", "c", "d", None, "e", "f", "g", "h"],
    },
    schema_overrides={"clicks": pl.Int16, "score": pl.Float32},
)
PROFILE = pl.DataFrame(
    {
        "user_id": [1, 2, 1],
        "since": [dt.date(2024, 1, 1), dt.date(2024, 1, 1), dt.date(2024, 1, 6)],
        "age": [30, 40, 31],
        "active": [True, False, False],
        "weights": [[1.0, 2.0], [3.0], []],
        "seen": [T(1, 5), None, T(5, 6)],
    },
    schema_overrides={"age": pl.Int32},
)
# before, exactly at, after, TTL edge (3d, inclusive) and expiry, future-only values, an
# unknown entity, a duplicate label row, a late-arriving row, null keys
LABELS = pl.DataFrame(
    {
        "user_id": [1, 1, 2, 1, 1, 1, 2, 3, 1, 4, 1, None, 1, 5],
        "event_ts": [
            T(4),
            T(2),
            T(6),
            T(5),
            T(8),
            T(8, 1),
            T(10),
            T(5),
            T(2),
            T(4),
            T(3),
            T(5),
            None,
            T(9),
        ],
        "label": list(range(14)),
    },
    schema={"user_id": pl.Int64, "event_ts": pl.Datetime("us"), "label": pl.Int64},
)

# what the feature store's own rule gives for LABELS (checked first, then compared with Feast)
CLICKS = [30, 10, None, 55, 55, None, None, None, 10, None, 30, None, None, None]
AGES = [30, 30, 40, 30, 31, 31, 40, None, 30, None, 30, None, None, None]


def _register() -> None:
    mj.register_features("user_stats", STATS, entity="user_id", timestamp="event_ts", ttl="3d")
    mj.register_features("user_profile", PROFILE, entity="user_id", timestamp="since")
    # the same instants as user_stats, in another zone
    paris = STATS.with_columns(
        pl.col("event_ts").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Paris")
    )
    mj.register_features("user_clock", paris, entity="user_id", timestamp="event_ts", ttl="3d")


def _feast(repo: Path, tmp: Path, queries: list[tuple[pl.DataFrame, str, list[str]]]):
    """`feast apply` in `repo`, then per (labels, view, features) query Feast's
    get_historical_features, matched back to the labels' rows by (user_id, event_ts); a row
    Feast leaves out is nulls (see the module docstring)."""
    if not (FEAST_BIN / "feast").exists():
        pytest.fail(f"no Feast venv at {FEAST_BIN.parent}: run `make feast`")
    env = {"PATH": f"{FEAST_BIN}:/usr/bin:/bin", "HOME": str(tmp), "FEAST_USAGE": "False"}
    run = {"cwd": repo, "env": env, "capture_output": True, "text": True, "timeout": 120}
    proc = subprocess.run([str(FEAST_BIN / "feast"), "apply"], **run)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    args = []
    for i, (labels, view, cols) in enumerate(queries):
        labels.write_parquet(tmp / f"labels{i}.parquet")
        args.append(f"{tmp / f'labels{i}.parquet'}=" + ",".join(f"{view}:{c}" for c in cols))
    proc = subprocess.run([str(FEAST_BIN / "python"), "-c", HISTORICAL, str(tmp), *args], **run)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    keys = ["user_id", "event_ts"]
    outs = []
    for i, (labels, _, cols) in enumerate(queries):
        got = pl.read_parquet(tmp / f"out{i}.parquet")
        assert got.height <= labels.unique(keys).height  # duplicate label rows dropped
        dtype = labels.schema["event_ts"]
        ts = pl.col("event_ts").dt.convert_time_zone(dtype.time_zone or "UTC")
        got = got.with_columns(
            (ts if dtype.time_zone else ts.dt.replace_time_zone(None)).dt.cast_time_unit("us"),
            *(pl.col(c).fill_nan(None) for c in cols if got[c].dtype.is_float()),
        ).select(*keys, *cols)
        outs.append(labels.join(got, on=keys, how="left", maintain_order="left"))
    return outs


def _same(want: pl.DataFrame, got: pl.DataFrame) -> None:
    assert got.columns == want.columns
    for col in want.columns:
        a, b = want[col].to_list(), got[col].cast(want[col].dtype).to_list()
        assert a == b, (col, list(zip(want["label"], a, b)))


def test_feast_gives_the_training_set_rows(tmp_path):
    _register()
    repo = tmp_path / "feast_repo"
    assert cli(["features", "export", "--to-feast", str(repo)]) == 0
    assert "feast" not in sys.modules  # the export writes text and parquet only
    ours = mj.training_set(LABELS, FEATURES, timestamp="event_ts", record=False)
    assert ours["clicks"].to_list() == CLICKS
    assert ours["age"].to_list() == AGES
    sent = LABELS.drop_nulls(["user_id", "event_ts"])
    aware = sent.with_columns(
        pl.col("event_ts").dt.replace_time_zone("UTC").dt.convert_time_zone("America/New_York")
    )
    clock = mj.training_set(aware, ["user_clock:clicks"], record=False)
    assert clock["clicks"].to_list() == ours.drop_nulls(["user_id", "event_ts"])["clicks"].to_list()
    stats, profile, theirs_clock = _feast(
        repo,
        tmp_path,
        [
            (sent, "user_stats", ["clicks", "score", "tier"]),
            (sent, "user_profile", ["age", "active", "weights", "seen"]),
            (aware, "user_clock", ["clicks"]),
        ],
    )
    got = stats.join(profile, on="label", how="left", maintain_order="left").drop(
        "user_id_right", "event_ts_right"
    )
    _same(ours.drop_nulls(["user_id", "event_ts"]), got)
    _same(clock, theirs_clock)


def test_reexport_replaces_the_earlier_one(tmp_path, s3_url, monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", s3_url)  # offline data in object storage
    _register()
    read_offline.cache_clear()  # the copy is read back through the artifact store
    repo = tmp_path / "repo"
    first = export_feast(repo)
    assert sorted(first["views"]) == ["user_clock", "user_profile", "user_stats"]
    (repo / "data" / "registry.db").write_text("kept")  # Feast's own files stay
    again = export_feast(repo, ["user_stats@1"])
    assert again["views"] == ["user_stats"]
    assert not (repo / "data" / "user_profile.parquet").exists()
    assert not (repo / "data" / "user_clock.parquet").exists()
    assert (repo / "data" / "registry.db").read_text() == "kept"
    defs = (repo / "feature_repo.py").read_text()
    assert "name='user_stats'" in defs and "user_profile" not in defs
    assert json.loads((repo / "mlops_jupyter_export.json").read_text())["files"] == again["files"]
    # the copy: no null keys, one row per (entity, timestamp), the last registered
    copy = pl.read_parquet(repo / "data" / "user_stats.parquet")
    assert copy.height == 6 and copy.filter(pl.col("event_ts") == T(5))["clicks"].to_list() == [55]


def test_bad_input_is_refused_and_nothing_written(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(InvalidInputError, match="no feature views"):
        export_feast(tmp_path / "empty")
    _register()
    with pytest.raises(InvalidInputError, match="not empty and holds no earlier export"):
        export_feast(mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    odd = STATS.drop_nulls().with_columns(pl.col("clicks").cast(pl.UInt64))
    mj.register_features("odd", odd, entity="user_id", timestamp="event_ts")
    with pytest.raises(
        InvalidInputError, match=r"'clicks' of view 'odd' has dtype UInt64.*pl.Int64"
    ):
        export_feast(tmp_path / "out", ["odd"])
    assert not (tmp_path / "out").exists()
    dated = PROFILE.with_columns(pl.col("since").dt.date().alias("joined"))
    mj.register_features("dated", dated, entity="user_id", timestamp="since")
    with pytest.raises(
        InvalidInputError, match="'joined' of view 'dated' has dtype Date.*pl.Datetime"
    ):
        export_feast(tmp_path / "out", ["dated"])
    mj.register_features("user-stats.v2", STATS, entity="user_id", timestamp="event_ts")
    with pytest.raises(InvalidInputError, match="'user-stats.v2' cannot be a Feast feature view"):
        export_feast(tmp_path / "out", ["user-stats.v2"])
    with pytest.raises(InvalidInputError, match="Feast project name"):
        export_feast(tmp_path / "out", ["user_stats"], project="my-project")
    assert not (tmp_path / "out").exists()
    assert cli(["features", "export", "--to-feast", str(tmp_path / "x"), "--view", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
