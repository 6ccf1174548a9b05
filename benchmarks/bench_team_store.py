"""Team store benchmark: mlops-jupyter's PostgreSQL store vs MLflow's SQLAlchemy store on the
same PostgreSQL server (started here, as in the tests: fsync off), same run.

    python benchmarks/bench_team_store.py                    # full sizes (several minutes)
    python benchmarks/bench_team_store.py --quick            # smaller sizes, for a smoke run
    python benchmarks/bench_team_store.py --quick --no-mlflow

MLflow is driven with `MlflowClient(tracking_uri="postgresql+psycopg://...")` directly against
the database (no tracking server). Prints each figure, its target and the ratio (MLflow / ours:
>1 means faster or smaller here). Nothing here is a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
KEYS = [f"m{i}" for i in range(10)]

FULL = dict(
    calls=1_000_000,
    ingest=2_000_000,
    history=100_000,
    table_runs=(1_000, 10_000, 30_000),
    procs=8,
    proc_points=100_000,
    mlflow_calls=300,
    mlflow_batches=20,
    mlflow_ingest=200_000,
    mlflow_runs=(1_000, 10_000),
)
QUICK = dict(
    calls=100_000,
    ingest=200_000,
    history=10_000,
    table_runs=(100, 300, 1_000),
    procs=8,
    proc_points=10_000,
    mlflow_calls=30,
    mlflow_batches=3,
    mlflow_ingest=10_000,
    mlflow_runs=(100, 300),
)


def median_per_call(fn, calls: int, batch: int) -> float:
    """Median seconds per call over batches of `batch` calls."""
    out = []
    for _ in range(max(1, calls // batch)):
        t = time.perf_counter()
        for _ in range(batch):
            fn()
        out.append((time.perf_counter() - t) / batch)
    return statistics.median(out)


def timed(fn, k: int) -> float:
    """Median seconds of `k` calls of `fn`."""
    out = []
    for _ in range(k):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def relation_bytes(url: str, tables: list[str], vacuum_full: bool = False) -> int:
    """pg_total_relation_size (heap + indexes + TOAST) of `tables` summed."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        if vacuum_full:
            for t in tables:
                c.execute(f"VACUUM FULL {t}")
        return sum(
            c.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0] for t in tables
        )


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- ours --------------------------------------------------------------------------------
OUR_TABLES = ["metric_chunks", "metric_summary"]


