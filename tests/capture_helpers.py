"""Helpers for notebook-capture tests: build notebooks, execute them in a real IPython
kernel (nbclient) in any cell order, optionally sending cell ids the way JupyterLab does,
and read the store afterwards.

    nb = make_nb(["%load_ext mlops_jupyter", ("x = 1", ["parameters"])])
    executed = execute(nb, tmp_path, order=[0, 1, 1], cell_ids=True)
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNEL = "python3"  # jupyter_client runs the kernelspec's `python` as sys.executable


def make_nb(cells: list, path: Path | None = None) -> nbformat.NotebookNode:
    """A notebook from sources; an item may be (source, [tags]). Written to `path` if given."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    for c in cells:
        src, tags = (c, []) if isinstance(c, str) else c
        cell = nbformat.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    if path is not None:
        nbformat.write(nb, str(path))
    return nb


def _send_cell_ids(kc, current: dict) -> None:
    """Make `kc.execute` carry `metadata.cellId`, as JupyterLab's execute_request does."""

    def execute(
        code,
        silent=False,
        store_history=True,
        user_expressions=None,
        allow_stdin=None,
        stop_on_error=True,
    ):
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history,
            "user_expressions": user_expressions or {},
            "allow_stdin": False if allow_stdin is None else allow_stdin,
            "stop_on_error": stop_on_error,
        }
        msg = kc.session.msg("execute_request", content, metadata={"cellId": current.get("id")})
        kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    kc.execute = execute


def execute(
    nb: nbformat.NotebookNode,
    cwd: Path,
    order: list[int] | None = None,
    cell_ids: bool = False,
    allow_errors: bool = False,
    timeout: int = 120,
    edits: dict[int, dict[int, str]] | None = None,
) -> nbformat.NotebookNode:
    """Execute `nb`'s cells in `order` (default: top to bottom) in one real kernel.

    `edits[k] = {i: src}` replaces cell i's source just before the k-th execution, like a
    user editing a cell between runs. Raises nbclient's CellExecutionError on an error
    unless `allow_errors`."""
    current: dict = {}
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=timeout,
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(cwd)}},
        on_cell_execute=lambda cell, cell_index: current.update(id=cell.get("id")),
    )
    with client.setup_kernel():
        if cell_ids:
            _send_cell_ids(client.kc, current)
        for k, i in enumerate(order if order is not None else range(len(nb.cells))):
            for j, src in ((edits or {}).get(k) or {}).items():
                nb.cells[j].source = src
            client.execute_cell(nb.cells[i], i)
    return nb


def outputs_text(cell) -> str:
    """All text a cell printed or displayed (streams, text/plain, errors)."""
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif o.get("output_type") == "error":
            parts.append(o.get("ename", "") + ": " + o.get("evalue", ""))
            parts.extend(o.get("traceback", []))
        else:
            data = o.get("data", {})
            parts.append(data.get("text/plain", ""))
            parts.append(data.get("text/html", ""))
    return "\n".join(parts)


def query(store_path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Read the store file directly (a second, independent reader)."""
    conn = sqlite3.connect(store_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def use_store(monkeypatch, tmp_path: Path) -> Path:
    """Point this process and the kernels it starts at a fresh store in tmp_path."""
    import mlops_jupyter as mj

    path = tmp_path / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(path))
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")  # keep kernels light and quiet
    monkeypatch.delenv("MLOPS_JUPYTER_NOTEBOOK", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    # kernels must import this checkout, wherever pytest was started from
    root = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    mj.set_store(path)
    return path


def kernel_python() -> str:
    return sys.executable
