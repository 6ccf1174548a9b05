"""The sweeps/registry example notebook runs in a real kernel and leaves what it promises."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import mlops_jupyter as mj
from mlops_jupyter.errors import MlopsJupyterError

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "sweeps_registry.ipynb"


def test_sweeps_registry_notebook(tmp_path, child_env, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.setenv("PYTHONPATH", child_env["PYTHONPATH"])
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    runs = mj.runs()
    trials = runs.filter(runs["name"].str.starts_with("trial-"))
    assert trials.height == 20
    assert set(trials["parent_id"]) == set(runs.filter(runs["parent_id"].is_null())["id"])
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "best {" in printed
    model = mj.load_model("logreg", stage="production")
    assert model["w"].shape == (5,)
    with pytest.raises(MlopsJupyterError):
        mj.load_model("logreg", stage="staging")  # promoted on to production
