"""Smoke test of benchmarks/bench_mlflow_import.py: `--small` builds a real MLflow SQLite
store with the mlflow client, imports it twice and prints every figure (no timing is
checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("mlflow")


def test_small_run_prints_every_figure(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_JUPYTER_", "MLFLOW_"))}
    env["TMPDIR"] = str(tmp_path)
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_mlflow_import.py"), "--small"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert re.search(r"^import: 20 runs, 4,000 points in [\d.]+s = [\d,]+ points/s", out, re.M), out
    assert re.search(r"^import again \(nothing new\): [\d.]+s", out, re.M), out
    assert "read back: 4,000 points" in out, out
