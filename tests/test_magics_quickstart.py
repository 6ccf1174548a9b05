"""notebooks/quickstart.ipynb runs top to bottom in a real kernel and leaves a complete run."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from capture_helpers import execute, outputs_text, query, use_store

import mlops_jupyter as mj

pytestmark = pytest.mark.timeout(180)
QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


@pytest.mark.parametrize("where", ["env-var", "kernel-folder", "unknown"])
def test_quickstart_executes_and_records_a_run(tmp_path, monkeypatch, where):
    store = use_store(monkeypatch, tmp_path)
    # the kernel starts in tmp_path; "unknown": the file is elsewhere and nobody says where
    folder = tmp_path if where == "kernel-folder" else tmp_path / "elsewhere"
    folder.mkdir(exist_ok=True)
    nb_path = folder / "quickstart.ipynb"
    shutil.copy(QUICKSTART, nb_path)
    if where == "env-var":
        monkeypatch.setenv("MLOPS_JUPYTER_NOTEBOOK", str(nb_path))
    known_path = where != "unknown"
    nb = nbformat.read(nb_path, as_version=4)
    execute(nb, tmp_path)

    for cell in nb.cells:
        assert not [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "final validation accuracy" in outputs_text(code[3])
    # the live monitor is shown by default (a widget view)
    assert any(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in code[3].outputs
    )
    assert "mlp-xor" in outputs_text(code[4])  # the %mlops_runs table

    (uid,) = query(store, "SELECT uid FROM runs WHERE name='mlp-xor'")[0]
    run = mj.get_run(uid)
    assert run["status"] == "finished" and run["experiment"] == "quickstart"
    assert run["params"] == {
        "lr": 0.5,
        "epochs": 60,
        "hidden": 16,
        "seed": 0,
        "weight_decay": 1e-4,
        "batch_size": 64,
    }
    assert run["tags"].get("notebook.path") == (str(nb_path.resolve()) if known_path else None)
    assert "script.path" not in run["tags"]
    summary = {m["key"]: m for m in run["metrics"]}
    assert set(summary) == {"loss", "val_loss", "val_acc"}
    assert summary["loss"]["count"] == 60
    assert summary["val_acc"]["last"] > 0.85  # it actually learned the XOR
    losses = mj.metrics(uid, keys="loss")["value"].to_list()
    assert losses[-1] < losses[0] / 2
    assert query(store, "SELECT count(*) FROM cell_executions")[0][0] == 1
