"""%%mlops_sweep --workers N / --cluster VAR in a real kernel (nbclient): the cell's trials
run in real worker processes with the notebook values the cell reads, the live view shows
them per worker, and a value that cannot travel refuses the sweep, naming the variable."""

from __future__ import annotations

import os
import re

import pytest
from notebook_helpers import run_notebook

import mlops_jupyter as mj
from mlops_jupyter.store import runs as rstore
from mlops_jupyter.store.sweep_queries import sweep_summary
from mlops_jupyter.tracking.api import current_store

pytest.importorskip("optuna")
pytest.importorskip("cloudpickle")

SETUP = """%load_ext mlops_jupyter
import math, os, time
import mlops_jupyter as mj
offset = 2.5
def shape(x):
    return (x - offset) ** 2
print("KERNEL", os.getpid())"""

# each worker's first trial waits for the other worker (a file per process in the notebook's
# folder): with a trivial objective the first worker up could run all 8 trials alone
WORKERS = """%%mlops_sweep --workers 2 --n-trials 8 --study nbw --seed 0 --no-gate --objective loss
if not os.path.exists(f"meet-{os.getpid()}"):
    open(f"meet-{os.getpid()}", "w").close()
    t0 = time.monotonic()
    while len([f for f in os.listdir() if f.startswith("meet-")]) < 2 and time.monotonic() < t0 + 120:
        time.sleep(0.02)
x = trial.suggest_float("x", 0, 5)
lr = trial.suggest_float("lr", 1e-6, 1.0, log=True)
loss = shape(x) + math.sqrt(lr)"""

DASK_START = """from distributed import Client, LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
client = Client(cluster)"""

DASK = """%%mlops_sweep --cluster client --n-trials 6 --study nbd --no-gate --no-live --result dres
x = trial.suggest_float("x", 0, 5)
mj.log(loss=shape(x))"""

UNPICKLABLE = """%%mlops_sweep --workers 2 --n-trials 2 --study refused --no-gate
held.write("x")
mj.log(loss=offset)"""


def _sweep(name: str) -> dict:
    st = current_store()
    runs = mj.runs()
    ids = runs.filter(runs["name"] == name)["id"].to_list()
    assert len(ids) == 1, runs
    return sweep_summary(st, rstore.resolve_run(st, ids[0]))


def _outputs(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        out.append(o.get("text", ""))
        out.append(str(o.get("data", {}).get("text/html", "")))
        out.append(o.get("ename", "") + ": " + o.get("evalue", ""))
    return "\n".join(out)


def test_sweep_cell_runs_on_worker_processes_and_dask(tmp_path):
    cells = [
        SETUP,
        WORKERS,
        "print('BEST', sweep_result.best_value, 'x' in globals())",
        DASK_START,
        DASK,
        "print('DASK', len(dres.trials()))\nclient.close()\ncluster.close()",
        "held = open('held.txt', 'w')",
        UNPICKLABLE,
    ]
    nb = run_notebook(cells, tmp_path, allow_errors=True, timeout=240)
    text = [_outputs(c) for c in nb.cells]
    kernel = int(re.search(r"KERNEL (\d+)", text[0]).group(1))
    # the trials ran in two worker processes, none in the kernel, with the notebook's shape()
    s = _sweep("nbw")
    assert s["counts"]["complete"] == 8
    workers = {w["worker"] for w in s["workers"]}
    assert len(workers) == 2 and all(not w.endswith(f":{kernel}") for w in workers)
    best = min(t["value"] for t in s["trials"])
    assert best == pytest.approx(
        min((t["params"]["x"] - 2.5) ** 2 + t["params"]["lr"] ** 0.5 for t in s["trials"])
    )
    assert "BEST" in text[2] and "False" in text[2]  # the cell's assignments stayed there
    # the live view's last state: rates, the per-worker table, the parallel coordinates
    html = text[1]
    assert "trials/s" in html and 'class="mlops-parcoords"' in html
    assert html.count("<polyline") >= 8 and "lr (log)" in html
    # one row per worker process, named host:pid as in the store
    assert "mlops-sweep-workers" in html and "this process" not in html
    assert all(w in html for w in workers)
    # Dask: one worker loop per Dask worker process
    d = _sweep("nbd")
    assert "DASK 6" in text[5]
    assert d["counts"]["complete"] == 6 and d["best"]["value"] is not None
    assert all(not w["worker"].endswith(f":{kernel}") for w in d["workers"])
    # an open file cannot travel: refused before any trial, naming the variable
    assert "UsageError" in text[7] and "'held'" in text[7] and "TextIOWrapper" in text[7]
    assert mj.runs().filter(mj.runs()["name"] == "refused").height == 0
    assert os.path.exists(tmp_path / "held.txt")
