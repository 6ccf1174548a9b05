"""`store copy` throughput: runs × points copied SQLite -> PostgreSQL and back.

    python benchmarks/bench_store_copy.py            # 200 runs x 10,000 points
    python benchmarks/bench_store_copy.py --quick    # 20 runs x 2,000 points

Starts a real PostgreSQL server (tests/pgserver.py), logs the runs into a SQLite store with
the public API, then times `copy_runs` SQLite -> PostgreSQL, again (nothing to copy), and
PostgreSQL -> a new SQLite file. Prints seconds and metric points per second. Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def populate(loc: Path, runs: int, points: int) -> float:
    import mlops_jupyter as mj

    mj.set_store(loc)
    t = time.perf_counter()
    for i in range(runs):
        with mj.start_run(f"r{i}", experiment="bench", params={"i": i, "lr": 1e-3}):
            for s in range(points):
                mj.log_metric("loss", 1.0 / (s + 1), step=s)
    mj.flush()
    mj.set_store(None)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--points", type=int)
    a = ap.parse_args()
    runs = a.runs or (20 if a.quick else 200)
    points = a.points or (2_000 if a.quick else 10_000)
    os.environ.setdefault("MLOPS_JUPYTER_TELEMETRY", "0")
    os.environ.setdefault("MLOPS_JUPYTER_PROGRESS", "0")

    from pgserver import PgServer

    from mlops_jupyter.store.copy import copy_runs
    from mlops_jupyter.store.db import close_all, open_store

    tmp = Path(tempfile.mkdtemp(prefix="bench-copy-"))
    os.environ["MLOPS_JUPYTER_ARTIFACTS"] = str(tmp / "pg-artifacts")
    server = PgServer()
    try:
        src = tmp / "src" / "store.db"
        t_log = populate(src, runs, points)
        print(f"logged {runs} runs x {points:,} points into SQLite in {t_log:.2f}s")
        pg = server.new_database()
        rows = []
        for label, s, d in (
            ("SQLite -> PostgreSQL", src, pg),
            ("again (nothing to copy)", src, pg),
            ("PostgreSQL -> new SQLite", pg, tmp / "back" / "store.db"),
        ):
            n = copy_runs(open_store(s), open_store(d), progress=False)
            rate = n["points"] / n["seconds"] if n["points"] else 0
            rows.append((label, n["runs"], n["points"], n["seconds"], rate))
            close_all()
        print("| copy | runs | points | seconds | points/s |\n|---|---:|---:|---:|---:|")
        for label, r, p, s, rate in rows:
            print(f"| {label} | {r} | {p:,} | {s:.2f} | {rate:,.0f} |")
    finally:
        close_all()
        server.close()


if __name__ == "__main__":
    main()
