"""Cost of monitoring live inputs in a serving worker, on this machine.

    python benchmarks/bench_serving_monitor.py [--requests 200000]

Prints:
  - µs per request on the request path with monitoring on (InputMonitor.add: a dict lookup,
    a list append, past 10,000 rows the reservoir step) against off (the app's
    `st.monitor is None` check), for a 1-row request of a 16-float field and a 200-row
    request of 4 columns;
  - the background thread's cost per window (off the request path): column profiles of
    10,000 sampled rows, drift against a 100,000-row training data version, one store write.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


def per_request_us(mon, fields: dict, n: int) -> tuple[float, float]:
    """(µs per request monitoring on, off) over `n` requests."""
    monitor = None
    t0 = time.perf_counter()
    for _ in range(n):
        if monitor is not None:  # the app's check when monitoring is off
            monitor.add("v1", 1, fields)
    off = (time.perf_counter() - t0) / n * 1e6
    monitor = mon
    t0 = time.perf_counter()
    for _ in range(n):
        if monitor is not None:
            monitor.add("v1", 1, fields)
    on = (time.perf_counter() - t0) / n * 1e6
    return on, off


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    args = ap.parse_args()

    import mlops_jupyter as mj
    from mlops_jupyter.serving import monitor as M
    from mlops_jupyter.tracking.api import current_store

    tmp = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    mj.set_store(tmp / "store.db")
    rng = np.random.default_rng(0)
    train = pl.DataFrame({c: rng.normal(size=100_000) for c in "abcd"})
    with mj.start_run(name="train"):
        mj.version(train, name="train")
        mj.register_model("m", {"w": 1})
    store = current_store()
    cases = [
        ("1 row, x: float32[16]", {"x": rng.normal(size=(1, 16)).astype(np.float32)}),
        ("200 rows, 4 float64 columns", {c: rng.normal(size=200) for c in "abcd"}),
    ]
    for label, fields in cases:
        mon = M.InputMonitor(store, "m", window=3600, worker="bench")
        on, off = per_request_us(mon, fields, args.requests)
        mon.windows.clear()  # not stored: only the request path is measured here
        mon.close()
        print(f"  {label:<30} on the request path: on {on:.2f} µs/request, off {off:.2f}")
    M.preload(store, "m", [1])  # as serve does before forking its workers
    mon = M.InputMonitor(store, "m", window=3600, worker="bench")
    fields = {c: rng.normal(size=200) for c in "abcd"}
    times = []
    for _ in range(3):
        for _ in range(50):  # 10,000 rows
            mon.add("v1", 1, fields)
        t0 = time.perf_counter()
        mon.flush(None)
        times.append((time.perf_counter() - t0) * 1e3)
    mon.close()
    ms = float(np.median(times))
    row = M.drift_windows(store, "m")[0]
    print(
        f"  closing one window of 10000 rows (profile, drift, store write): {ms:.0f} ms "
        f"(median of 3) "
        f"in the background thread (drifted: {row['drifted']})"
    )


if __name__ == "__main__":
    main()
