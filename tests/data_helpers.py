"""Helpers for the data-area tests: synthetic frames with known shifts, and running
notebook cells in a real IPython kernel (nbclient) against the test's store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from notebook_helpers import run_notebook  # noqa: F401  (re-exported for the data tests)

ROOT = Path(__file__).resolve().parent.parent


def frame(n: int, seed: int, shift: float = 0.0, scale: float = 1.0, p=None) -> pl.DataFrame:
    """n rows: 3 numeric columns (x0 shifted by `shift`, x1 scaled by `scale`), an integer
    id, and 2 categorical columns (c0 with class probabilities `p`)."""
    r = np.random.default_rng(seed)
    p = p or [0.4, 0.3, 0.2, 0.1]
    return pl.DataFrame(
        {
            "id": np.arange(n),
            "x0": r.normal(shift, 1.0, n),
            "x1": r.normal(0.0, scale, n),
            "x2": r.exponential(2.0, n),
            "c0": r.choice(["a", "b", "c", "d"], n, p=p),
            "c1": r.choice(["u", "v"], n),
        }
    )


def text_of(cell) -> str:
    """All text a cell printed or displayed (streams, results, errors)."""
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append(o["text"])
        elif o["output_type"] in ("execute_result", "display_data"):
            out.append(o["data"].get("text/plain", ""))
            out.append(o["data"].get("text/html", ""))
        elif o["output_type"] == "error":
            out.append(o["ename"] + ": " + o["evalue"])
            out.extend(o.get("traceback", []))
    return "\n".join(out)
