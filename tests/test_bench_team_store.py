"""Smoke test of benchmarks/bench_team_store.py: `--quick --no-mlflow` runs our side against a
real PostgreSQL server it starts itself and prints every figure (no timing is checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_prints_every_figure():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_JUPYTER_")}
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_team_store.py"),
            "--quick",
            "--no-mlflow",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for label in (
        "log_metric, caller-visible",
        "ingest committed",
        "disk per point",
        "runs table page, 100 by loss, 1,000 runs",
        "all runs (mj.runs / search_runs), 1,000 runs",
        "one history of 10,000 points",
    ):
        line = next((ln for ln in out.splitlines() if ln.startswith(label)), None)
        assert line is not None, f"{label!r} missing from:\n{out}"
        # our column holds a number
        assert re.search(r"\d", line[len(label) :]), line
    assert "80,000 of 80,000 stored, 0 lost, 0 errors/warnings" in out, out
    # without MLflow there is nothing to compare with
    assert "MLflow -" in out
