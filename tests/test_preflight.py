"""Preflight checks: each check passes and fails, raise vs warn, results recorded on the run,
and a failure stops a `%%mlops_run` cell in a real kernel."""

from __future__ import annotations

import warnings

import polars as pl
import pytest
from data_helpers import frame, run_notebook, text_of

import mlops_jupyter as mj
from mlops_jupyter.data import PreflightError
from mlops_jupyter.errors import InvalidInputError


def _df() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "age": [20, 35, 41, 18, 99, 63],
            "score": [0.1, 0.5, None, 0.3, float("nan"), 0.9],
            "label": ["a", "a", "a", "a", "a", "b"],
        }
    )


@pytest.mark.filterwarnings("ignore:preflight checks failed")
def test_every_data_check_passes_and_fails():
    df = _df()
    good = mj.preflight(
        df,
        min_rows=5,
        not_null=["id", "age"],
        schema={"id": "integer", "age": pl.Int64, "label": "string", "score": "Float64"},
        ranges={"age": (0, 120), "id": (1, None)},
        unique="id",
        class_balance=("label", 0.1),
    )
    assert good.passed and len(good.checks) == 11
    bad = mj.preflight(
        df,
        min_rows=100,
        not_null=True,
        schema={"id": "string", "missing": None},
        ranges={"age": (18, 65)},
        unique=["label"],
        class_balance=("label", 0.3),
        on_fail="warn",
    )
    failed = {c.name: c.detail for c in bad.failed}
    assert "6 rows (need >= 100)" in failed["min_rows"]
    assert failed["not_null:score"] == "2 null/NaN values"  # NaN counts as missing
    assert "not_null:id" not in failed
    assert (
        "expected string" in failed["schema:id"] and failed["schema:missing"] == "column is missing"
    )
    assert failed["range:age"].startswith("1 values outside [18, 65]")
    assert "unique:label" in failed
    assert "rarest 'b' is 16.7%" in failed["class_balance:label"]


@pytest.mark.filterwarnings("ignore:preflight checks failed")
def test_machine_checks():
    ok = mj.preflight(min_disk_gb=0.001, min_memory_gb=0.001)
    assert ok.passed and [c.name for c in ok.checks] == ["disk_space", "memory"]
    r = mj.preflight(min_disk_gb=1e9, min_memory_gb=1e9, on_fail="warn")
    assert {c.name for c in r.failed} == {"disk_space", "memory"}
    gpu = mj.preflight(min_gpu_memory_gb=0.001, on_fail="warn")
    assert gpu.checks[0].name == "gpu_memory"  # passes on a GPU machine, "no GPU found" else


def test_failures_raise_with_a_readable_report_or_warn(monkeypatch):
    df = frame(50, 1)
    with pytest.raises(PreflightError) as e:
        mj.preflight(df, min_rows=1000, unique="id")
    msg = str(e.value)
    assert "FAIL  min_rows" in msg and "PASS  unique:id" in msg and "1 passed, 1 failed" in msg
    assert not e.value.report.passed
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rep = mj.preflight(df, min_rows=1000, on_fail="warn")
    assert not rep.passed and any("preflight checks failed" in str(x.message) for x in w)
    monkeypatch.setenv("MLOPS_JUPYTER_PREFLIGHT", "warn")
    with pytest.warns(RuntimeWarning):
        mj.preflight(df, min_rows=1000)
    assert "FAIL" in rep._repr_html_()


def test_results_are_recorded_on_the_run():
    with pytest.raises(PreflightError):
        with mj.start_run("gated") as run:
            mj.preflight(frame(10, 1), min_rows=100)
            mj.log(loss=1.0)  # never reached
    info = mj.get_run(run.id)
    assert info["status"] == "failed"
    assert info["tags"]["preflight"] == "failed"
    (ev,) = [e for e in info["events"] if e["kind"] == "preflight"]
    assert ev["level"] == "error" and ev["data"]["checks"][0]["name"] == "min_rows"
    assert "loss" not in info["metrics"]
    with mj.start_run("ok") as run2:
        mj.preflight(frame(10, 1), min_rows=5)
    info2 = mj.get_run(run2.id)
    assert info2["status"] == "finished" and info2["tags"]["preflight"] == "passed"


