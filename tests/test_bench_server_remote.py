"""Smoke tests of benchmarks/bench_server_remote.py: `--quick` prints every figure (no
timing is checked). Our server's figures alone run in the default suite; the MLflow figures
(a real `mlflow server` on the same throwaway PostgreSQL) are slow."""

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


@pytest.mark.slow
@pytest.mark.timeout(700)
def test_quick_on_postgres_prints_every_figure(tmp_path):
    pytest.importorskip("mlflow")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("PostgreSQL is not installed")
    out = _bench(tmp_path, "--postgres")
    assert "stores: ours PostgreSQL, mlflow PostgreSQL" in out, out
    _our_figures(out)
    assert re.search(
        rf"^mlflow client log_batch of 2,000 metrics: ours {NUM} ms, mlflow server {NUM} ms "
        rf"\(throughput ratio ours/mlflow {NUM}x\)",
        out,
        re.M,
    ), out
    assert re.search(rf"^search setup, 300 runs .*: ours {NUM} s, mlflow {NUM} s", out, re.M)
    # the same number of runs from both servers (the script asserts it too)
    for what, n in (("first page of 1,000", 50), ("full paged scan", 50), ("all 300", 300)):
        assert re.search(
            rf"^.*{what}.*: {n:,} runs each; ours {NUM} ms, mlflow server {NUM} ms "
            rf"\(latency ratio mlflow/ours {NUM}x\)",
            out,
            re.M,
        ), (what, out)
