"""The real front end: JupyterLab in headless Chromium sends cell ids and tells the kernel
its notebook path; %%mlops_run records both, and re-running the cell makes attempt 2."""

from __future__ import annotations

import time

import browser_helpers as bh
import nbformat
import pytest
from capture_helpers import query

import mlops_jupyter as mj

browser, page, lab_server = bh.browser, bh.page, bh.lab_server
pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def _wait_rows(store, sql: str, n: int, timeout: float = 30.0) -> list[tuple]:
    deadline = time.time() + timeout
    while True:
        rows = query(store, sql) if store.exists() else []
        if len(rows) >= n or time.time() > deadline:
            return rows
        time.sleep(0.2)


def test_jupyterlab_cell_ids_notebook_path_and_attempts(lab_server, page):
    store = lab_server.extra["store"]
    nb_path = bh.make_notebook(
        lab_server.root_dir / "proj" / "train.ipynb",
        [
            "%load_ext mlops_jupyter",
            "lr = 0.25",
            "%%mlops_run lab-run --no-live\nepochs = 2\nprint('trained', lr, epochs)",
        ],
    )
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells[1].metadata["tags"] = ["parameters"]
    nbformat.write(nb, str(nb_path))
    ids = [c.id for c in nb.cells]

    bh.open_notebook(page, lab_server, "proj/train.ipynb")
    bh.run_cell(page, 0)
    bh.run_cell(page, 1)
    bh.run_cell(page, 2)
    bh.run_cell(page, 2)  # re-executed: a new attempt, not an overwrite
    bh.wait_kernel_idle(page)
    bh.screenshot(page, "magics-jupyterlab-rerun")

    rows = _wait_rows(
        store, "SELECT id, uid, status, attempt, prev_run_id FROM runs ORDER BY id", 2
    )
    assert [(s, a) for _, _, s, a, _ in rows] == [("finished", 1), ("finished", 2)]
    assert rows[1][4] == rows[0][0]
    mj.set_store(store)
    run = mj.get_run(rows[1][1])
    # the kernel learned its notebook from the server session; the tag drives the sidebar
    assert run["tags"]["notebook.path"] == str(nb_path.resolve())
    # the parameters cell is recognised by its tag in the saved file, via the cell id
    assert run["params"] == {"lr": 0.25, "epochs": 2}
    cells = query(store, "SELECT run_id, cell_id FROM cell_executions ORDER BY id")
    assert [c for _, c in cells] == [ids[2], ids[2]]
    assert query(
        store, "SELECT notebook, cell_key FROM run_cells WHERE run_id=?", (rows[1][0],)
    ) == [(str(nb_path.resolve()), f"id:{ids[2]}")]
