"""The privacy example notebook runs in a real kernel and leaves what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import mlops_jupyter as mj
from mlops_jupyter.registry import model_version

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "privacy.ipynb"


def test_privacy_notebook(tmp_path, child_env, monkeypatch):
    pytest.importorskip("opacus")
    pytest.importorskip("altair")
    monkeypatch.setenv("PYTHONPATH", child_env["PYTHONPATH"])
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    runs = mj.runs(experiment="privacy")
    assert set(runs["name"]) >= {"non-private", "dp-sigma-0.8", "dp-target-2"}
    stopped = runs.filter(runs["status"] == "stopped")
    assert stopped["name"].to_list() == ["dp-target-2"]
    assert mj.privacy.epsilon(stopped["id"][0]) <= 2.0
    # epsilon falls as the noise grows: the chart's x axis is monotone in sigma
    eps = [mj.privacy.epsilon(f"dp-sigma-{s}") for s in (8.0, 3.0, 1.5, 0.8)]
    assert eps == sorted(eps) and eps[0] > 0
    charts = [
        o["data"]["application/vnd.vegalite.v5+json"]
        for c in nb.cells
        for o in c.get("outputs", [])
        if "application/vnd.vegalite.v5+json" in o.get("data", {})
    ]
    html = [
        o["data"].get("text/html", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if "data" in o
    ]
    assert charts or any("vega" in h for h in html)  # the altair chart rendered
    spec = json.dumps(charts[0]) if charts else "".join(html)
    assert "epsilon" in spec and "accuracy" in spec
    production = model_version("dp-classifier", stage="production")
    assert production["meta"]["metadata"]["privacy"]["epsilon"] > 0