def test_bad_arguments():
    with pytest.raises(InvalidInputError):
        mj.preflight(frame(10, 1))  # nothing to check
    with pytest.raises(InvalidInputError):
        mj.preflight(min_rows=3)  # data check without data
    with pytest.raises(InvalidInputError):
        mj.preflight(frame(10, 1), min_rows=-1)
    with pytest.raises(InvalidInputError):
        mj.preflight(frame(10, 1), ranges={"x0": 5})
    with pytest.raises(InvalidInputError):
        mj.preflight(frame(10, 1), min_rows=1, on_fail="ignore")


@pytest.mark.timeout(180)
def test_preflight_failure_stops_an_mlops_run_cell_in_a_real_kernel(tmp_path, store_path):
    cells = [
        "%load_ext mlops_jupyter",
        "import polars as pl\nimport mlops_jupyter as mj\n"
        "df = pl.DataFrame({'id': [1, 2, 2], 'y': [0.1, None, 0.3]})",
        "%%mlops_run gated --no-live\n"
        "mj.preflight(df, min_rows=10, unique='id', not_null=['y'])\n"
        "print('TRAINING STARTED')",
        "print('next cell ran')",
    ]
    nb = run_notebook(cells, tmp_path, allow_errors=True)
    out = text_of(nb.cells[2])
    assert "PreflightError" in out and "FAIL  min_rows" in out and "FAIL  unique:id" in out
    printed = [o.get("text", "") for o in nb.cells[2].outputs if o["output_type"] == "stream"]
    assert not any("TRAINING STARTED" in t for t in printed)
    mj.set_store(store_path)
    runs = mj.runs()
    row = runs.filter(pl.col("name") == "gated")
    assert row["status"].to_list() == ["failed"]
    info = mj.get_run(row["id"][0])
    assert info["tags"]["preflight"] == "failed"
    assert [e["level"] for e in info["events"] if e["kind"] == "preflight"] == ["error"]


@pytest.mark.timeout(180)
def test_data_magics_in_a_real_kernel(tmp_path, store_path):
    cells = [
        "%load_ext mlops_jupyter",
        "import numpy as np, polars as pl\n"
        "r = np.random.default_rng(0)\n"
        "train = pl.DataFrame({'x': r.normal(size=3000), 'k': r.choice(['a', 'b'], 3000)})\n"
        "live = pl.DataFrame({'x': r.normal(1.0, 1, size=3000), 'k': r.choice(['a', 'b'], 3000)})",
        "%%mlops_run magics --no-live\n%mlops_version train --name train-set\n"
        "%mlops_preflight train --min-rows 100 --not-null all --range x=-10:10 --balance k=0.2 --min-disk-gb 0.001",
        "rep = %mlops_drift train live\nprint(rep.drifted_columns)",
        "%mlops_drift train-set live --num-method ks --cat-method chisquare --no-store",
        "%mlops_preflight train --min-rows 1000000 --warn",
        "print(get_ipython().find_line_magic('mlops_preflight').__doc__)",
    ]
    nb = run_notebook(cells, tmp_path)
    assert "['x']" in text_of(nb.cells[3])
    html = text_of(nb.cells[4])
    assert "Data drift" in html and "chisquare" in html and "profile mode" in html
    assert "FAIL" in text_of(nb.cells[5])
    assert "--min-rows" in text_of(nb.cells[6])
    mj.set_store(store_path)
    lin = mj.lineage("magics")
    assert [v["name"] for v in lin.inputs] == ["train-set"]
    assert mj.get_run("magics")["tags"]["preflight"] == "passed"
