"""Remote client benchmark (`MLOPS_JUPYTER_STORE=http://...`), same machine, one run:

- the cost of one `run.log_metric` call in the caller, logging through a tracking server vs
  into a local SQLite store (median of timed blocks of 100,000 calls, nanoseconds a call):
  wall time, and the CPU time of the calling thread (what the call itself costs, without
  the time the OS gave the sender thread or the server process on a busy machine);
- points/s delivered end to end: from the first log call until every point is committed in
  the server's store (the run ended, points counted in the store).

Each measurement runs in a fresh client process (one writer thread, like a real job).

    python benchmarks/bench_remote_client.py            # 2,000,000 points a run
    python benchmarks/bench_remote_client.py --quick    # 200,000

Nothing here is a test: the numbers depend on the machine.
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
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from trackserver_helpers import Server  # noqa: E402

CLIENT = textwrap.dedent(
    """
    import json, statistics, sys, time
    import mlops_jupyter as mj
    n, block = int(sys.argv[1]), 100_000
    t0 = time.perf_counter()
    per_call, cpu_call = [], []
    with mj.start_run("bench", experiment="bench") as run:
        log = run.log_metric
        t_first = time.perf_counter()
        i = 0
        while i < n:
            t, c = time.perf_counter_ns(), time.thread_time_ns()
            for j in range(i, min(n, i + block)):
                log("loss", 0.5, j)
            k = min(n, i + block) - i
            per_call.append((time.perf_counter_ns() - t) / k)
            cpu_call.append((time.thread_time_ns() - c) / k)
            i += block
        t_logged = time.perf_counter()
    t_done = time.perf_counter()  # the end flushed and committed every point
    print(json.dumps({
        "id": run.id,
        "ns_per_call": statistics.median(per_call),
        "cpu_ns_per_call": statistics.median(cpu_call),
        "worst_block_ns": max(per_call),
        "log_s": t_logged - t_first,
        "end_to_end_s": t_done - t_first,
    }))
    """
)


def client(env: dict[str, str], n: int) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", CLIENT, str(n)], env=env, capture_output=True, text=True
    )
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def count(store: str, run_id: str) -> int:
    import mlops_jupyter as mj

    mj.set_store(store)
    return mj.metrics(run_id, "loss").height


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n = 200_000 if args.quick else 2_000_000
    from mlops_jupyter.store import open_store, tokens

    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        base = dict(os.environ, PYTHONPATH=str(ROOT), MLOPS_JUPYTER_TELEMETRY="0")
        local = str(tmp_p / "local" / "store.db")
        served = str(tmp_p / "served" / "store.db")
        tok = tokens.add(open_store(served), "bench", "write")
        rows = {"local SQLite store": [], "tracking server (loopback)": []}
        with Server(dict(base, MLOPS_JUPYTER_STORE=served), tmp_p) as srv:
            remote_env = dict(
                base,
                MLOPS_JUPYTER_STORE=srv.url,
                MLOPS_JUPYTER_TOKEN=tok,
                MLOPS_JUPYTER_SPOOL_DIR=str(tmp_p / "spool"),
            )
            for _ in range(args.repeats):
                r = client(dict(base, MLOPS_JUPYTER_STORE=local), n)
                assert count(local, r["id"]) == n
                rows["local SQLite store"].append(r)
                r = client(remote_env, n)
                assert count(served, r["id"]) == n, "points lost"
                rows["tracking server (loopback)"].append(r)
        print(f"{n:,} points a run, {args.repeats} runs each (median shown)\n")
        print(
            "| store | log call, wall (ns) | log call, caller's CPU (ns) | worst block (ns/call)"
            " | end to end |"
        )
        print("|---|---:|---:|---:|---:|")
        for name, rs in rows.items():
            rs.sort(key=lambda r: r["end_to_end_s"])
            mid = rs[len(rs) // 2]
            ns = sorted(r["ns_per_call"] for r in rs)[len(rs) // 2]
            cpu = sorted(r["cpu_ns_per_call"] for r in rs)[len(rs) // 2]
            worst = max(r["worst_block_ns"] for r in rs)
            pps = n / mid["end_to_end_s"]
            print(f"| {name} | {ns:.0f} | {cpu:.0f} | {worst:.0f} | {pps:,.0f} points/s |")


if __name__ == "__main__":
    main()
