"""Cost of telemetry and of the live widget.

1. Sampler cost at 1 Hz: a real run left idle for `--seconds` with telemetry on and off;
   the difference in process CPU time (sampler thread + the writer storing its metrics +
   alert rules reading the store), as a % of one core. Also the sampler thread's own CPU
   time per sample.
2. `mj.log_metric` per call with the sampler running vs off (the hot path must not change).
3. Live widget: in a real kernel (nbclient), a `%%mlops_run` cell with a training-like loop
   logging 100k points (each step does a little numpy work, ~20 us), with the live monitor
   vs `--no-live`. Interleaved, repeated; the figure is the median loop time. A pure logging
   loop (no work per step) is reported as well.

    python benchmarks/bench_telemetry.py [--seconds 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_SAMPLER_PCT = 0.5
BUDGET_LIVE_PCT = 10.0


def sampler_cost(seconds: float) -> dict[str, float]:
    import psutil

    import mlops_jupyter as mj
    from mlops_jupyter.telemetry import sampler

    proc = psutil.Process()
    out = {}
    for mode in ("off", "on"):
        os.environ["MLOPS_JUPYTER_TELEMETRY"] = "0" if mode == "off" else "1"
        os.environ["MLOPS_JUPYTER_TELEMETRY_INTERVAL"] = "1"
        os.environ.setdefault("MLOPS_JUPYTER_TELEMETRY", "0")
        hub = sampler.hub()
        with mj.start_run(f"idle-{mode}"):
            time.sleep(2.5)  # warm-up: first samples open connections, prime counters
            t0, c0 = time.monotonic(), proc.cpu_times()
            ticks0, tcpu0 = hub.ticks, hub.tick_cpu_s
            time.sleep(seconds)
            c1, t1 = proc.cpu_times(), time.monotonic()
            ticks1, tcpu1 = hub.ticks, hub.tick_cpu_s
        cpu = (c1.user + c1.system) - (c0.user + c0.system)
        out[f"cpu_pct_{mode}"] = 100 * cpu / (t1 - t0)
        if mode == "on":
            n = max(1, ticks1 - ticks0)
            out["ticks"] = n
            out["tick_ms"] = 1000 * (tcpu1 - tcpu0) / n
    out["sampler_pct"] = out["cpu_pct_on"] - out["cpu_pct_off"]
    return out


def log_metric_ns() -> dict[str, float]:
    import mlops_jupyter as mj

    res = {"off": float("inf"), "on": float("inf")}
    for r in range(10):  # interleaved, both orders: the store grows and the machine drifts
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            os.environ["MLOPS_JUPYTER_TELEMETRY"] = "0" if mode == "off" else "1"
            with mj.start_run(f"hot-{mode}-{r}"):
                for _ in range(3):
                    t = time.perf_counter()
                    for _ in range(200_000):
                        mj.log_metric("loss", 0.5)
                    res[mode] = min(res[mode], (time.perf_counter() - t) / 200_000 * 1e9)
                    mj.flush()
    return res


CELL = """%%mlops_run {name} {flag}
import threading, time, numpy as np, psutil
a = np.ones((24, 24))
t0, p0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
for i in range({n}):
    {work}
    mj.log(step=i, loss=1.0 / (i + 1))
