"""Smoke tests of benchmarks/bench_server_remote.py: `--quick` prints every figure (no
timing is checked). Our server's figures only: the MLflow figures (a real `mlflow server` on
the same throwaway PostgreSQL, `--postgres`) take minutes and are run by hand."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NUM = r"[\d,.]+"


def _bench(tmp_path: Path, *args: str) -> str:
    # TMPDIR stays: the PostgreSQL server runs as its own user when the tests run as root and
    # cannot enter the test's private folder; the script removes its own temporary folder
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_JUPYTER_", "MLFLOW_"))}
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_server_remote.py"), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _our_figures(out: str) -> None:
    for how in ("base64 arrays", "JSON number lists"):
        assert re.search(
            rf"^remote ingest, one client, {how}, gzip: {NUM} points/s committed", out, re.M
        ), out
    assert re.search(
        rf"^16 concurrent client processes \(32 requests .*p50 {NUM} ms, p99 {NUM} ms.*"
        rf"{NUM} points/s in all, 0 lost$",
        out,
        re.M,
    ), out


@pytest.mark.timeout(120)
def test_quick_prints_our_server_figures(tmp_path):
    out = _bench(tmp_path, "--no-mlflow")
    assert "stores: ours SQLite" in out and "load average at the end" in out, out
    _our_figures(out)
