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


def test_budget_stop_inside_a_mlops_run_cell(tmp_path):
    """In `%%mlops_run` the stop ends the cell with PrivacyBudgetExhausted and the run stays
    `stopped` (the magic's own end after an error does not overwrite it)."""
    pytest.importorskip("mlx.core")
    pytest.importorskip("ipykernel")
    from notebook_helpers import run_notebook

    setup = """
%load_ext mlops_jupyter
import mlx.core as mx, mlx.nn as nn, mlx.optimizers as optim, numpy as np
import mlops_jupyter as mj
rng = np.random.default_rng(0)
X = mx.array(rng.normal(size=(200, 4)).astype(np.float32))
Y = mx.array((rng.random(200) > 0.5).astype(np.int32))
def loss_fn(m, x, y):
    return nn.losses.cross_entropy(m(x), y, reduction="mean")
target = mj.privacy.compute_epsilon(1.0, 0.1, 6, 1e-4, "rdp") * (1 + 1e-9)
"""
    cell = """%%mlops_run dp-cell --no-live
model, opt, batches = mj.privacy.make_private(
    nn.Linear(4, 2), optim.SGD(learning_rate=0.1), (X, Y), loss_fn=loss_fn, batch_size=20,
    noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-4, accountant="rdp",
    target_epsilon=target)
for epoch in range(5):
    for xb, yb in batches:
        opt.step(xb, yb)
"""
    nb = run_notebook([setup, cell], tmp_path, allow_errors=True)
    errors = [o for o in nb.cells[1].outputs if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "PrivacyBudgetExhausted"
    run = mj.runs().filter(mj.runs()["name"] == "dp-cell").row(0, named=True)
    assert run["status"] == "stopped"
    assert mj.metrics(run["id"], keys="privacy/epsilon")["step"].max() == 6
