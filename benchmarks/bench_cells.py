"""Per-cell overhead of the notebook-capture hooks.

1. Real kernel: a notebook of 200 trivial cells executed with nbclient, three ways:
   extension not loaded, loaded with no run active, loaded with a run active
   (`%mlops_run start`, so every cell is recorded into the store). Per-cell time is the
   kernel-side span between `execute_input` and `execute_reply` (nbclient's recorded
   timing), so client-side messaging noise stays out. Configurations are interleaved and
   repeated; the figure is the median over all cells.
2. Hooks alone: the pre/post cell callbacks called directly in this process, idle and with
   a run active (real store on disk), to show where the time goes.

    python benchmarks/bench_cells.py [--cells 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_IDLE_MS = 0.1
BUDGET_ACTIVE_MS = 1.0


# Registered after the extension: `pre_execute` fires before every `pre_run_cell`
# callback and this `post_run_cell` callback runs after the extension's, so the span covers
# IPython's event dispatch, both capture hooks and the cell itself, without messaging.
TIMER = """
import time as _t
_bench = []
def _bench_pre():
    global _bench_t0
    _bench_t0 = _t.perf_counter()
def _bench_post(result):
    _bench.append(_t.perf_counter() - _bench_t0)
get_ipython().events.register("pre_execute", _bench_pre)
get_ipython().events.register("post_run_cell", _bench_post)
"""
REPORT = "import json; print(json.dumps(_bench))"


def _notebook(n: int, mode: str):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    setup = {
        "baseline": ["import mlops_jupyter", TIMER],
        "idle": ["%load_ext mlops_jupyter", TIMER],
        "active": ["%load_ext mlops_jupyter", TIMER, "%mlops_run start bench --no-live"],
    }[mode]
    nb.cells = [nbformat.v4.new_code_cell(s) for s in setup]
    nb.cells += [nbformat.v4.new_code_cell(f"_ = {i} + 1") for i in range(n)]
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    if mode == "active":
        nb.cells.append(nbformat.v4.new_code_cell("%mlops_run end"))
    return nb, len(setup)


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def kernel_cell_ms(n: int, mode: str, cwd: str) -> tuple[list[float], list[float]]:
    """(in-kernel ms, kernel-reply ms) per trivial cell for one configuration."""
    import json

    from nbclient import NotebookClient

    nb, skip = _notebook(n, mode)
    NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": cwd}}
    ).execute()
    report = nb.cells[skip + n]
    inner = json.loads(report.outputs[0]["text"])
    # the first timed span is the timer cell's own post hook; then one per trivial cell
    inner = [t * 1000 for t in inner[-n - 1 : -1]]
    reply = []
    for cell in nb.cells[skip : skip + n]:
        t = cell.metadata["execution"]
        reply.append((_ts(t["shell.execute_reply"]) - _ts(t["iopub.execute_input"])) * 1000)
    return inner, reply


class _Info:
    def __init__(self, i: int) -> None:
        self.cell_id = f"cell-{i % 50}"
        self.raw_cell = f"_ = {i} + 1"


class _Result:
    error_before_exec = None
    error_in_exec = None

    def __init__(self, n: int) -> None:
        self.execution_count = n


def hook_us(n: int, active: bool) -> float:
    """Median microseconds of one pre+post hook pair, called directly."""
    import mlops_jupyter as mj
    from mlops_jupyter.capture import Session
    from mlops_jupyter.magics.core import CellHooks

    hooks = CellHooks(None, Session())
    run = mj.start_run("hook-bench") if active else None
    infos = [_Info(i) for i in range(n)]
    results = [_Result(i) for i in range(n)]
    times = []
    for info, res in zip(infos, results):
        t = time.perf_counter()
        hooks.pre_run_cell(info)
        hooks.post_run_cell(res)
        times.append(time.perf_counter() - t)
    if run is not None:
        run.end()
    return statistics.median(times) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLOPS_JUPYTER_STORE"] = str(Path(tmp) / "store.db")
        os.environ["MLOPS_JUPYTER_TELEMETRY"] = "0"  # measure capture, not the sampler
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        modes = ("baseline", "idle", "active")
        inner: dict[str, list[float]] = {m: [] for m in modes}
        reply: dict[str, list[float]] = {m: [] for m in modes}
        per_rep: list[dict[str, float]] = []
        for _ in range(args.repeats):
            rep = {}
            for mode in modes:  # interleaved, so drift hits every configuration alike
                a, b = kernel_cell_ms(args.cells, mode, tmp)
                inner[mode] += a
                reply[mode] += b
                rep[mode] = statistics.median(a)
            per_rep.append(rep)
        med = {m: statistics.median(v) for m, v in inner.items()}
        rmed = {m: statistics.median(v) for m, v in reply.items()}
        idle = med["idle"] - med["baseline"]
        active = med["active"] - med["baseline"]
        n = args.cells * args.repeats
        print(
            f"real kernel, {args.cells} trivial cells x {args.repeats} runs (nbclient), "
            f"median ms/cell (n={n} per row):"
        )
        print("                                in kernel   execute_input->reply")
        labels = (
            "extension not loaded         ",
            "loaded, no run active        ",
            "loaded, run active (recorded)",
        )
        for m, label in zip(modes, labels):
            print(f"  {label} {med[m]:8.3f}   {rmed[m]:8.3f}")
        print(
            "  per-run overhead, no run active (us): "
            + ", ".join(f"{(r['idle'] - r['baseline']) * 1000:+.0f}" for r in per_rep)
        )
        print(
            "  per-run overhead, run active (us):    "
            + ", ".join(f"{(r['active'] - r['baseline']) * 1000:+.0f}" for r in per_rep)
        )
        print(
            f"overhead, no run active: {idle * 1000:+.0f} us/cell "
            f"(budget {BUDGET_IDLE_MS * 1000:.0f} us: {'ok' if idle <= BUDGET_IDLE_MS else 'OVER'})"
        )
        print(
            f"overhead, run active:    {active * 1000:+.0f} us/cell "
            f"(budget {BUDGET_ACTIVE_MS * 1000:.0f} us: "
            f"{'ok' if active <= BUDGET_ACTIVE_MS else 'OVER'})"
        )
        import mlops_jupyter as mj

        mj.set_store(Path(tmp) / "hooks.db")
        hi, ha = hook_us(2000, False), hook_us(2000, True)
        print("hooks alone, called directly (pre + post, median of 2000):")
        print(f"  no run active: {hi:.2f} us/cell")
        print(f"  run active:    {ha:.1f} us/cell (one SQLite transaction per cell)")
        mj.set_store(None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
