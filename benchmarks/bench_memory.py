"""Memory and caller cost of the logging queue: a tight loop of N `log_metric` calls, the
same loop while another process holds the store's write lock (the writer cannot write:
points go to the spool past MLOPS_JUPYTER_MAX_QUEUE), and `mj.log` with several keys.

    python benchmarks/bench_memory.py                 # 5M points (about a minute)
    python benchmarks/bench_memory.py --points 1000000
    python benchmarks/bench_memory.py --src OTHER_CHECKOUT   # the same figures for another tree

Each scenario runs in a fresh interpreter. "RSS above baseline" is the peak resident set
size of that process (getrusage) minus its RSS just before the loop, with the run started.
Nothing here is a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import json, os, resource, sqlite3, statistics, sys, time
    import psutil
    import mlops_jupyter as mj

    scenario, n, store = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    mj.set_store(store)
    proc = psutil.Process()
    out = {}
    with mj.start_run("bench") as run:
        mj.log_metric("warm", 0.0)
        mj.flush()
        other = None
        if scenario == "locked":
            other = sqlite3.connect(store, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
        if scenario == "log_keys":
            log = mj.log
            for k in (1, 3, 8):
                kw = {f"m{j}": 0.5 for j in range(k)}
                per, cpu = [], []
                for _ in range(max(1, n // (1000 * k))):
                    t, c = time.perf_counter(), time.thread_time()
                    for s in range(1000):
                        log(step=s, **kw)
                    per.append((time.perf_counter() - t) / 1000)
                    cpu.append((time.thread_time() - c) / 1000)
                out[f"log_{k}_keys_us"] = statistics.median(per) * 1e6
                out[f"log_{k}_keys_cpu_us"] = statistics.median(cpu) * 1e6
        else:
            base = proc.memory_info().rss
            log = mj.log_metric
            batch, per = 10_000, []
            t0, c0 = time.perf_counter(), time.thread_time()
            for b in range(n // batch):
                t = time.perf_counter()
                for i in range(b * batch, (b + 1) * batch):
                    log("loss", 0.5, i)
                per.append((time.perf_counter() - t) / batch)
            loop = time.perf_counter() - t0
            out["call_cpu_us"] = (time.thread_time() - c0) / n * 1e6
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            out["loop_s"] = loop
            out["call_mean_us"] = loop / n * 1e6
            out["call_median_us"] = statistics.median(per) * 1e6
            out["peak_above_base_mib"] = (peak - base) / 2**20
            w = run._writer
            q = getattr(w, "q", None)  # None in versions before the bounded queue
            out["pending_after_loop"] = w.pending() if q is not None else len(w.queue)
            out["spooled_points"] = q.spooled_points if q is not None else 0
            out["in_memory_points"] = (
                len(q.stage) + q.mem_points if q is not None else len(w.queue)
            )
            if other is not None:
                time.sleep(0.5)
                other.execute("COMMIT")
                other.close()
            t = time.perf_counter()
            mj.flush()
            out["drain_s"] = time.perf_counter() - t
            out["rss_after_flush_above_base_mib"] = (proc.memory_info().rss - base) / 2**20
    if scenario != "log_keys":
        got = mj.metrics(run.id, "loss").height
        out["stored_points"] = got
    out["module"] = mj.__file__
    print(json.dumps(out))
    """
)


def run(src: Path, scenario: str, n: int, env_extra: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(src), MLOPS_JUPYTER_TELEMETRY="0", **env_extra)
        env.pop("MLOPS_JUPYTER_STORE", None)
        r = subprocess.run(
            [sys.executable, "-c", CHILD, scenario, str(n), str(Path(tmp) / "store.db")],
            env=env,
            cwd=tmp,  # with -c the working directory comes first on sys.path
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if r.returncode != 0:
            raise SystemExit(f"{scenario} failed:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--points", type=int, default=5_000_000)
    ap.add_argument("--src", type=Path, default=ROOT, help="tree whose mlops_jupyter to measure")
    a = ap.parse_args()
    n = a.points
    tight = run(a.src, "tight", n, {})
    locked = run(a.src, "locked", min(n, 2_000_000), {})
    keys = run(a.src, "log_keys", 300_000, {})
    print(f"\n{tight['module']}, {n:,} points, Python {sys.version.split()[0]}")
    rows = [
        (
            "tight loop: peak RSS above baseline",
            f"{tight['peak_above_base_mib']:.0f} MiB",
            "<= 150",
        ),
        ("tight loop: log_metric, mean per call", f"{tight['call_mean_us']:.3f} us", "<= 1"),
        ("tight loop: log_metric, median batch", f"{tight['call_median_us']:.3f} us", "<= 1"),
        ("tight loop: log_metric, caller CPU per call", f"{tight['call_cpu_us']:.3f} us", "<= 1"),
        ("tight loop: points queued at loop end", f"{tight['pending_after_loop']:,}", ""),
        ("tight loop: drain after loop", f"{tight['drain_s']:.2f} s", ""),
        ("tight loop: points stored", f"{tight['stored_points']:,}", f"{n:,}"),
        ("locked store: peak RSS above baseline", f"{locked['peak_above_base_mib']:.0f} MiB", ""),
        ("locked store: log_metric, mean per call", f"{locked['call_mean_us']:.3f} us", "<= 1"),
        (
            "locked store: points in memory / spooled",
            f"{locked['in_memory_points']:,} / {locked['spooled_points']:,}",
            "",
        ),
        ("locked store: points stored after unlock", f"{locked['stored_points']:,}", ""),
        *[
            (
                f"mj.log(step, {k} key{'s' if k > 1 else ''}): wall / caller CPU",
                f"{keys[f'log_{k}_keys_us']:.3f} / {keys[f'log_{k}_keys_cpu_us']:.3f} us",
                "",
            )
            for k in (1, 3, 8)
        ],
    ]
    for label, value, target in rows:
        print(f"{label:44} {value:>22} {target:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
