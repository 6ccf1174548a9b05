"""Data versions: fingerprints, profiles, dedupe, store round trips, lineage."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from data_helpers import frame
from hypothesis import given, settings
from hypothesis import strategies as st

import mlops_jupyter as mj
from mlops_jupyter.data import fingerprint as fpr
from mlops_jupyter.data import profile as prof
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.store import data as dstore
from mlops_jupyter.tracking.api import current_store

FP_SCRIPT = """
import sys, json, numpy as np, polars as pl
sys.path.insert(0, {root!r})
from mlops_jupyter.data import fingerprint as f
df = pl.DataFrame({{"a": [1, 2, None], "s": ["x", None, "zz"], "f": [0.5, float("nan"), 2.0]}})
print(json.dumps([f.frame_fingerprint(df), f.array_fingerprint(np.arange(10.0).reshape(2, 5)),
                  f.file_fingerprint({path!r})]))
"""


def _fps(tmp_path) -> list[str]:
    df = pl.DataFrame({"a": [1, 2, None], "s": ["x", None, "zz"], "f": [0.5, float("nan"), 2.0]})
    return [
        fpr.frame_fingerprint(df),
        fpr.array_fingerprint(np.arange(10.0).reshape(2, 5)),
        fpr.file_fingerprint(tmp_path / "blob.bin"),
    ]


def test_fingerprints_are_stable_across_processes(tmp_path):
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 5000)
    here = _fps(tmp_path)
    root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
    script = FP_SCRIPT.format(root=root, path=str(tmp_path / "blob.bin"))
    for seed in ("0", "123"):  # a different hash seed must not matter
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        )
        assert json.loads(out.stdout) == here
    assert all(f.startswith(fpr.ALGO + ":") for f in here)


def test_fingerprint_changes_when_one_value_changes(tmp_path):
    df = frame(2000, seed=1)
    base = fpr.frame_fingerprint(df)
    assert fpr.frame_fingerprint(frame(2000, seed=1)) == base
    changed = df.with_columns(
        pl.when(pl.col("id") == 777).then(0.0).otherwise(pl.col("x0")).alias("x0")
    )
    assert fpr.frame_fingerprint(changed) != base
    s_changed = df.with_columns(
        pl.when(pl.col("id") == 5).then(pl.lit("zz")).otherwise(pl.col("c0")).alias("c0")
    )
    assert fpr.frame_fingerprint(s_changed) != base
    assert fpr.frame_fingerprint(df.rename({"x0": "y0"})) != base  # names are content
    assert fpr.frame_fingerprint(df.with_columns(pl.col("id").cast(pl.Int32))) != base
    # string boundaries matter: ["ab", "c"] is not ["a", "bc"]
    a = pl.DataFrame({"s": ["ab", "c"]})
    b = pl.DataFrame({"s": ["a", "bc"]})
    assert fpr.frame_fingerprint(a) != fpr.frame_fingerprint(b)
    # null vs empty string differ
    assert fpr.frame_fingerprint(pl.DataFrame({"s": [None, "x"]})) != fpr.frame_fingerprint(
        pl.DataFrame({"s": ["", "x"]})
    )
    arr = np.arange(1000.0)
    arr2 = arr.copy()
    arr2[500] += 1e-9
    assert fpr.array_fingerprint(arr) != fpr.array_fingerprint(arr2)
    p = tmp_path / "f.bin"
    p.write_bytes(b"\0" * 100_000)
    f1 = fpr.file_fingerprint(p)
    with open(p, "r+b") as fh:
        fh.seek(54_321)
        fh.write(b"\1")
    assert fpr.file_fingerprint(p) != f1


def test_directory_fingerprint_covers_names_and_contents(tmp_path):
    d = tmp_path / "ds"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("hello")
    (d / "sub" / "b.txt").write_text("world")
    (d / ".hidden").write_text("ignored")
    fp, files = fpr.dir_fingerprint(d)
    assert [f["path"] for f in files] == ["a.txt", "sub/b.txt"]
    (d / ".hidden").write_text("still ignored")
    assert fpr.dir_fingerprint(d)[0] == fp
    (d / "sub" / "b.txt").write_text("World")
    assert fpr.dir_fingerprint(d)[0] != fp
    (d / "sub" / "b.txt").write_text("world")
    assert fpr.dir_fingerprint(d)[0] == fp
    (d / "sub" / "b.txt").rename(d / "sub" / "c.txt")
    assert fpr.dir_fingerprint(d)[0] != fp


def test_blake2b_fallback_when_xxhash_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(fpr, "xxhash", None)
    monkeypatch.setattr(fpr, "ALGO", "blake2b_128")
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc" * 1000)
    f = fpr.file_fingerprint(p, use_cache=False)
    assert f.startswith("blake2b_128:") and len(f.split(":")[1]) == 32


def test_sketch_quantiles_are_exact():
    r = np.random.default_rng(3)
    for x in (
        r.normal(size=120_000),
        r.lognormal(size=50_000),
        r.integers(0, 5, 60_000).astype(float),  # heavy ties
        np.r_[r.normal(size=30_000), 1e15],  # an extreme outlier
        r.normal(size=500),
    ):
        bn = prof.binned(x) if len(x) > 1000 else None
        ranks = np.unique(np.linspace(0, len(x) - 1, 333).astype(np.int64))
        np.testing.assert_array_equal(prof.order_stats(x, ranks, bn), np.sort(x)[ranks])
        sk = prof.sketch(x, bn=bn)  # numpy's "linear" quantiles, up to float rounding
        want = np.quantile(x, np.linspace(0, 1, prof.SKETCH_POINTS))
        np.testing.assert_allclose(sk, want, rtol=1e-12, atol=1e-300)


def test_profile_contents():
    df = frame(5000, seed=2).with_columns(
        pl.when(pl.col("id") < 10).then(None).otherwise(pl.col("x1")).alias("x1"),
        pl.col("id").cast(pl.Datetime("ms")).alias("t"),
        (pl.col("id") % 2 == 0).alias("even"),
    )
    profs, _ = prof.frame_profile(df)
    by = {p["name"]: p for p in profs}
    x1 = by["x1"]
    assert x1["kind"] == "numeric" and x1["nulls"] == 10 and x1["count"] == 4990
    vals = df["x1"].drop_nulls().to_numpy()
    assert x1["min"] == vals.min() and x1["max"] == vals.max()
    assert x1["mean"] == pytest.approx(vals.mean()) and x1["std"] == pytest.approx(vals.std(ddof=1))
    assert x1["quantiles"]["p50"] == pytest.approx(np.median(vals))
    assert len(x1["sketch"]) == prof.SKETCH_POINTS
    assert sum(x1["hist"]["counts"]) == pytest.approx(4990, abs=prof.HIST_BINS)
    c0 = by["c0"]
    assert c0["kind"] == "categorical" and c0["n_unique"] == 4
    assert [v for v, _ in c0["top"]][0] == "a" and sum(n for _, n in c0["top"]) == 5000
    assert by["t"]["kind"] == "datetime" and by["t"]["unit"] == "ms"
    assert by["even"]["kind"] == "boolean" and by["even"]["n_unique"] == 2


def test_version_dedupes_and_round_trips_through_the_store():
    df = frame(3000, seed=4)
    v1 = mj.version(df, name="train")
    assert v1.is_new and v1.n_rows == 3000 and v1.n_cols == 6 and v1.kind == "polars"
    v2 = mj.version(frame(3000, seed=4), name="train")
    assert v2.id == v1.id and not v2.is_new
    assert mj.version(frame(3000, seed=5)).id != v1.id
    # the stored profile is exactly the computed one
    computed, _ = prof.frame_profile(df)
    stored = mj.data.get_version(v1.id)
    assert stored.profile == json.loads(json.dumps(computed))
    assert mj.data.get_version("train").id == v1.id
    assert mj.data.get_version(v1.id[:6]).id == v1.id
    assert mj.data.get_version(v1.fingerprint).id == v1.id
    assert set(mj.data.versions()["id"]) >= {v1.id}
    assert "x0" in v1._repr_html_() and v1.profile_frame().height == 6
    with pytest.raises(mj.data.DataVersionNotFoundError):
        mj.data.get_version("no-such-data")


def test_pandas_numpy_files_and_dirs(tmp_path):
    pd = pytest.importorskip("pandas")
    df = frame(1000, seed=6)
    pdf = df.to_pandas()
    vp = mj.version(pdf, name="pandas")
    assert vp.kind == "pandas" and vp.n_rows == 1000
    assert vp.id == mj.version(df).id  # same content, same version
    assert mj.version(pdf.set_index("id")).id != vp.id  # a real index is content
    va = mj.version(np.arange(12.0).reshape(4, 3), name="arr")
    assert va.kind == "numpy" and va.n_cols == 3 and va.n_rows == 4
    csv = tmp_path / "d.csv"
    df.write_csv(csv)
    vf = mj.version(csv)
    assert vf.kind == "file" and vf.name == "d.csv" and vf.n_rows == 1000
    assert vf.size_bytes == csv.stat().st_size and vf.profile is not None
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.bin").write_bytes(b"1")
    vd = mj.version(d)
    assert vd.kind == "dir" and vd.n_rows == 1 and vd.schema[0]["name"] == "a.bin"
    assert pd is not None


def test_bad_input_is_rejected(tmp_path):
    with pytest.raises(InvalidInputError):
        mj.version({"a": 1})
    with pytest.raises(InvalidInputError):
        mj.version(tmp_path / "missing.csv")
    with pytest.raises(InvalidInputError):
        mj.version(frame(10, 1), role="sideways")
    with pytest.raises(InvalidInputError):
        mj.version(frame(10, 1), name="")


def test_lineage_links_runs_through_data():
    raw = frame(500, seed=7)
    with mj.start_run("prepare") as prep:
        mj.version(raw, name="raw")
        feats = raw.with_columns((pl.col("x0") * 2).alias("x0x2"))
        vf = mj.version(feats, name="features", role="output")
    with mj.start_run("train") as train:
        mj.version(feats, name="features")  # same content: the same version
        mj.version(np.zeros(3), name="weights", role="output")
    lin = mj.lineage(train)
    assert [v["name"] for v in lin.inputs] == ["features"]
    assert lin.inputs[0]["id"] == vf.id
    assert [r["run_name"] for r in lin.upstream] == ["prepare"]
    assert [v["name"] for v in lin.outputs] == ["weights"]
    up = mj.lineage(prep.id)
    assert [r["run_name"] for r in up.downstream] == ["train"]
    assert {v["name"] for v in up.inputs} == {"raw"}
    fr = lin.to_frame()
    assert fr["role"].to_list() == ["input", "output"] and fr["runs"][0].to_list() == [prep.id]
    assert "prepare" in lin._repr_html_()
    assert mj.lineage().run["name"] == "train"  # no active run: the latest
    users = mj.data.runs_for(vf)
    assert sorted(zip(users["run_name"], users["role"])) == [
        ("prepare", "output"),
        ("train", "input"),
    ]
    # the server/sidebar API
    rows = dstore.versions_for_run(current_store(), train._rid)
    assert [(r["name"], r["role"]) for r in rows] == [("features", "input"), ("weights", "output")]
    assert rows[0]["schema"][0] == {"name": "id", "dtype": "Int64", "kind": "numeric"}
    assert "profile" not in rows[0] and "_id" not in rows[0]


def test_rest_queries_serve_versions_and_drift():
    api_queries = pytest.importorskip("mlops_jupyter.store.api_queries")
    with mj.start_run("served") as run:
        mj.version(frame(300, 8), name="served-data")
        mj.drift(frame(300, 8), frame(300, 9, shift=2.0))
    st = current_store()
    (v,) = api_queries.data_versions(st, run._rid)
    assert v["name"] == "served-data" and v["role"] == "input"
    (d,) = api_queries.drift(st, run._rid)
    assert d["run_id"] == run.id and "x0" in [c["column"] for c in d["columns"] if c["drifted"]]
    json.dumps(d, allow_nan=False)  # strict JSON for the front end


def test_known_content_is_linked_without_profiling_again(monkeypatch):
    df = frame(4000, 9)
    first = mj.version(df, name="once")
    calls = []
    real = prof.frame_profile
    monkeypatch.setattr(
        "mlops_jupyter.data.catalog.frame_profile",
        lambda *a, **k: calls.append(1) or real(*a, **k),
    )
    with mj.start_run("linker") as run:
        again = mj.version(frame(4000, 9), name="once-more")
    assert again.id == first.id and not again.is_new and calls == []
    assert again.profile == first.profile
    assert [v["name"] for v in mj.lineage(run).inputs] == ["once-more"]


def test_pandas_index_is_part_of_the_version():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"id": [7, 3, 5], "x": [0.5, 1.5, 2.5]})
    plain = mj.version(df)
    by_id = mj.version(df.set_index("id"))
    assert by_id.id != plain.id
    # the same index built another way is the same content, the same version
    same = pd.DataFrame({"x": [0.5, 1.5, 2.5]}, index=pd.Index([7, 3, 5], name="id"))
    assert mj.version(same).id == by_id.id
    # index names and values both count
    assert mj.version(same.rename_axis("key")).id != by_id.id
    assert mj.version(same.rename(index={5: 6})).id != by_id.id
    xs = df[["x"]]
    assert mj.version(xs.set_index(pd.Index([7, 3, 5]))).id != mj.version(xs).id
    assert mj.version(xs.set_index(pd.RangeIndex(1, 4))).id != mj.version(xs).id
    assert mj.version(df.set_index(["id", "x"])).id != mj.version(df.set_index(["x", "id"])).id
    s = pd.Series([1.0, 2.0], name="v")
    assert mj.version(s).id != mj.version(s.set_axis(["a", "b"])).id


def test_default_index_keeps_its_version_id():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, np.nan, -2.0]})
    v = mj.version(df)
    if fpr.ALGO == "xxh3_128":  # the id every earlier release gave this frame
        assert v.fingerprint == "xxh3_128:3d793a1c230a59ad721f17069261a46b"
    assert v.id == mj.version(pl.from_pandas(df)).id
    # 0, 1, 2 as plain integer labels are the default index too
    assert mj.version(df.set_axis(pd.Index([0, 1, 2]))).id == v.id


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-5, 5), st.floats(allow_nan=False, width=32)), max_size=8),
    st.sampled_from(["k", "x"]),
)
def test_set_index_never_shares_a_version(rows, col):
    pd = pytest.importorskip("pandas")
    from mlops_jupyter.data.catalog import identity

    df = pd.DataFrame(rows, columns=["k", "x"])
    if df.empty:
        df = df.astype({"k": "int64", "x": "float64"})

    def fp(o):
        return identity(o, prof.to_polars(o))[1]

    indexed = df.set_index(col)
    assert fp(indexed) != fp(df)
    assert fp(indexed) == fp(df.set_index(col))
    assert fp(indexed) != fp(indexed.rename_axis("other"))


def test_second_name_for_stored_content_is_reported():
    df = frame(50, seed=3)
    first = mj.version(df, name="a")
    with pytest.warns(RuntimeWarning, match=f"already stored as data version {first.id} named 'a'"):
        again = mj.version(df, name="b")
    assert again.id == first.id and again.name == "a"
    # inside a run the run's link records the new name, and it resolves
    with mj.start_run("uses-b"):
        mj.version(df, name="b")
    assert mj.data.get_version("b").id == first.id
