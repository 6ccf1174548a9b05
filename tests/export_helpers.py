"""Helpers for the notebook-to-pipeline tests: execute a notebook in a real kernel, run an
exported pipeline as a subprocess (`python -m PKG`), and read metrics back from the store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def make_nb(cells: list, path: Path) -> Path:
    """Write a notebook; a cell is "source", ("source", [tags]) or ("md", "markdown text")."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for c in cells:
        if isinstance(c, tuple) and c[0] == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(c[1]))
            continue
        src, tags = (c, []) if isinstance(c, str) else c
        cell = nbformat.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    nbformat.write(nb, str(path))
    return path


def kernel_env(monkeypatch) -> None:
    """Kernels (and pipeline subprocesses) import this checkout and stay quiet."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    monkeypatch.delenv("MLOPS_JUPYTER_NOTEBOOK", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


def execute_notebook(
    path: Path,
    cwd: Path,
    extra: list[str] | None = None,
    first: list[str] | None = None,
    timeout: int = 120,
):
    """Run every cell of the notebook at `path` (with `first` cells before and `extra`
    cells after) in a real IPython kernel started in `cwd`; returns the executed notebook."""
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    for src in extra or []:
        nb.cells.append(nbformat.v4.new_code_cell(src))
    nb.cells[:0] = [nbformat.v4.new_code_cell(src) for src in first or []]
    NotebookClient(
        nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def run_pipeline(pkg: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m <pkg> ARGS` from the package's parent folder, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", pkg.name, *args],
        cwd=pkg.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def points(run_ids: list[str]) -> dict[str, list[tuple[int | None, float]]]:
    """Metric points of the runs, by key, ordered by step (system metrics left out)."""
    import mlops_jupyter as mj

    df = mj.metrics(run_ids)
    out: dict[str, list] = {}
    for key, step, value in df.select("key", "step", "value").iter_rows():
        if not key.startswith("sys/"):
            out.setdefault(key, []).append((step, value))
    return {k: sorted(v, key=lambda p: (p[0] is None, p[0] or 0)) for k, v in out.items()}


def pipeline_runs() -> tuple[list[dict], dict[str, list[dict]]]:
    """Pipeline parent runs (oldest first) and their stage runs by parent id."""
    import mlops_jupyter as mj

    rows = mj.runs().to_dicts()
    parents = [mj.get_run(r["id"]) for r in reversed(rows) if r["parent_id"] is None]
    parents = [p for p in parents if p["tags"].get("mlops.kind") == "pipeline"]
    children: dict[str, list[dict]] = {}
    for r in reversed(rows):
        if r["parent_id"] is not None:
            children.setdefault(r["parent_id"], []).append(mj.get_run(r["id"]))
    return parents, children


def cell_text(cell) -> str:
    """What an executed cell showed: its printed text and the text form of its result."""
    out = []
    for o in cell.get("outputs", []):
        out.append(o.get("text", "") or "".join(o.get("data", {}).get("text/plain", "")))
    return "".join(t if t.endswith("\n") else t + "\n" for t in out if t)


def marked(text: str, mark: str = "R:") -> list[str]:
    """The lines of `text` that start with `mark`: the values a test compares."""
    return [ln for ln in text.splitlines() if ln.startswith(mark)]


def notebook_values(path: Path, cwd: Path, mark: str = "R:") -> list[str]:
    """Execute the notebook in a real kernel; the marked lines its cells printed."""
    nb = execute_notebook(path, cwd)
    return marked("".join(cell_text(c) for c in nb.cells), mark)


def cache_manifests(root: Path, stages: list[str]) -> dict[str, tuple[str, dict]]:
    """stage -> (cache key, {output: version}) of the one cache entry of each stage."""
    import json

    out = {}
    for stage in stages:
        entries = [p for p in (root / stage).iterdir() if not p.name.startswith(".")]
        assert len(entries) == 1, entries
        m = json.loads((entries[0] / "manifest.json").read_text())
        out[stage] = (m["key"], {k: e["version"] for k, e in m["outputs"].items()})
    return out


def stage_runs() -> dict[str, list[dict]]:
    """stage -> the runs that executed it (oldest first), from the current store."""
    import mlops_jupyter as mj

    runs: dict[str, list[dict]] = {}
    for rid in reversed(mj.runs()["id"].to_list()):
        r = mj.get_run(rid)
        if "mlops.stage" in r["tags"]:
            runs.setdefault(r["tags"]["mlops.stage"], []).append(r)
    return runs
