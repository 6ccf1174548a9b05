"""Autolog: files read with polars/pandas inside a run become its inputs; nothing is
patched outside runs; pandas is never imported by us; it can be turned off."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import polars as pl
import pytest
from data_helpers import ROOT, frame

import mlops_jupyter as mj
from mlops_jupyter.data import autolog


def _inputs(run) -> list[tuple[str, int | None]]:
    return [(v["name"], v.get("n_rows")) for v in mj.lineage(run).inputs]


def test_polars_reads_are_versioned_inside_runs_only(tmp_path):
    df = frame(1000, 1)
    df.write_csv(tmp_path / "train.csv")
    df.write_parquet(tmp_path / "train.parquet")
    df.head(10).write_parquet(tmp_path / "part-1.parquet")
    original = pl.read_csv
    pl.read_csv(tmp_path / "train.csv")  # no run: nothing recorded, nothing patched
    assert pl.read_csv is original and not autolog.active()
    with mj.start_run("reads") as run:
        assert autolog.active() and pl.read_csv is not original
        a = pl.read_csv(tmp_path / "train.csv")
        pl.read_csv(str(tmp_path / "train.csv"))  # same file again: one input
        pl.read_parquet(tmp_path / "train.parquet")
        lazy = pl.scan_parquet(str(tmp_path / "part-*.parquet"))
        assert lazy.collect().height == 10
    assert pl.read_csv is original and not autolog.active()
    assert a.height == 1000
    got = dict(_inputs(run))
    assert got == {"train.csv": 1000, "train.parquet": 1000, "part-1.parquet": None}
    v = mj.data.get_version("train.csv")
    assert v.kind == "file" and v.profile is not None and v.size_bytes > 0
    # the same file read by another run is the same version
    with mj.start_run("again") as run2:
        pl.read_csv(tmp_path / "train.csv")
    assert mj.lineage(run2).inputs[0]["id"] == v.id


def test_scan_then_read_fills_in_the_profile(tmp_path):
    frame(200, 2).write_csv(tmp_path / "d.csv")
    with mj.start_run("lazy"):
        pl.scan_csv(tmp_path / "d.csv").collect()
        assert mj.data.get_version("d.csv").profile is None
        pl.read_csv(tmp_path / "d.csv")
    assert mj.data.get_version("d.csv").profile is not None


def test_nested_runs_keep_the_patch_until_the_last_ends(tmp_path):
    frame(20, 3).write_csv(tmp_path / "n.csv")
    with mj.start_run("outer") as outer:
        with mj.start_run("inner") as inner:
            pl.read_csv(tmp_path / "n.csv")
        assert autolog.active()
        pl.read_csv(tmp_path / "n.csv")
    assert not autolog.active()
    assert _inputs(inner) == [("n.csv", 20)] and _inputs(outer) == [("n.csv", 20)]


def test_disabled_by_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_AUTOLOG_DATA", "0")
    frame(20, 3).write_csv(tmp_path / "off.csv")
    with mj.start_run("off") as run:
        assert not autolog.active()
        pl.read_csv(tmp_path / "off.csv")
    assert _inputs(run) == []


def test_read_errors_propagate_and_odd_sources_are_skipped(tmp_path):
    import io

    with mj.start_run("odd") as run:
        with pytest.raises(FileNotFoundError):
            pl.read_csv(tmp_path / "missing.csv")
        assert pl.read_csv(io.BytesIO(b"a,b\n1,2\n")).height == 1  # a buffer: not versioned
    assert _inputs(run) == []


def test_pandas_is_patched_only_when_imported_and_after_import(tmp_path):
    """In a fresh interpreter: attach must not import pandas; importing pandas during a run
    patches it; after the run everything is restored."""
    pytest.importorskip("pandas")
    frame(30, 4).write_csv(tmp_path / "p.csv")
    frame(30, 4).write_parquet(tmp_path / "p.parquet")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import mlops_jupyter as mj
        mj.set_store({str(tmp_path / "s.db")!r})
        with mj.start_run("pd") as run:
            assert "pandas" not in sys.modules, "attach imported pandas"
            import pandas as pd
            orig = pd.read_csv.__wrapped__
            df = pd.read_csv({str(tmp_path / "p.csv")!r})
            pd.read_parquet({str(tmp_path / "p.parquet")!r})
        assert pd.read_csv is orig, "pandas not restored"
        print(sorted((v["name"], v["n_rows"]) for v in mj.lineage(run).inputs))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[('p.csv', 30), ('p.parquet', 30)]"


def test_attach_imports_no_dataframe_library_and_patches_polars_imported_later(tmp_path):
    frame(12, 5).write_csv(tmp_path / "late.csv")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import mlops_jupyter.data.autolog as autolog
        assert "polars" not in sys.modules and "pandas" not in sys.modules

        class FakeRun:  # attach() only needs to register an end callback
            def on_end(self, callback):
                return lambda: None

        run = FakeRun()
        autolog.attach(run)
        assert "polars" not in sys.modules and "pandas" not in sys.modules
        import polars as pl
        assert getattr(pl.read_csv, "_mlops_wrapped", False), "polars imported later not patched"
        autolog._detach(run, "finished")
        assert not getattr(pl.read_csv, "_mlops_wrapped", False)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_failure_to_record_only_warns(tmp_path, monkeypatch):
    """A frame polars cannot take (mixed int/str objects) must not break the user's read."""
    pd = pytest.importorskip("pandas")
    (tmp_path / "mixed.csv").write_text("a\n1\nx\n2\n")
    monkeypatch.setattr(autolog, "_warned", False)
    with mj.start_run("mixed") as run:
        with pytest.warns(RuntimeWarning, match="could not profile data read by pandas.read_csv"):
            df = pd.read_csv(
                tmp_path / "mixed.csv", converters={"a": lambda v: int(v) if v.isdigit() else v}
            )
    assert df["a"].tolist() == [1, "x", 2]
    assert _inputs(run) == [("mixed.csv", None)]  # the file is still versioned