def ours(sizes: dict, url: str, table_url: str) -> dict:
    import mlops_jupyter as mj

    res: dict = {}
    mj.set_store(url)
    rng = np.random.default_rng(0)

    # 2. committed ingest: N points across 10 keys, timed until mj.flush() returns;
    # 3. bytes per point: this database holds only these points so far
    n = sizes["ingest"]
    empty = relation_bytes(url, OUR_TABLES)
    vals = rng.random(n).tolist()
    lm = mj.log_metric
    with mj.start_run("ingest", experiment="ingest"):
        t = time.perf_counter()
        for i, v in enumerate(vals):
            lm(KEYS[i % 10], v, i // 10)
        mj.flush()
        res["ingest_pts_s"] = n / (time.perf_counter() - t)
    res["bytes_per_point"] = (relation_bytes(url, OUR_TABLES) - empty) / n
    res["bytes_per_point_vf"] = (relation_bytes(url, OUR_TABLES, vacuum_full=True) - empty) / n
    log(f"  ingest {res['ingest_pts_s']:,.0f} points/s, {res['bytes_per_point']:.2f} B/point")

    # 1. caller-visible log_metric cost (the background writer commits meanwhile)
    with mj.start_run("calls", experiment="calls"):
        res["log_metric_ns"] = median_per_call(lambda: lm("loss", 0.5), sizes["calls"], 1000) * 1e9
    log(f"  log_metric {res['log_metric_ns']:.0f} ns/call")

    # 5. one run/key history
    h = sizes["history"]
    with mj.start_run("history", experiment="history") as run:
        for i, v in enumerate(rng.random(h).tolist()):
            lm("loss", v, i)
    rid = run.id
    assert mj.metrics(rid, keys=["loss"]).height == h
    res["history_ms"] = timed(lambda: mj.metrics(rid, keys=["loss"]), 10) * 1e3
    log(f"  history of {h:,} points {res['history_ms']:.1f} ms")

    # 6. concurrent processes
    res.update(concurrent(sizes["procs"], sizes["proc_points"], url))
    log(f"  {sizes['procs']} processes: {res['mp_points']:,} points, {res['mp_s']:.1f} s")

    # 4. runs table (own database, so mj.runs() lists exactly these runs)
    mj.set_store(table_url)
    res.update(runs_table(sizes["table_runs"], table_url))
    mj.set_store(None)
    return res


def _make_runs(args: tuple[str, int, int]) -> int:
    """Child process: runs start..stop-1 with 5 params and 3 metrics each (public API)."""
    url, start, stop = args
    import mlops_jupyter as mj

    mj.set_store(url)
    for i in range(start, stop):
        params = {"lr": 10 ** -(1 + i % 5), "batch": 2 ** (4 + i % 4), "seed": i, "opt": "adam"}
        params["layers"] = 1 + i % 6
        with mj.start_run(f"r{i}", experiment="table", params=params):
            mj.log(step=0, loss=1.0 / (1 + i % 997), acc=(i % 101) / 100, lr=params["lr"])
    return stop - start


def runs_table(counts: tuple[int, ...], url: str) -> dict:
    import mlops_jupyter as mj
    from mlops_jupyter.store import open_store
    from mlops_jupyter.store.api_table import table

    store = open_store(url)
    cols = [f"params.{p}" for p in ("lr", "batch", "seed", "opt", "layers")]
    cols += ["metrics.loss.last", "metrics.acc.last", "metrics.lr.last"]
    res: dict = {}
    have = 0
    for target in counts:
        t = time.perf_counter()
        # created by 2 processes: creation is not what is measured, only the reads below
        cut = have + (target - have) // 2
        with mp.get_context("spawn").Pool(2) as pool:
            pool.map(_make_runs, [(url, have, cut), (url, cut, target)])
        have = target
        log(f"  created {target:,} runs ({time.perf_counter() - t:.0f} s)")
        page = table(store, columns=cols, sort="metrics.loss.last", limit=100)
        assert page["total"] == target and len(page["rows"]) == 100, page["total"]
        res[f"table_{target}_ms"] = (
            timed(lambda: table(store, columns=cols, sort="metrics.loss.last", limit=100), 5) * 1e3
        )
        assert mj.runs().height == target
        res[f"runs_{target}_ms"] = timed(mj.runs, 3) * 1e3
        log(
            f"  {target:,} runs: table() {res[f'table_{target}_ms']:.0f} ms,"
            f" mj.runs() {res[f'runs_{target}_ms']:.0f} ms"
        )
    return res


def _log_points(args: tuple[str, int, int]) -> tuple[float, list[str]]:
    """Child process: one run of `n` points. Returns (seconds from start_run to the end of
    the run, warnings and errors surfaced)."""
    url, i, n = args
    import mlops_jupyter as mj

    mj.set_store(url)
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        t = time.perf_counter()
        try:
            with mj.start_run(f"w{i}", experiment="procs"):
                lm = mj.log_metric
                for s in range(n):
                    lm("loss", 1.0 / (s + 1), s)
        except Exception as e:  # counted, not raised: the parent checks there are none
            problems.append(f"{type(e).__name__}: {e}")
        dt = time.perf_counter() - t
    problems += [str(w.message) for w in seen]
    return dt, problems


def concurrent(procs: int, points: int, url: str) -> dict:
    """`procs` spawned processes log `points` each at once; every point must be stored."""
    import mlops_jupyter as mj

    ctx = mp.get_context("spawn")
    t = time.perf_counter()
    with ctx.Pool(procs) as pool:
        out = pool.map(_log_points, [(url, i, points) for i in range(procs)])
    wall = time.perf_counter() - t
    problems = [p for _, ps in out for p in ps]
    rids = mj.runs(experiment="procs")["id"].to_list()
    stored = mj.metrics(rids, keys=["loss"]).height if rids else 0
    return {
        "mp_points": stored,
        "mp_expected": procs * points,
        "mp_errors": len(problems),
        "mp_error_text": problems[:3],
        "mp_s": wall,
        "mp_run_s": max(dt for dt, _ in out),
    }


# -- MLflow ------------------------------------------------------------------------------
ML_TABLES = ["metrics", "latest_metrics"]


def mlflow_side(sizes: dict, url: str, root: Path) -> dict:
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    # psycopg warns when SQLAlchemy closes a connection whose pipeline MLflow aborted
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    res: dict = {"mlflow_version": mlflow.__version__}
    client = MlflowClient(tracking_uri=url.replace("postgresql://", "postgresql+psycopg://"))

    def experiment(name: str) -> str:
        return client.create_experiment(name, artifact_location=str(root / "mlflow" / name))

    rng = np.random.default_rng(0)
    now = int(time.time() * 1000)

    # 2./3. ingest with log_batch (1000 metrics per request, MLflow's limit); the metric
    # tables are empty before, so their size afterwards is these points'
    n = sizes["mlflow_ingest"]
    empty = relation_bytes(url, ML_TABLES)
    vals = rng.random(n).tolist()
    rid = client.create_run(experiment("ingest")).info.run_id
    t = time.perf_counter()
    for i in range(0, n, 1000):
        client.log_batch(
            rid,
            metrics=[
                Metric(KEYS[j % 10], vals[j], now, j // 10) for j in range(i, min(n, i + 1000))
            ],
        )
    res["ingest_pts_s"] = n / (time.perf_counter() - t)
    client.set_terminated(rid)
    res["bytes_per_point"] = (relation_bytes(url, ML_TABLES) - empty) / n
    res["bytes_per_point_vf"] = (relation_bytes(url, ML_TABLES, vacuum_full=True) - empty) / n
    log(f"  ingest {res['ingest_pts_s']:,.0f} points/s, {res['bytes_per_point']:.1f} B/point")

    # 1. per-call cost: log_metric (one request per point) and log_batch of 1000
    rid = client.create_run(experiment("calls")).info.run_id
    step = iter(range(10**9))
    res["log_metric_ns"] = (
        median_per_call(
            lambda: client.log_metric(rid, "loss", 0.5, step=next(step)), sizes["mlflow_calls"], 10
        )
        * 1e9
    )
    batch = [Metric("loss", 0.5, now, s) for s in range(1000)]
    res["log_batch_ns"] = (
        median_per_call(lambda: client.log_batch(rid, metrics=batch), sizes["mlflow_batches"], 1)
        * 1e9
    )
    log(
        f"  log_metric {res['log_metric_ns'] / 1e6:.2f} ms, log_batch {res['log_batch_ns'] / 1e6:.1f} ms"
    )

    # 5. one run/key history
    h = sizes["history"]
    rid = client.create_run(experiment("history")).info.run_id
    hv = rng.random(h).tolist()
    for i in range(0, h, 1000):
        client.log_batch(
            rid, metrics=[Metric("loss", hv[j], now, j) for j in range(i, min(h, i + 1000))]
        )
    assert len(client.get_metric_history(rid, "loss")) == h
    res["history_ms"] = timed(lambda: client.get_metric_history(rid, "loss"), 3) * 1e3
    log(f"  history of {h:,} points {res['history_ms']:.0f} ms")

    # 4. search_runs: the sidebar's page (100 runs by loss) and the whole list
    exp = experiment("table")
    have = 0
    for target in sizes["mlflow_runs"]:
        t = time.perf_counter()
        for i in range(have, target):
            r = client.create_run(exp, run_name=f"r{i}").info.run_id
            client.log_batch(
                r,
                metrics=[
                    Metric("loss", 1.0 / (1 + i % 997), now, 0),
                    Metric("acc", (i % 101) / 100, now, 0),
                    Metric("lr", 10 ** -(1 + i % 5), now, 0),
                ],
                params=[
                    Param("lr", str(10 ** -(1 + i % 5))),
                    Param("batch", str(2 ** (4 + i % 4))),
                    Param("seed", str(i)),
                    Param("opt", "adam"),
                    Param("layers", str(1 + i % 6)),
                ],
            )
        have = target
        log(f"  created {target:,} MLflow runs ({time.perf_counter() - t:.0f} s)")
        page = client.search_runs([exp], order_by=["metrics.loss ASC"], max_results=100)
        assert len(page) == 100
        res[f"table_{target}_ms"] = (
            timed(
                lambda: client.search_runs([exp], order_by=["metrics.loss ASC"], max_results=100), 3
            )
            * 1e3
        )
        res[f"runs_{target}_ms"] = (
            timed(lambda: client.search_runs([exp], max_results=target), 1) * 1e3  # noqa: B023
        )
        log(
            f"  {target:,} runs: search_runs(100) {res[f'table_{target}_ms']:.0f} ms,"
            f" search_runs(all) {res[f'runs_{target}_ms']:.0f} ms"
        )
    return res


# -- report ------------------------------------------------------------------------------
def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"


def report(o: dict, m: dict, sizes: dict) -> None:
    ver = m.get("mlflow_version", "-")
    batch = m["log_batch_ns"] if m else None
    rows = [  # label, unit, target, ours, MLflow, higher is better
        ("log_metric, caller-visible (median)", "ns/call", "<= 1,000", "log_metric_ns", False),
        ("  vs MLflow log_batch(1000), per call", "ns/call", "", ("log_metric_ns", batch), False),
        ("  vs MLflow log_batch(1000), per point", "ns/point", "",
         ("log_metric_ns", batch and batch / 1000), False),
        (f"ingest committed (ours {sizes['ingest']:,}, MLflow {sizes['mlflow_ingest']:,} pts)",
         "points/s", "", "ingest_pts_s", True),
        ("disk per point (metric tables, as written)", "bytes", "", "bytes_per_point", False),
        ("disk per point (after VACUUM FULL)", "bytes", "", "bytes_per_point_vf", False),
    ]  # fmt: skip
    counts = sorted({*sizes["table_runs"], *sizes["mlflow_runs"]})
    rows += [(f"runs table page, 100 by loss, {c:,} runs", "ms", "<= 1,000", f"table_{c}_ms", False)
             for c in counts]  # fmt: skip
    rows += [(f"all runs (mj.runs / search_runs), {c:,} runs", "ms", "<= 1,000", f"runs_{c}_ms",
              False) for c in counts]  # fmt: skip
    rows.append((f"one history of {sizes['history']:,} points", "ms", "<= 50", "history_ms", False))
    head = f"{'figure':58} {'unit':9} {'target':>9} {'ours':>11} {'MLflow ' + ver:>14} {'ratio':>8}"
    print("\n" + head)
    for label, unit, target, key, hib in rows:
        ov, mv = (o.get(key[0]), key[1]) if isinstance(key, tuple) else (o.get(key), m.get(key))
        if label.startswith("  vs") and mv is None:
            continue  # only meaningful next to MLflow
        ratio = ""
        if ov and mv:
            r = ov / mv if hib else mv / ov
            ratio = f"{r:,.0f}x" if r >= 10 else f"{r:.1f}x"
        print(f"{label:58} {unit:9} {target:>9} {fmt(ov):>11} {fmt(mv):>14} {ratio:>8}")
    lost = o["mp_expected"] - o["mp_points"]
    print(
        f"\n{sizes['procs']} processes x {sizes['proc_points']:,} points at once (ours): "
        f"{o['mp_points']:,} of {o['mp_expected']:,} stored, {lost} lost, "
        f"{o['mp_errors']} errors/warnings, {o['mp_s']:.1f} s wall (spawn included), "
        f"slowest run {o['mp_run_s']:.1f} s"
    )
    for text in o["mp_error_text"]:
        print(f"  surfaced: {text}")
    print("\nratio: how many times faster (or smaller) mlops-jupyter is than MLflow on this figure")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--no-mlflow", action="store_true", help="measure mlops-jupyter only")
    a = ap.parse_args()
    sizes = QUICK if a.quick else FULL
    # the repository's package (also for spawned children: they inherit sys.path)
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from pgserver import PgServer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.pop("MLOPS_JUPYTER_STORE", None)
        # children (spawned) inherit these: telemetry samples would add sys/* points
        os.environ["MLOPS_JUPYTER_TELEMETRY"] = "0"
        os.environ["MLOPS_JUPYTER_ARTIFACTS"] = str(root / "artifacts")
        srv = PgServer()
        try:
            t = time.perf_counter()
            log("measuring mlops-jupyter (PostgreSQL store) ...")
            o = ours(sizes, srv.new_database("ours"), srv.new_database("ours_table"))
            m: dict = {}
            if not a.no_mlflow:
                log("measuring MLflow (SQLAlchemy store on the same server) ...")
                m = mlflow_side(sizes, srv.new_database("mlflow"), root)
            log(f"done in {time.perf_counter() - t:.0f} s")
        finally:
            try:
                from mlops_jupyter.store.db import close_all

                close_all()
            finally:
                srv.close()
    report(o, m, sizes)
    return 0 if o["mp_points"] == o["mp_expected"] and not o["mp_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
