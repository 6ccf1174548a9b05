"""notebooks/data_drift.ipynb runs top to bottom in a real kernel and records what it shows."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from data_helpers import text_of
from nbclient import NotebookClient

import mlops_jupyter as mj

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "data_drift.ipynb"


@pytest.mark.timeout(240)
def test_data_drift_notebook_executes(tmp_path, store_path, monkeypatch):
    root = str(NOTEBOOK.parent.parent)
    monkeypatch.setenv("PYTHONPATH", root)
    nb_path = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, nb_path)
    nb = nbformat.read(nb_path, as_version=4)
    NotebookClient(
        nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        assert not [o for o in c.outputs if o["output_type"] == "error"], text_of(c)
    assert "passed, 0 failed" in text_of(code[2])
    drift_html = text_of(code[4])
    assert "Data drift" in drift_html and "dataset drift" in drift_html
    for col in ("age", "income", "plan"):
        assert col in drift_html
    assert "'age', 'income', 'plan'" in text_of(code[7]) or "income" in text_of(code[7])

    mj.set_store(store_path)
    lin = mj.lineage("prepare")
    assert [v["name"] for v in lin.inputs] == ["train.csv"]
    assert [v["name"] for v in lin.outputs] == ["features"]
    assert mj.get_run("prepare")["tags"]["preflight"] == "passed"
    from mlops_jupyter import data

    reports = data.drift_reports()
    assert len(reports) == 3
    assert set(reports[0].drifted_columns) >= {"age", "income", "plan"}
    assert reports[0].mode == "profile" and reports[-1].mode == "raw"
