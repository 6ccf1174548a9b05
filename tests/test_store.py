"""The SQLite store: discovery, migrations, refusing foreign files, compact encoding."""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlops_jupyter as mj
from mlops_jupyter.config import find_store_path
from mlops_jupyter.errors import NotAStoreError, StoreVersionError
from mlops_jupyter.store import codec, schema
from mlops_jupyter.store.sqlite import SqliteStore as Store
from mlops_jupyter.store.sqlite import migrate as sqlite_migrate


def test_discovery_walks_up_and_creates_in_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_JUPYTER_STORE")
    project = tmp_path / "proj"
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    (project / ".mlops").mkdir()
    monkeypatch.chdir(deep)
    assert find_store_path() == project / ".mlops" / "store.db"
    with mj.start_run("found"):
        pass
    assert (project / ".mlops" / "store.db").exists()
    elsewhere = tmp_path / "fresh"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert find_store_path() == elsewhere / ".mlops" / "store.db"
    with mj.start_run("new"):
        pass
    assert (elsewhere / ".mlops" / "store.db").exists()
    assert mj.runs()["name"].to_list() == ["new"]


def test_env_override_file_or_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(tmp_path / "custom.db"))
    assert find_store_path() == tmp_path / "custom.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(tmp_path))
    assert find_store_path() == tmp_path / "store.db"


def test_wal_mode_and_migrations_recorded(store_path):
    with mj.start_run():
        pass
    c = sqlite3.connect(store_path)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [r[0] for r in c.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m[0] for m in schema.ALL]


def test_old_schema_is_migrated_and_keeps_data(tmp_path):
    path = tmp_path / "old.db"
    c = sqlite3.connect(path, isolation_level=None)
    assert sqlite_migrate.migrate(c, upto=1) == [1]
    c.execute("INSERT INTO experiments(name, created) VALUES('legacy', 1.0)")
    c.execute(
        "INSERT INTO runs(uid, experiment_id, name, status, start_time, end_time) "
        "VALUES('abcdefabcdef', 1, 'old-run', 'finished', 1.0, 2.0)"
    )
    c.execute("INSERT INTO params VALUES(1, 'lr', '0.1')")
    c.close()
    mj.set_store(path)
    df = mj.runs()
    assert df["name"].to_list() == ["old-run"] and df["params.lr"].to_list() == [0.1]
    assert df["attempt"].to_list() == [1]  # column added by migration 2
    c = sqlite3.connect(path)
    assert {r[0] for r in c.execute("SELECT version FROM schema_migrations")} == {
        m[0] for m in schema.ALL
    }


def _digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_text_file_is_refused_untouched(tmp_path):
    p = tmp_path / "notes.db"
    p.write_bytes(b"these are my notes, not a database\n" * 10)
    before = _digest(p)
    with pytest.raises(NotAStoreError, match="not an mlops-jupyter store"):
        Store(p)
    mj.set_store(None)
    with pytest.raises(NotAStoreError):
        mj.set_store(p)
    assert _digest(p) == before
    assert not (tmp_path / "notes.db-wal").exists()


def test_foreign_sqlite_is_refused_untouched(tmp_path):
    p = tmp_path / "other.db"
    c = sqlite3.connect(p)
    c.execute("CREATE TABLE customers(id INTEGER, name TEXT)")
    c.execute("INSERT INTO customers VALUES(1, 'x')")
    c.commit()
    c.close()
    before = _digest(p)
    with pytest.raises(NotAStoreError, match="another application"):
        Store(p)
    assert _digest(p) == before


def test_newer_schema_is_refused(tmp_path):
    p = tmp_path / "future.db"
    Store(p).close()
    c = sqlite3.connect(p)
    c.execute("INSERT INTO schema_migrations VALUES(9999, 'from the future', 0)")
    c.commit()
    c.close()
    with pytest.raises(StoreVersionError, match="newer"):
        Store(p)


def test_directory_as_store_file_is_refused(tmp_path):
    d = tmp_path / "x.db"
    d.mkdir()
    with pytest.raises(NotAStoreError):
        Store(d)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**40),
            st.integers(0, 2**45),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
        min_size=1,
        max_size=300,
    )
)
def test_codec_round_trip(points):
    steps = np.array([p[0] for p in points], np.int64)
    ts = np.array([p[1] for p in points], np.int64)
    vals = np.array([p[2] for p in points], np.float64)
    s2, t2, v2 = codec.decode(codec.encode(steps, ts, vals))
    assert np.array_equal(s2, steps) and np.array_equal(t2, ts)
    assert np.array_equal(v2, vals, equal_nan=True)


def test_bytes_per_point_is_small(store_path):
    rng = np.random.default_rng(0)
    with mj.start_run():
        for i, v in enumerate(rng.random(50_000)):
            mj.log_metric("loss", float(v), step=i)
    c = sqlite3.connect(store_path)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute("VACUUM")
    c.close()
    per_point = store_path.stat().st_size / 50_000
    assert per_point < 40, per_point


def _encode_v1(steps, ts, vals):
    """The first chunk format (one zlib stream), as older stores hold it."""
    import struct
    import zlib

    ds = np.diff(steps, prepend=np.int64(0)).astype("<i8")
    dt = np.diff(ts, prepend=np.int64(0)).astype("<i8")
    raw = struct.pack("<I", len(vals)) + ds.tobytes() + dt.tobytes() + vals.astype("<f8").tobytes()
    return zlib.compress(raw, 1)


def test_codec_reads_v1_chunks():
    steps = np.arange(10, dtype=np.int64) * 3
    ts = np.arange(10, dtype=np.int64) + 1_700_000_000_000
    vals = np.linspace(0, 1, 10)
    vals[3] = np.nan
    s2, t2, v2 = codec.decode(_encode_v1(steps, ts, vals))
    assert np.array_equal(s2, steps) and np.array_equal(t2, ts)
    assert np.array_equal(v2, vals, equal_nan=True)
    s3, _, v3 = codec.decode_many([_encode_v1(steps, ts, vals), codec.encode(steps, ts, vals)])
    assert len(s3) == 20 and np.array_equal(v3[10:], vals, equal_nan=True)
