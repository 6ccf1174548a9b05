"""The Serving view on a big prediction log: time of the route's work (serving_detail: stats,
A/B verdict, rollouts, drift) and of store.serving_stats.model_stats alone, the way the
sidebar asks (no window, no since), at 100k and 1M logged predictions, before and after
the aggregates moved into SQL, on SQLite and PostgreSQL.

    python benchmarks/bench_serving_stats.py [--sizes 100000,1000000]
        [--backends sqlite,postgresql] [--old REF] [--rounds 5]

"Before" is the code of git REF (default: the commit before the change), checked out in a
temporary git worktree; each store is built once with that code, through the store's bulk
logging path (store.serving.log_predictions, 50k rows a transaction), then timed with the
old code, then opened with the current code (which adds the new index: its migration time
is printed) and timed again. On PostgreSQL the tables are vacuumed and analyzed after the
build, as autovacuum does on a live server. The log: 4 variants (one a shadow) over 24 hours, 95%
answered, feedback (0/1) on 5000 requests. Each timing runs in a fresh process after one
warm-up call; medians of --rounds calls in each of two processes (old code first: once the
current code has opened a store, the old code refuses its newer schema).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD_REF = "1b8b2cc"  # the last commit that read every prediction row into Python

BUILD = r"""
import sys, time
import numpy as np
from mlops_jupyter.store import open_store
from mlops_jupyter.store import serving as sstore
loc, n = sys.argv[1], int(sys.argv[2])
store = open_store(loc)
rng = np.random.default_rng(0)
t1 = 1_790_000_000.0
ts = np.sort(rng.uniform(t1 - 86400, t1, n))
pairs = [("v1", 1), ("v2", 2), ("v3", 3), ("shadow:v2", 2)]
pick = rng.choice(4, size=n, p=[0.6, 0.2, 0.1, 0.1])
status = rng.choice([200, 500, 422], size=n, p=[0.95, 0.03, 0.02])
lat = rng.gamma(2.0, 4.0, n)
t = time.perf_counter()
for s in range(0, n, 50_000):
    rows = [(f"r{i}", "clf", pairs[p][1], pairs[p][0], float(ts[i]), float(lat[i]),
             int(status[i]), None, 1, 1, "[0]", "w")
            for i, p in zip(range(s, min(n, s + 50_000)), pick[s : s + 50_000].tolist())]
    sstore.log_predictions(store, rows)
fed = rng.choice(np.flatnonzero((status == 200) & (pick < 3)), size=5000, replace=False)
for i in fed.tolist():
    sstore.add_feedback(store, f"r{i}", int(rng.random() < (0.3 if pick[i] == 1 else 0.2)))
print(time.perf_counter() - t)
"""

TIME = r"""
import json, statistics, sys, time
from mlops_jupyter.store import open_store
loc, rounds = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
store = open_store(loc)
opened = time.perf_counter() - t
from mlops_jupyter.server.serving import serving_detail
from mlops_jupyter.store.serving_stats import model_stats
out = {"open_s": opened, "code": __import__("mlops_jupyter").__file__}
for name, fn in [("model_stats", lambda: model_stats(store, "clf")),
                 ("route", lambda: serving_detail(store, "clf", control="v1"))]:
    d = fn()  # warm-up (and the page cache)
    ts, cpu = [], []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        d = fn()
        ts.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    out[name] = ts
    out[name + "_cpu"] = cpu
    out[name + "_requests"] = d["requests"]
print(json.dumps(out))
"""


def _run(code: str, pythonpath: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    env.pop("MLOPS_JUPYTER_STORE", None)
    # run from that tree: `python -c` puts the working folder first on sys.path
    p = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env, cwd=pythonpath, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if p.returncode:
        raise SystemExit(f"failed ({pythonpath}):\n{p.stderr[-3000:]}")
    return p.stdout.strip().splitlines()[-1]


def measure(loc: str, n: int, old: Path, rounds: int) -> dict:
    built = float(_run(BUILD, old, loc, str(n)))
    if loc.startswith("postgresql"):
        # what autovacuum does on a live server (an insert-only table is vacuumed too): the
        # planner's statistics, and the visibility map that index-only scans need
        import psycopg

        with psycopg.connect(loc, autocommit=True) as c:
            c.execute("VACUUM ANALYZE serving_predictions")
            c.execute("VACUUM ANALYZE serving_feedback")
    res: dict = {"n": n, "build_s": built, "old": [], "new": [], "open_new_s": None}
    # old code first: once the current code opened the store, its schema is newer than
    # the old code accepts
    for which, path in (("old", old), ("old", old), ("new", ROOT), ("new", ROOT)):
        d = json.loads(_run(TIME, path, loc, str(rounds)))
        assert d["code"].startswith(str(path)), (d["code"], path)  # the code meant
        if which == "new" and res["open_new_s"] is None:
            res["open_new_s"] = d["open_s"]
        assert d["model_stats_requests"] == n, d
        res[which].append(d)
    return res


def _med(ds: list[dict], key: str) -> float:
    return statistics.median(x for d in ds for x in d[key])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--old", default=OLD_REF, help="git ref of the code before the change")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), args.old],
            check=True,
        )
        pg = None
        try:
            rows = []
            for backend in args.backends.split(","):
                for n in sizes:
                    if backend == "sqlite":
                        loc = str(Path(tmp) / f"s{n}" / "store.db")
                    else:
                        if pg is None:
                            sys.path.insert(0, str(ROOT / "tests"))
                            from pgserver import PgServer

                            pg = PgServer()
                        loc = pg.new_database(f"bench{n}")
                    r = measure(loc, n, old, args.rounds)
                    r["backend"] = backend
                    rows.append(r)
                    _print(r)
            print(f"\nload average: {os.getloadavg()}")
            print("| backend | predictions | model_stats before | after | route before | after |")
            print("|---|---|---|---|---|---|")  # wall-clock medians
            for r in rows:
                ms_o, ms_n = _med(r["old"], "model_stats"), _med(r["new"], "model_stats")
                ro_o, ro_n = _med(r["old"], "route"), _med(r["new"], "route")
                print(f"| {r['backend']} | {r['n']:,} | {ms_o:.3f} s | {ms_n:.3f} s "
                      f"({ms_o / ms_n:.1f}x) | {ro_o:.3f} s | {ro_n:.3f} s ({ro_o / ro_n:.1f}x) |")  # fmt: skip
        finally:
            if pg is not None:
                pg.close()
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False
            )


def _print(r: dict) -> None:
    print(
        f"{r['backend']} {r['n']:,} rows: built in {r['build_s']:.1f} s; new schema (index) "
        f"added on open in {r['open_new_s']:.1f} s; load {os.getloadavg()[0]:.1f}"
    )
    for which in ("old", "new"):
        for key in ("model_stats", "route"):
            xs = [round(x, 3) for d in r[which] for x in d[key]]
            cpu = _med(r[which], key + "_cpu")
            print(f"  {which} {key}: median {statistics.median(xs):.3f} s (CPU of this "
                  f"process {cpu:.3f} s)  {xs}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    # stopped with SIGTERM: still stop the PostgreSQL server and remove the worktree
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    started = time.time()
    main()
    print(f"total {time.time() - started:.0f} s")
