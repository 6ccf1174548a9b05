"""Exported pipelines run for real: the notebook in a real kernel (nbclient), the pipeline
as `python -m PKG` subprocesses, both tracked in the same SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from export_helpers import (
    NOTEBOOKS,
    ROOT,
    execute_notebook,
    kernel_env,
    make_nb,
    pipeline_runs,
    points,
    run_pipeline,
)

import mlops_jupyter as mj
from mlops_jupyter.export import export_notebook


def _notebook_run(name: str) -> dict:
    rows = [r for r in mj.runs().to_dicts() if r["name"] == name and r["parent_id"] is None]
    assert len(rows) == 1, rows
    return mj.get_run(rows[0]["id"])


def test_example_pipeline_matches_notebook_then_caches_then_reruns_downstream(
    tmp_path, monkeypatch
):
    kernel_env(monkeypatch)
    nb_path = NOTEBOOKS / "pipeline_example.ipynb"
    execute_notebook(nb_path, tmp_path)
    nb_run = _notebook_run("pipeline-example")
    assert nb_run["status"] == "finished"

    res = export_notebook(nb_path, tmp_path / "example_pipe", source_run=nb_run["id"])
    first = run_pipeline(res.path)
    assert "[4/4] evaluate done" in first.stderr
    parents, children = pipeline_runs()
    assert len(parents) == 1
    parent = parents[0]
    assert parent["status"] == "finished"
    assert parent["tags"]["mlops.source_run"] == nb_run["id"]
    assert parent["experiment"] == nb_run["experiment"]
    assert parent["params"]["lr"] == 0.1
    stages = children[parent["id"]]
    assert [s["tags"]["mlops.stage"] for s in stages] == ["load", "prep", "train", "evaluate"]
    # a stage run keeps the name the notebook gave its run, so code that refers to runs
    # by name (mj.get_run("pipeline-example"), lineage...) still finds them
    assert [s["name"] for s in stages] == ["load", "prep", "pipeline-example", "evaluate"]
    assert all(s["status"] == "finished" for s in stages)
    # same seeds, same code: the pipeline logs exactly the notebook's metrics
    nb_points = points([nb_run["id"]])
    assert set(nb_points) == {"train_mse", "test_mse", "w_error"}
    assert points([s["id"] for s in stages]) == nb_points
    assert len(nb_points["train_mse"]) == 30
    # the pipeline run gathers its stages' metrics: it compares 1:1 with the notebook run
    assert points([parent["id"]]) == nb_points

    # nothing changed: nothing runs, and the cached stage runs still show their metrics
    cache = res.path / ".cache"
    before = sorted(p for p in cache.rglob("*") if p.is_file())
    second = run_pipeline(res.path)
    assert "0 run, 4 cached" in second.stderr and " done in " not in second.stderr
    assert "test mse" not in second.stdout  # evaluate's print did not run again
    parents, children = pipeline_runs()
    stages2 = children[parents[-1]["id"]]
    assert [s["tags"]["mlops.cache"] for s in stages2] == ["hit"] * 4
    assert stages2[2]["tags"]["mlops.cached_from"] == stages[2]["id"]
    assert points([s["id"] for s in stages2]) == nb_points
    assert points([parents[-1]["id"]]) == nb_points
    assert sorted(p for p in cache.rglob("*") if p.is_file() and p.name != "last_run.json") == [
        p for p in before if p.name != "last_run.json"
    ]

    # a param read only by `train` re-runs train and what depends on it, nothing upstream
    third = run_pipeline(res.path, "--param", "lr=0.05")
    assert "load     cached" in third.stderr and "prep     cached" in third.stderr
    assert "train    done" in third.stderr and "evaluate done" in third.stderr
    parents, children = pipeline_runs()
    stages3 = children[parents[-1]["id"]]
    assert [s["tags"]["mlops.cache"] for s in stages3] == ["hit", "hit", "miss", "miss"]
    assert parents[-1]["params"]["lr"] == 0.05
    assert points([stages3[2]["id"]])["train_mse"] != nb_points["train_mse"]

    # forcing one stage re-runs it; its outputs are identical, so downstream stays cached
    forced = run_pipeline(res.path, "--force", "train")
    assert "train    done" in forced.stderr and "evaluate cached" in forced.stderr
    assert "load     cached" in forced.stderr

    # a bad override or stage name is a clear error
    bad = run_pipeline(res.path, "--param", "epochs=ten", check=False)
    assert bad.returncode == 2 and "expected an integer" in bad.stderr
    bad = run_pipeline(res.path, "--param", "nope=1", check=False)
    assert bad.returncode == 2 and "unknown parameter 'nope'" in bad.stderr
    bad = run_pipeline(res.path, "--force", "trian", check=False)
    assert bad.returncode == 2 and "no stage named ['trian']" in bad.stderr
    listing = run_pipeline(res.path, "--list").stdout
    assert "train: inputs X_train<-prep, y_train<-prep" in listing


def test_failed_stage_stops_with_a_clear_message_and_the_next_run_resumes(tmp_path, monkeypatch):
    kernel_env(monkeypatch)
    flag = tmp_path / "ready.flag"
    log = tmp_path / "executions.log"
    nb = make_nb(
        [
            (f"flag_path = {str(flag)!r}\nlog_path = {str(log)!r}", ["parameters"]),
            "import os\n\nimport mlops_jupyter as mj",
            (
                "with open(log_path, 'a') as f:\n    f.write('first\\n')\n"
                "data = list(range(10))\nmj.log(n=len(data))",
                ["stage=first"],
            ),
            (
                "with open(log_path, 'a') as f:\n    f.write('second\\n')\n"
                "if not os.path.exists(flag_path):\n"
                "    raise RuntimeError('the flag file is missing')\n"
                "doubled = [2 * x for x in data]",
                ["stage=second"],
            ),
            ("total = sum(doubled)\nmj.log(total=total)", ["stage=third"]),
        ],
        tmp_path / "flaky.ipynb",
    )
    res = export_notebook(nb, tmp_path / "flaky_pipe")
    failed = run_pipeline(res.path, check=False)
    assert failed.returncode == 1
    assert "stage 'second' failed: RuntimeError: the flag file is missing" in failed.stderr
    assert "(stages/second.py, line" in failed.stderr
    assert "resume at 'second'" in failed.stderr
    assert "Traceback" in failed.stderr
    parents, children = pipeline_runs()
    p1 = parents[-1]
    assert p1["status"] == "failed" and p1["tags"]["mlops.failed_stage"] == "second"
    st1 = children[p1["id"]]
    assert [(s["name"], s["status"]) for s in st1] == [("first", "finished"), ("second", "failed")]
    assert any(e["kind"] == "pipeline.error" for e in st1[1]["events"])

    flag.write_text("ok")
    again = run_pipeline(res.path)
    assert "first  cached" in again.stderr and "second done" in again.stderr
    assert log.read_text().splitlines() == ["first", "second", "second"]
    parents, children = pipeline_runs()
    p2 = parents[-1]
    assert p2["status"] == "finished" and p2["attempt"] == 2
    assert p2["tags"]["mlops.resumed_from"] == "second"
    assert points([s["id"] for s in children[p2["id"]]])["total"] == [(0, 90.0)]


def test_frames_objects_and_tracking_variants_survive_the_trip(tmp_path, monkeypatch):
    kernel_env(monkeypatch)
    nb = make_nb(
        [
            ("scale = 2.0\nname = 'café'", ["parameters"]),
            "import polars as pl\nfrom mlops_jupyter import log, start_run",
            ("md", "## Load"),
            'df = pl.DataFrame({"x": [1.0, 2.0, 3.0]})\nquery = """\nSELECT x\n  FROM t\n"""',
            ("md", "## Fit"),
            (
                "class Scaler:\n    def __init__(self, k):\n        self.k = k\n\n"
                "    def apply(self, s):\n        return s * self.k\n\n\n"
                "with start_run(f'fit {name}', params={'scale': scale}) as run:\n"
                "    scaler = Scaler(scale)\n    log(k=scaler.k)\n    run.set_tags({'who': name})"
            ),
            ("md", "## Apply"),
            "import asyncio\n\nk = await asyncio.sleep(0, result=1)\n"
            "out = df.with_columns(y=scaler.apply(pl.col('x')) * k)\n"
            "log(total=out['y'].sum())\nprint(query.strip())",
        ],
        tmp_path / "variants.ipynb",
    )
    res = export_notebook(nb, tmp_path / "variants_pipe")
    assert res.stages == ["load", "fit", "apply"] and not res.warnings
    proc = run_pipeline(res.path)
    assert "SELECT x\n  FROM t" in proc.stdout  # the multi-line string kept its lines
    parents, children = pipeline_runs()
    stages = children[parents[-1]["id"]]
    assert stages[1]["tags"]["who"] == "café" and stages[1]["params"]["scale"] == 2.0
    assert points([s["id"] for s in stages]) == {"k": [(0, 2.0)], "total": [(0, 12.0)]}
    # top-level `await` (IPython allows it) makes an async stage the runner awaits
    assert "async def run(" in (res.path / "stages" / "apply.py").read_text()
    fmt = {
        e["format"]
        for m in (res.path / ".cache").rglob("manifest.json")
        for e in json.loads(m.read_text())["outputs"].values()
    }
    assert fmt == {"polars-parquet", "pickle"}


def test_reexport_after_notebook_edits_keeps_unchanged_stages_cached(tmp_path, monkeypatch):
    import nbformat

    kernel_env(monkeypatch)
    path = tmp_path / "edited.ipynb"
    path.write_text((NOTEBOOKS / "pipeline_example.ipynb").read_text())
    out = export_notebook(path, tmp_path / "edited_pipe").path
    run_pipeline(out)
    nb = nbformat.read(str(path), as_version=4)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("A new introduction shifts every cell."))
    train = next(c for c in nb.cells if "stage=train" in c.metadata.get("tags", []))
    train.source = "# a comment does not change the code\n" + train.source
    evaluate = next(c for c in nb.cells if "stage=evaluate" in c.metadata.get("tags", []))
    evaluate.source += "\nprint('edited')"
    nbformat.write(nb, str(path))
    export_notebook(path, out)
    again = run_pipeline(out)
    assert "3 cached" in again.stderr and "evaluate done" in again.stderr
    assert "edited" in again.stdout


def test_several_runs_in_one_stage_stay_separate_runs(tmp_path, monkeypatch):
    kernel_env(monkeypatch)
    nb = make_nb(
        [
            "%load_ext mlops_jupyter\nimport mlops_jupyter as mj",
            (
                "for lr in [0.1, 0.2]:\n    with mj.start_run(f'lr-{lr}'):\n"
                "        for s in range(3):\n            mj.log(step=s, loss=lr * s)",
                ["stage=sweep"],
            ),
            ("%%mlops_run cell-a --no-live\nx = 1\nmj.log(v=x)", ["stage=cells"]),
            "%%mlops_run cell-b --no-live\nx = 2\nmj.log(v=x)",
            ("run = mj.start_run('left-open')\nmj.log(w=1)", ["stage=open"]),
        ],
        tmp_path / "multi.ipynb",
    )
    execute_notebook(nb, tmp_path)
    want = {r["name"]: points([r["id"]]) for r in mj.runs().to_dicts()}
    res = export_notebook(nb, tmp_path / "multi_pipe")
    cells = (res.path / "stages" / "cells.py").read_text()
    assert "with notebook_run('cell-a'):" in cells and "with notebook_run('cell-b'):" in cells
    run_pipeline(res.path)
    parents, _ = pipeline_runs()
    rows = mj.runs().to_dicts()
    by_id = {r["id"]: r for r in rows}
    stage_of = {}
    for r in rows:  # the stage run each run sits under
        p = r
        while p["parent_id"] and p["parent_id"] != parents[-1]["id"]:
            p = by_id[p["parent_id"]]
        stage_of[r["id"]] = p["name"]
    got = {
        r["name"]: points([r["id"]])
        for r in rows
        if r["parent_id"] and r["parent_id"] != parents[-1]["id"]
    }
    assert got == {k: v for k, v in want.items() if k in ("lr-0.1", "lr-0.2", "cell-a", "cell-b")}
    nested = [r for r in rows if r["parent_id"] and r["name"].startswith("lr-")]
    assert len(nested) == 2 and {stage_of[r["id"]] for r in nested} == {"sweep"}
    # the single run of the last stage is the stage's run, and nothing is left running
    assert points([r["id"] for r in rows if r["name"] == "left-open" and r["parent_id"]]) == {
        "w": [(0, 1.0)]
    }
    assert all(r["status"] == "finished" for r in rows if r["parent_id"])


def test_mlops_export_magic_in_the_notebook_links_the_kernel_run(tmp_path, monkeypatch):
    kernel_env(monkeypatch)
    nb_path = NOTEBOOKS / "pipeline_example.ipynb"
    # the kernel learns its notebook path the way Jupyter tells it (here: the env variable)
    monkeypatch.setenv("MLOPS_JUPYTER_NOTEBOOK", str(nb_path))
    out = tmp_path / "from_magic"
    executed = execute_notebook(
        nb_path,
        tmp_path,
        first=["%load_ext mlops_jupyter"],
        extra=[
            f"%mlops_export -o {out} --target airflow",
            'print(get_ipython().find_line_magic("mlops_export").__doc__)',
        ],
    )
    assert "exported 4 stages" in _text(executed.cells[-2])
    assert "--target" in _text(executed.cells[-1])  # help comes from the argument definitions
    nb_run = _notebook_run("pipeline-example")
    assert nb_run["tags"]["notebook.path"] == str(nb_path)
    meta = json.loads((out / ".mlops-export.json").read_text())
    assert meta["source_run"] == nb_run["id"] and meta["target"] == "airflow"
    assert (out / "airflow_dag.py").is_file()
    run_pipeline(out, "--quiet")
    parents, _ = pipeline_runs()
    assert parents[-1]["tags"]["mlops.source_run"] == nb_run["id"]
    assert parents[-1]["experiment"] == nb_run["experiment"]
    # outside the kernel (CLI), the notebook run is found by its notebook.path tag
    monkeypatch.delenv("MLOPS_JUPYTER_NOTEBOOK")
    assert export_notebook(nb_path, tmp_path / "from_cli").source_run == nb_run["id"]


def test_mlops_export_without_a_name_finds_the_notebook_a_headless_runner_executes(
    tmp_path, monkeypatch
):
    # nbclient starts the kernel in the notebook's folder and says nothing about the file:
    # the magic finds it as the capture package does (the cells run are its cells)
    import nbformat

    kernel_env(monkeypatch)
    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.read(str(NOTEBOOKS / "pipeline_example.ipynb"), as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("%load_ext mlops_jupyter"))
    out = tmp_path / "headless_pipe"
    nb.cells.append(nbformat.v4.new_code_cell(f"%mlops_export -o {out}"))
    nbformat.write(nb, str(folder / "pipe.ipynb"))
    (folder / "other.ipynb").write_text(
        (NOTEBOOKS / "pipeline_example.ipynb").read_text()
    )  # a look-alike without the export cell: must not be taken
    executed = execute_notebook(folder / "pipe.ipynb", folder)
    assert "exported 4 stages" in _text(executed.cells[-1])
    meta = json.loads((out / ".mlops-export.json").read_text())
    assert meta["notebook"] == "pipe.ipynb"
    assert meta["source_run"] == _notebook_run("pipeline-example")["id"]


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        out.append(o.get("text", "") or "".join(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def test_cli_export_and_errors(tmp_path, monkeypatch):
    kernel_env(monkeypatch)
    nb_path = NOTEBOOKS / "pipeline_example.ipynb"
    cmd = [sys.executable, "-m", "mlops_jupyter", "export", str(nb_path), "-o"]
    ok = subprocess.run(
        [*cmd, str(tmp_path / "cli_pipe"), "--target", "airflow"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert ok.returncode == 0, ok.stderr
    assert "exported 4 stages" in ok.stdout and "airflow_dag.py" in ok.stdout
    assert (tmp_path / "cli_pipe" / "airflow_dag.py").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "mlops_jupyter", "export", str(tmp_path / "nope.ipynb")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "notebook not found" in bad.stderr
    # the package also runs as `python DIR` (a folder with __main__.py)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "cli_pipe"), "-q"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


# the other example notebooks meant to become pipelines (telemetry.ipynb demonstrates
# live panels and is not one)
OTHER_NOTEBOOKS = ["quickstart.ipynb", "data_drift.ipynb"]


@pytest.mark.parametrize("name", OTHER_NOTEBOOKS)
def test_example_notebooks_export_and_match(name, tmp_path, monkeypatch):
    path = NOTEBOOKS / name
    if not path.exists():
        pytest.skip(f"notebooks/{name} not written yet")
    kernel_env(monkeypatch)
    execute_notebook(path, tmp_path)
    nb_runs = [r for r in mj.runs().to_dicts() if r["parent_id"] is None]
    res = export_notebook(path, tmp_path / "nb_pipe")
    run_pipeline(res.path)
    parents, children = pipeline_runs()
    got = points([s["id"] for s in children[parents[-1]["id"]]])
    want = points([r["id"] for r in nb_runs])
    assert got == want
    # the notebook runs' params (parameters cell + literal assignments of %%mlops_run
    # cells) are the pipeline's params, with the same values
    nb_params = {
        k: v
        for r in nb_runs
        for k, v in mj.get_run(r["id"])["params"].items()
        if not k.startswith("env.")
    }
    assert {k: parents[-1]["params"].get(k) for k in nb_params} == nb_params
