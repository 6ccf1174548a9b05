"""The plain torch and MLX loop examples run and log the same things."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlops_jupyter as mj

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name,module", [("torch", "torch"), ("mlx", "mlx.core")])
def test_example_loop(name, module, store_path, tmp_path):
    pytest.importorskip(module)
    env = {**os.environ, "MLOPS_JUPYTER_STORE": str(store_path), "MLOPS_JUPYTER_TELEMETRY": "0"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}_train.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    runs = mj.runs(experiment="examples")
    row = runs.row(0, named=True)
    assert row["name"] == f"{name}-blobs" and row["status"] == "finished"
    assert row["metrics.acc.last"] > 0.9
    media = mj.media(row["id"])
    assert sorted(set(media["key"])) == ["confusion_matrix", "layer0_weights"]
    assert media.height == 10  # 5 epochs x 2 keys
    assert mj.load_media(row["id"], "layer0_weights").shape == (32, 8)
