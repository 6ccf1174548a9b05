"""Logging and query benchmark: mlops-jupyter vs MLflow's SQLite backend, same machine, same run.

    python benchmarks/bench_logging.py            # full sizes (a few minutes, mostly MLflow)
    python benchmarks/bench_logging.py --quick    # smaller sizes, for a smoke run
    python benchmarks/bench_logging.py --no-mlflow

Prints each figure, the target from the issue, and the ratio (MLflow / ours: >1 means faster
or smaller here). Nothing here is a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def median_per_call(fn, calls: int, batch: int) -> float:
    """Median seconds per call over batches of `batch` calls."""
    out = []
    for _ in range(calls // batch):
        t = time.perf_counter()
        for _ in range(batch):
            fn()
        out.append((time.perf_counter() - t) / batch)
    return statistics.median(out)


def db_bytes(path: Path) -> int:
    c = sqlite3.connect(path)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute("VACUUM")
    c.close()
    return path.stat().st_size


# -- ours --------------------------------------------------------------------------------
def ours(sizes: dict, root: Path) -> dict:
    import mlops_jupyter as mj

    res = {}
    store = root / "ours" / "store.db"
    mj.set_store(store)

    # 1. caller-visible log_metric cost
    with mj.start_run("calls"):
        log = mj.log_metric
        res["log_metric_us"] = median_per_call(lambda: log("loss", 0.5), sizes["calls"], 1000) * 1e6
    # 2. sustained ingest until committed
    n = sizes["ingest"]
    with mj.start_run("ingest"):
        log = mj.log_metric
        vals = np.random.default_rng(0).random(n).tolist()
        t = time.perf_counter()
        for i, v in enumerate(vals):
            log("loss", v, i)
        mj.flush()
        res["ingest_pts_s"] = n / (time.perf_counter() - t)
    # 3. bytes per point: a separate store holding only this run
    size_store = root / "ours-size" / "store.db"
    mj.set_store(size_store)
    before = db_bytes(size_store)
    with mj.start_run("size"):
        for i, v in enumerate(vals):
            mj.log_metric("loss", v, i)
    res["bytes_per_point"] = (db_bytes(size_store) - before) / n
    mj.set_store(store)
    # 4. run create + 10 params + end
    params = {f"p{i}": i * 0.1 for i in range(10)}

    def one_run():
        r = mj.start_run("small", params=params)
        r.end()

    res["run_10_params_ms"] = median_per_call(one_run, sizes["runs_small"], 10) * 1e3
    # 5. runs() over R runs x 3 metrics x S steps
    qstore = root / "ours-query" / "store.db"
    mj.set_store(qstore)
    R, S = sizes["query_runs"], sizes["query_steps"]
    for r in range(R):
        with mj.start_run(f"q{r}", experiment="q", params={"lr": r * 1e-4, "seed": r}):
            for s in range(S):
                mj.log(step=s, loss=1.0 / (s + 1), acc=s / S, lr=0.1)
    times = []
    for _ in range(7):
        t = time.perf_counter()
        df = mj.runs(experiment="q")
        times.append(time.perf_counter() - t)
    assert df.height == R
    res["runs_table_ms"] = statistics.median(times) * 1e3
    # 6. one run/key history of S points
    rid = df["id"][0]
    times = []
    for _ in range(20):
        t = time.perf_counter()
        h = mj.metrics(rid, "loss")
        times.append(time.perf_counter() - t)
    assert h.height == S
    res["history_ms"] = statistics.median(times) * 1e3
    mj.set_store(None)
    return res


# -- MLflow ------------------------------------------------------------------------------
def mlflow_side(sizes: dict, root: Path) -> dict:
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    res = {}
    db = root / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("bench", artifact_location=str(root / "mlflow" / "art"))
    mlflow.set_experiment(experiment_id=exp)

    with mlflow.start_run():
        res["log_metric_us"] = (
            median_per_call(lambda: mlflow.log_metric("loss", 0.5), sizes["mlflow_calls"], 20) * 1e6
        )
    n = sizes["mlflow_batch"]
    vals = np.random.default_rng(0).random(n).tolist()
    before = db_bytes(db)
    run = client.create_run(exp)
    rid = run.info.run_id
    t = time.perf_counter()
    now = int(time.time() * 1000)
    for i in range(0, n, 1000):
        client.log_batch(
            rid, metrics=[Metric("loss", v, now, i + j) for j, v in enumerate(vals[i : i + 1000])]
        )
    res["ingest_pts_s"] = n / (time.perf_counter() - t)
    client.set_terminated(rid)
    res["bytes_per_point"] = (db_bytes(db) - before) / n
    # history of query_steps points
    run2 = client.create_run(exp)
    client.log_batch(
        run2.info.run_id,
        metrics=[Metric("loss", float(s), now, s) for s in range(sizes["query_steps"])],
    )
    res["history_ms"] = (
        statistics.median(_timed(lambda: client.get_metric_history(run2.info.run_id, "loss"), 10))
        * 1e3
    )
    params = {f"p{i}": i * 0.1 for i in range(10)}

    def one_run():
        with mlflow.start_run():
            mlflow.log_params(params)

    res["run_10_params_ms"] = median_per_call(one_run, sizes["mlflow_runs_small"], 5) * 1e3
    # search_runs over R runs with 3 metrics each (latest values are what search reads;
    # MLflow's history length does not change search time, so fewer steps are logged)
    exp2 = client.create_experiment("q", artifact_location=str(root / "mlflow" / "art2"))
    R = sizes["query_runs"]
    for r in range(R):
        rr = client.create_run(exp2)
        client.log_batch(
            rr.info.run_id,
            metrics=[Metric(k, 0.1, now, s) for k in ("loss", "acc", "lr") for s in range(10)],
            params=[
                mlflow.entities.Param("lr", str(r * 1e-4)),
                mlflow.entities.Param("seed", str(r)),
            ],
        )
        client.set_terminated(rr.info.run_id)
    res["runs_table_ms"] = (
        statistics.median(_timed(lambda: mlflow.search_runs([exp2], max_results=R), 3)) * 1e3
    )
    res["mlflow_version"] = mlflow.__version__
    return res


def _timed(fn, k):
    out = []
    for _ in range(k):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


ROWS = [
    # key, label, unit, target, higher_is_better
    ("log_metric_us", "log_metric, caller-visible (median)", "us/call", "<= 1", False),
    ("ingest_pts_s", "sustained ingest, committed", "points/s", ">= 400,000", True),
    ("bytes_per_point", "disk per metric point", "bytes", "<= 40", False),
    ("run_10_params_ms", "run create + 10 params + end", "ms", "<= 1", False),
    ("runs_table_ms", "runs table over 1,000 runs x 3 metrics", "ms", "<= 50", False),
    ("history_ms", "one run/key history, 1,000 points", "ms", "<= 2", False),
]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-mlflow", action="store_true")
    a = ap.parse_args()
    sizes = dict(
        calls=1_000_000,
        ingest=1_000_000,
        runs_small=500,
        query_runs=1000,
        query_steps=1000,
        mlflow_calls=400,
        mlflow_batch=20_000,
        mlflow_runs_small=50,
    )
    if a.quick:
        sizes.update(
            calls=100_000,
            ingest=100_000,
            runs_small=100,
            query_runs=100,
            query_steps=200,
            mlflow_calls=40,
            mlflow_batch=2000,
            mlflow_runs_small=10,
        )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.pop("MLOPS_JUPYTER_STORE", None)
        print("measuring mlops-jupyter ...", file=sys.stderr)
        o = ours(sizes, root)
        m = {}
        if not a.no_mlflow:
            try:
                print("measuring MLflow (sqlite backend) ...", file=sys.stderr)
                m = mlflow_side(sizes, root)
            except ImportError:
                print("mlflow is not installed: pip install mlflow", file=sys.stderr)
    ver = m.get("mlflow_version", "-")
    print(
        f"\n{'figure':42} {'unit':9} {'target':>11} {'ours':>12} {'MLflow ' + ver:>14} {'ratio':>8}"
    )
    for key, label, unit, target, hib in ROWS:
        ov, mv = o[key], m.get(key)
        ratio = "" if mv is None else f"{(ov / mv if hib else mv / ov):.0f}x"
        mv_s = "" if mv is None else f"{mv:,.3f}" if mv < 100 else f"{mv:,.0f}"
        ov_s = f"{ov:,.3f}" if ov < 100 else f"{ov:,.0f}"
        print(f"{label:42} {unit:9} {target:>11} {ov_s:>12} {mv_s:>14} {ratio:>8}")
    print("\nratio: how many times faster (or smaller) mlops-jupyter is than MLflow on this figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
