"""Smoke test of benchmarks/bench_features.py: a small run (`--quick` with fewer labels,
entities and reads, no PostgreSQL) prints every figure, ours beside Feast's (Feast 0.67 from
`.venv-feast`, `make feast`), after its sample check found both sides giving the same
values. No timing is checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FEAST = ROOT / ".venv-feast" / "bin" / "python"


def test_quick_run_prints_every_figure():
    if not FEAST.exists():
        pytest.fail(f"no Feast venv at {FEAST.parent.parent}: run `make feast`")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_JUPYTER_")}
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_features.py"),
            "--quick",
            "--no-postgres",
            "--labels=3000",
            "--rows=3000",
            "--entities=1000",
            "--reads=30",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    check = re.search(r"sample check: 3,000 label rows, 9 features: the ([\d,]+) rows Feast", out)
    assert check, out
    join = re.search(
        r"point-in-time join, 3,000 labels +ours +[\d.]+ s, peak RSS [\d,]+ MiB +Feast +"
        r"[\d.]+ s, peak RSS [\d,]+ MiB +[\d,.]+x faster",
        out,
    )
    assert join, out
    for label in ("store (SQLite)", "Redis", "Feast (Redis)"):
        line = next((ln for ln in out.splitlines() if ln.startswith(label + " ")), None)
        assert line is not None, f"{label!r} missing from:\n{out}"
        assert re.search(r"p50 [\d.]+ ms  p99 [\d.]+ ms", line), line
    assert "faster p50" in next(ln for ln in out.splitlines() if ln.startswith("Feast (Redis)"))
