"""`mlops-jupyter mlflow import` throughput: an MLflow SQLite store of N runs x M points into
our store (SQLite).

    python benchmarks/bench_mlflow_import.py            # 1,000 runs x 1,000 points
    python benchmarks/bench_mlflow_import.py --small    # 20 runs x 200 points

Builds the MLflow store with the real `mlflow` client (`log_batch`, 1,000 points per call,
explicit steps and timestamps), then times `import_runs` into a fresh store, and a second
import (nothing to do: every run is recognised by its MLflow run id). Prints seconds and
metric points per second. Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

T0 = 1_700_000_000_000


def build(uri: str, art: Path, runs: int, points: int) -> float:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    c = MlflowClient(tracking_uri=uri)
    t = time.perf_counter()
    exp = c.create_experiment("bench", artifact_location=str(art))
    for i in range(runs):
        start = T0 + i * 1_000_000
        rid = c.create_run(exp, start_time=start, run_name=f"r{i}").info.run_id
        c.log_batch(rid, params=[Param("i", str(i)), Param("lr", "0.001")])
        for lo in range(0, points, 1000):
            ms = [
                Metric("loss", 1.0 / (s + 1), start + s, s)
                for s in range(lo, min(points, lo + 1000))
            ]
            c.log_batch(rid, metrics=ms)
        c.set_terminated(rid, "FINISHED", end_time=start + points)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", action="store_true", help="20 runs x 200 points")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--points", type=int)
    ap.add_argument(
        "--mlflow-db",
        type=Path,
        help="import this MLflow SQLite file (one this script built: runs x points must match) "
        "instead of building one",
    )
    a = ap.parse_args()
    runs = a.runs or (20 if a.small else 1000)
    points = a.points or (200 if a.small else 1000)
    os.environ.setdefault("MLOPS_JUPYTER_TELEMETRY", "0")
    os.environ.setdefault("MLOPS_JUPYTER_PROGRESS", "0")
    os.environ.pop("MLOPS_JUPYTER_ARTIFACTS", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no schema-migration chatter

    import mlops_jupyter as mj

    tmp = Path(tempfile.mkdtemp(prefix="bench-mlflow-import-"))
    try:
        run_bench(tmp, runs, points, a.mlflow_db)
    finally:
        mj.set_store(None)
        shutil.rmtree(tmp, ignore_errors=True)


def run_bench(tmp: Path, runs: int, points: int, db: Path | None = None) -> None:
    import mlops_jupyter as mj
    from mlops_jupyter.mlflowio import import_runs

    total = runs * points
    if db is None:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        t_build = build(uri, tmp / "mlartifacts", runs, points)
        print(
            f"built MLflow store: {runs:,} runs x {points:,} points in {t_build:.1f}s (log_batch)"
        )
    else:
        uri = f"sqlite:///{db.resolve()}"
    mj.set_store(tmp / "ours" / "store.db")
    t = time.perf_counter()
    counts = import_runs(uri, quiet=True)
    t_import = time.perf_counter() - t
    assert counts["imported"] == runs and counts["points"] == total, counts
    print(
        f"import: {runs:,} runs, {total:,} points in {t_import:.2f}s = "
        f"{total / t_import:,.0f} points/s ({runs / t_import:,.1f} runs/s)"
    )
    t = time.perf_counter()
    again = import_runs(uri, quiet=True)
    t_again = time.perf_counter() - t
    assert again["skipped"] == runs and again["points"] == 0, again
    print(f"import again (nothing new): {t_again:.2f}s")
    n = len(mj.metrics())
    assert n == total, n
    print(f"read back: {n:,} points")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
