"""Log-call latency while the PostgreSQL store is down: every call timed, worst and p99.9.

    python benchmarks/bench_log_outage.py                 # two loops, 10 s outage each
    python benchmarks/bench_log_outage.py --seconds 3     # shorter
    python benchmarks/bench_log_outage.py --trace         # also print what the background
                                                          # threads did around each slow call
    python benchmarks/bench_log_outage.py --src OTHER_CHECKOUT   # another tree's package

A real PostgreSQL server (tests/pgserver.py) is stopped mid-run while one loop logs; the
points wait in the writer's queue (and spill to the spool file past MLOPS_JUPYTER_MAX_QUEUE)
and are all written once the server is back, which is checked. Two loops:

  paced  500 calls then a 10 ms sleep (a training loop with work between logs; the loop of
         tests/test_store_postgres.py), about 50k points a second: no spill in 10 s
  burst  5,000 calls then a 1 ms sleep, about 1M points a second: the queue spills

A full garbage collection (CPython's, of every object in the process) lands in whichever
call allocates, a log call included: the last column counts them and gives the longest, and
`--freeze` moves the objects made before the loop out of the collector (gc.freeze), as
tests/test_store_postgres.py does, to time logging alone.

Nothing here is a test: the figures depend on the machine and its load (printed).
"""

from __future__ import annotations

import argparse
import array
import gc
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LOOPS = {"paced": (500, 0.010), "burst": (5000, 0.001)}


def _trace_threads(events: list) -> None:
    """Record (start, end, thread, what) of the queue's and writer's long steps, and of
    garbage collections: enough to see what overlapped a slow call."""
    from mlops_jupyter.tracking import buffer, writer

    def wrap(cls, name):
        real = getattr(cls, name)

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                events.append((t, time.perf_counter(), threading.current_thread().name, name))

        setattr(cls, name, timed)

    for name in ("compact", "_spill", "take", "done", "_pack_slice", "full"):
        wrap(buffer.Queue, name)
    wrap(buffer.Spool, "write")
    wrap(buffer.Spool, "get")
    wrap(writer.Writer, "flush")
    gc_start: list[float] = []

    def on_gc(phase, info):
        if phase == "start":
            gc_start.append(time.perf_counter())
        elif gc_start:
            g = info["generation"]
            events.append((gc_start.pop(), time.perf_counter(), "gc", f"gen{g}"))

    gc.callbacks.append(on_gc)


def outage_loop(
    mj, srv, url: str, loop: str, seconds: float, events: list | None, freeze: bool = False
) -> dict:
    """Log while the server is stopped; return the latency figures (seconds)."""
    calls, pause = LOOPS[loop]
    mj.set_store(url)
    run = mj.start_run(f"outage-{loop}")
    log = mj.log_metric
    for i in range(4000):
        log("loss", 1.0 / (i + 1), step=i)
    mj.flush()
    srv.stop("fast")
    if freeze:
        gc.collect()
        gc.freeze()
    full_gc: list[float] = []  # full collections during the outage, in any thread
    gc_t: list[float] = []

    def on_gc(phase, info):
        if info["generation"] == 2:
            if phase == "start":
                gc_t.append(time.perf_counter())
            elif gc_t:
                full_gc.append(time.perf_counter() - gc_t.pop())

    gc.callbacks.append(on_gc)
    lat = array.array("d")
    add = lat.append
    clock = time.perf_counter
    slow: list[tuple[float, float]] = []
    i = 4000
    t_end = time.monotonic() + seconds
    t_start = clock()
    while time.monotonic() < t_end:
        for _ in range(calls):
            t0 = clock()
            log("loss", 1.0, step=i)
            d = clock() - t0
            add(d)
            if d > 0.005:
                slow.append((t0, d))
            i += 1
        time.sleep(pause)
    elapsed = clock() - t_start
    gc.callbacks.remove(on_gc)
    if freeze:
        gc.unfreeze()
    w = run._writer
    spooled = w.q.spooled_points
    run.end()
    srv.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            h = mj.metrics(run.id, keys=["loss"])
            if h.height == i:
                break
        except Exception:
            pass
        time.sleep(0.3)
    h = mj.metrics(run.id, keys=["loss"])
    if h["step"].to_list() != list(range(i)):
        raise SystemExit(f"{loop}: points were lost or reordered ({h.height} of {i})")
    a = np.frombuffer(lat, np.float64)
    if events is not None:
        for t0, d in slow:
            near = [
                f"    {name:>14} {what:<16} {(s - t0) * 1e3:+8.1f} ms for {(e - s) * 1e3:6.1f} ms"
                for s, e, name, what in events
                if s < t0 + d and e > t0 - 0.002
            ]
            print(f"  slow call {d * 1e3:.1f} ms at +{(t0 - t_start):.3f} s")
            print("\n".join(near) or "    (no traced step overlaps)")
        events.clear()
    return {
        "calls": len(a),
        "rate": len(a) / elapsed,
        "max": float(a.max()),
        "p999": float(np.quantile(a, 0.999)),
        "p9999": float(np.quantile(a, 0.9999)),
        "over5ms": int(np.count_nonzero(a > 0.005)),
        "spooled": spooled,
        "gc": max(full_gc, default=0.0),
        "gcs": len(full_gc),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="outage length per loop")
    ap.add_argument("--loops", default="paced,burst", help="paced, burst or both")
    ap.add_argument("--trace", action="store_true", help="show what overlapped slow calls")
    ap.add_argument("--repeat", type=int, default=1, help="outages per loop")
    ap.add_argument(
        "--freeze", action="store_true", help="gc.freeze() the objects made before the loop"
    )
    ap.add_argument("--src", help="measure the package of another checkout (same figures)")
    a = ap.parse_args()
    sys.path[:0] = [a.src or str(ROOT), str(ROOT / "tests")]
    from pgserver import PgServer

    import mlops_jupyter as mj

    warnings.simplefilter("ignore")
    events: list | None = [] if a.trace else None
    if a.trace:
        _trace_threads(events)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.pop("MLOPS_JUPYTER_STORE", None)
        os.environ["MLOPS_JUPYTER_TELEMETRY"] = "0"
        os.environ["MLOPS_JUPYTER_EXIT_WAIT"] = "0"
        os.environ["MLOPS_JUPYTER_ARTIFACTS"] = str(Path(tmp) / "artifacts")
        srv = PgServer()
        try:
            v = sys.version_info
            print(f"Python {v.major}.{v.minor}.{v.micro}, load average {os.getloadavg()[0]:.2f}")
            print(f"{'loop':<6} {'calls':>9} {'calls/s':>9} {'max':>9} {'p99.9':>9} "
                  f"{'p99.99':>9} {'>5 ms':>6} {'spooled':>9}   full GCs (longest)")  # fmt: skip
            for loop in a.loops.split(","):
                for _ in range(a.repeat):
                    r = outage_loop(
                        mj, srv, srv.new_database(loop), loop, a.seconds, events, a.freeze
                    )
                    print(
                        f"{loop:<6} {r['calls']:>9,} {r['rate']:>9,.0f} "
                        f"{r['max'] * 1e3:>6.2f} ms {r['p999'] * 1e6:>6.1f} us "
                        f"{r['p9999'] * 1e6:>6.1f} us {r['over5ms']:>6} {r['spooled']:>9,}   "
                        f"{r['gcs']} ({r['gc'] * 1e3:.1f} ms)",
                        flush=True,
                    )
            print(f"load average after: {os.getloadavg()[0]:.2f}")
        finally:
            mj.set_store(None)
            from mlops_jupyter.store.db import close_all

            close_all()
            srv.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
