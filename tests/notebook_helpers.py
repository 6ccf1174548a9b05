"""Running notebook cells in a real IPython kernel (nbclient), shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def run_notebook(cells: list[str], cwd: Path, allow_errors: bool = False, timeout: int = 120):
    """Execute `cells` in one real kernel (cwd `cwd`; the store comes from the environment,
    which the kernel inherits, with this checkout on PYTHONPATH). Returns the executed
    notebook."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    env_pp = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), env_pp]).rstrip(os.pathsep)
    try:
        client = NotebookClient(
            nb,
            kernel_name="python3",
            timeout=timeout,
            allow_errors=allow_errors,
            resources={"metadata": {"path": str(cwd)}},
        )
        client.execute()
    finally:
        if env_pp:
            os.environ["PYTHONPATH"] = env_pp
        else:
            os.environ.pop("PYTHONPATH", None)
    return nb
