"""Notebook -> pipeline figures: export time, pipeline runs (cold, fully cached, after a
param change) against executing the notebook with nbclient (what papermill does), the
runner's overhead per stage, and the speed of the stage-output formats.

    python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NB = ROOT / "notebooks" / "pipeline_example.ipynb"


def _median(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _run(pkg: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", pkg.name, "-q", *args],
        cwd=pkg.parent,
        check=True,
        capture_output=True,
    )


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    os.environ["MLOPS_JUPYTER_STORE"] = str(tmp / "store.db")
    os.environ["MLOPS_JUPYTER_TELEMETRY"] = "0"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    from mlops_jupyter.export import export_notebook

    try:
        t_export = _median(lambda: export_notebook(NB, tmp / "bench_pipe"), 5)
        pkg = tmp / "bench_pipe"
        print(f"export pipeline_example.ipynb (4 stages):     {t_export * 1e3:8.1f} ms")

        import nbformat
        from nbclient import NotebookClient

        def notebook() -> None:
            nb = nbformat.read(str(NB), as_version=4)
            NotebookClient(nb, kernel_name="python3", timeout=120).execute()

        t_nb = _median(notebook, 3)
        print(f"notebook via nbclient (papermill's engine):   {t_nb * 1e3:8.1f} ms")

        def cold() -> None:
            shutil.rmtree(pkg / ".cache", ignore_errors=True)
            _run(pkg)

        t_cold = _median(cold, 3)
        print(
            f"pipeline, cold (python -m, 4 stages run):     {t_cold * 1e3:8.1f} ms"
            f"   ratio vs nbclient {t_cold / t_nb:.2f}x"
        )
        _run(pkg)
        t_cached = _median(lambda: _run(pkg), 3)
        print(
            f"pipeline, nothing changed (4 cached):         {t_cached * 1e3:8.1f} ms"
            f"   ratio vs nbclient {t_cached / t_nb:.2f}x"
        )
        lrs = iter(["0.05", "0.06", "0.07", "0.08"])
        t_param = _median(lambda: _run(pkg, "--param", f"lr={next(lrs)}"), 3)
        print(
            f"pipeline, lr changed (2 cached, 2 run):       {t_param * 1e3:8.1f} ms"
            f"   ratio vs nbclient {t_param / t_nb:.2f}x"
        )
        _stage_overhead(tmp)
        _exactness(tmp)
        _formats(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stage_overhead(tmp: Path, n: int = 20) -> None:
    """In-process runner cost per stage: child run + (de)serialising a small array."""
    import nbformat

    from mlops_jupyter.export import export_notebook
    from mlops_jupyter.export.runtime import run_pipeline

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("import numpy as np"))
    src = "a0 = np.zeros(100)"
    for i in range(n):
        cell = nbformat.v4.new_code_cell(src if i == 0 else f"a{i} = a{i - 1} + 1")
        cell.metadata["tags"] = [f"stage=s{i}"]
        nb.cells.append(cell)
    path = tmp / "chain.ipynb"
    nbformat.write(nb, str(path))
    pkg = export_notebook(path, tmp / "chain_pipe").path
    sys.path.insert(0, str(pkg.parent))
    t0 = time.perf_counter()
    run_pipeline("chain_pipe", quiet=True)
    cold = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    run_pipeline("chain_pipe", quiet=True)
    cached = (time.perf_counter() - t0) / n
    print(f"runner overhead per stage, executed:          {cold * 1e3:8.2f} ms  ({n} tiny stages)")
    print(f"runner overhead per stage, cached:            {cached * 1e3:8.2f} ms")


def _exactness(tmp: Path, n: int = 200) -> None:
    """What exactness costs per executed stage: saving and restoring the global random
    state (random + numpy, then + torch when installed), and writing objects that share
    state (a model and its optimizer) into one file."""
    import numpy  # noqa: F401 - captured only when imported

    from mlops_jupyter.export import rngstate, serialize

    def rng_cycle() -> None:
        entry = rngstate.save(rngstate.capture(), tmp)
        rngstate.restore(rngstate.load(tmp, entry))

    t = _median(rng_cycle, n)
    print(f"random state save+restore (random, numpy):    {t * 1e3:8.2f} ms per stage")
    try:
        import torch
    except ImportError:
        return
    t = _median(rng_cycle, n)
    print(f"random state save+restore (+ torch CPU):      {t * 1e3:8.2f} ms per stage")
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    opt = torch.optim.Adam(model.parameters())
    d = tmp / "group"
    d.mkdir(exist_ok=True)
    t = _median(lambda: serialize.save_all({"model": model, "optimizer": opt}, d), 20)
    size = sum(p.stat().st_size for p in d.iterdir()) / 1e6
    print(f"model + optimizer in one shared file:         {t * 1e3:8.2f} ms ({size:.1f} MB)")
    shutil.rmtree(d)


def _formats(tmp: Path) -> None:
    import numpy as np
    import polars as pl

    from mlops_jupyter.export import serialize

    arr = np.random.default_rng(0).normal(size=(10_000_000,))  # 80 MB
    df = pl.DataFrame({"x": arr[:2_000_000], "k": np.arange(2_000_000) % 100})
    for label, obj, mb in (
        ("numpy 80 MB", arr, arr.nbytes / 1e6),
        ("polars 2M rows", df, df.estimated_size() / 1e6),
    ):
        d = tmp / "fmt"
        d.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        e = serialize.save(obj, d, "obj")
        t_save = time.perf_counter() - t0
        t0 = time.perf_counter()
        serialize.load(d, e)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        with open(d / "p.pkl", "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        with open(d / "p.pkl", "rb") as f:
            pickle.load(f)
        t_pickle = time.perf_counter() - t0
        size = (d / e["file"]).stat().st_size / 1e6
        print(
            f"{label:15s} as {e['format']:14s} save+hash {t_save * 1e3:7.1f} ms, "
            f"load {t_load * 1e3:7.1f} ms, {size:6.1f} MB on disk "
            f"(pickle round trip {t_pickle * 1e3:7.1f} ms, {mb:6.1f} MB in memory)"
        )
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