_dt, _pcpu, _mcpu = time.perf_counter() - t0, time.process_time() - p0, time.thread_time() - m0
# CPU time of the live monitor's follower thread during the loop (it is still following)
_ids = {{t.native_id for t in threading.enumerate() if t.name == "mlops-live" and t.is_alive()}}
_cpu = sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in _ids)
_times.append(("{key}", _dt, _pcpu, _mcpu, _cpu))
"""


def live_cost(repeats: int, n: int) -> dict[str, list[float]]:
    import nbformat
    from nbclient import NotebookClient

    cells = ["%load_ext mlops_jupyter\nimport mlops_jupyter as mj\n_times = []"]
    variants = [
        ("work-nolive", "--no-live", "b = a @ a"),
        ("work-live", "", "b = a @ a"),
        ("log-nolive", "--no-live", "pass"),
        ("log-live", "", "pass"),
    ]
    for r in range(repeats + 1):  # the first round warms up imports and caches
        order = variants if r % 2 == 0 else variants[::-1]
        for key, flag, work in order:
            cells.append(
                CELL.format(name=f"{key}-{r}", flag=flag, n=n, work=work, key=f"{key}/{r}")
            )
    cells.append("import json; print(json.dumps(_times))")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    with tempfile.TemporaryDirectory() as d:
        NotebookClient(
            nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": d}}
        ).execute()
    times = json.loads(nb.cells[-1].outputs[0]["text"])
    out: dict[str, list[float]] = {}
    for key, t, pcpu, mcpu, cpu in times:
        name, r = key.split("/")
        if r != "0":
            out.setdefault(name, []).append(t)
            out.setdefault(name + "-main", []).append(mcpu)
            out.setdefault(name + "-proc", []).append(pcpu)
            out.setdefault(name + "-cpu", []).append(cpu)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--points", type=int, default=100_000)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-telemetry-")
    os.environ["MLOPS_JUPYTER_STORE"] = str(Path(tmp) / "store.db")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    import psutil

    print(f"machine: {psutil.cpu_count()} CPUs, python {sys.version.split()[0]}")

    s = sampler_cost(a.seconds)
    print(f"\n1. sampler at 1 Hz (idle run, {a.seconds:.0f} s each)")
    print(f"   process CPU, telemetry off : {s['cpu_pct_off']:.3f} % of one core")
    print(f"   process CPU, telemetry on  : {s['cpu_pct_on']:.3f} % of one core")
    print(f"   difference                 : {s['sampler_pct']:.3f} % of one core (noisy)")
    print(f"   sampler thread CPU/sample  : {s['tick_ms']:.2f} ms over {s['ticks']:.0f} samples")
    print(
        f"   sampler cost at 1 Hz       : {s['tick_ms'] / 10:.3f} % of one core "
        f"(budget {BUDGET_SAMPLER_PCT} %)"
    )

    h = log_metric_ns()
    print("\n2. mj.log_metric per call (best of 30 x 200k, interleaved)")
    print(f"   telemetry off : {h['off']:.0f} ns")
    print(f"   telemetry on  : {h['on']:.0f} ns  (ratio {h['on'] / h['off']:.2f}x)")

    os.environ["MLOPS_JUPYTER_TELEMETRY"] = "1"
    os.environ["MLOPS_JUPYTER_TELEMETRY_INTERVAL"] = "1"
    lv = live_cost(a.repeats, a.points)
    med = {k: statistics.median(v) for k, v in lv.items()}
    print(f"\n3. %%mlops_run loop logging {a.points:,} points, real kernel, median of {a.repeats}")
    for kind, label in (("work", "with ~20 us work/step"), ("log", "pure logging loop")):
        no, yes = med[f"{kind}-nolive"], med[f"{kind}-live"]
        pno, pyes = med[f"{kind}-nolive-proc"], med[f"{kind}-live-proc"]
        cpu = med[f"{kind}-live-cpu"]
        mno, myes = med[f"{kind}-nolive-main"], med[f"{kind}-live-main"]
        print(f"   {label}:")
        print(
            f"     CPU time of the loop's own thread: --no-live {mno:.3f} s, live {myes:.3f} s "
            f"-> {100 * (myes / mno - 1):+.1f} %"
        )
        print(
            f"     kernel process CPU during the loop (all threads): --no-live {pno:.3f} s, "
            f"live {pyes:.3f} s -> {100 * (pyes / pno - 1):+.1f} %"
        )
        bno, byes = min(lv[f"{kind}-nolive"]), min(lv[f"{kind}-live"])
        print(
            f"     wall time, best run (least disturbed): --no-live {bno:.3f} s, live {byes:.3f} s"
            f" -> {100 * (byes / bno - 1):+.1f} % (budget {BUDGET_LIVE_PCT} %)"
        )
        print(
            f"     wall time, median: --no-live {no:.3f} s, live {yes:.3f} s -> "
            f"{100 * (yes / no - 1):+.1f} % (max no-live {max(lv[f'{kind}-nolive']):.3f} s, "
            f"live {max(lv[f'{kind}-live']):.3f} s)"
        )
        print(
            f"     live follower thread CPU during the loop: {1000 * cpu:.0f} ms "
            f"(clock-tick resolution, 10 ms)"
        )
    print(f"   load average during the run: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
