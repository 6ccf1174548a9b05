"""The cell hooks in-process: idle hooks leave no trace, and a failing store turns into
one warning instead of an exception in the user's cell."""

from __future__ import annotations

import sqlite3
import warnings

import pytest

import mlops_jupyter as mj
from mlops_jupyter.capture import Session
from mlops_jupyter.magics.core import CellHooks
from mlops_jupyter.store import capture as cstore

pytest.importorskip("IPython")


class Info:  # what IPython passes to pre_run_cell
    def __init__(self, source: str, cell_id: str | None = None) -> None:
        self.raw_cell = source
        self.cell_id = cell_id


class Result:  # what IPython passes to post_run_cell
    def __init__(self, n: int, error: BaseException | None = None) -> None:
        self.execution_count = n
        self.error_before_exec = None
        self.error_in_exec = error


def test_idle_hooks_only_remember_the_cell(store_path):
    hooks = CellHooks(None, Session())
    hooks.pre_run_cell(Info("x = 1", "a"))
    hooks.post_run_cell(Result(1))
    assert hooks.session.history == [("a", "x = 1")]
    conn = sqlite3.connect(store_path)
    assert conn.execute("SELECT count(*) FROM cell_executions").fetchone() == (0,)
    conn.close()


def test_nested_events_count_once(store_path):
    hooks = CellHooks(None, Session())
    run = mj.start_run("r")
    hooks.pre_run_cell(Info("%%capture\nbody", "outer"))
    hooks.pre_run_cell(Info("body"))  # a cell magic running its body via run_cell
    hooks.post_run_cell(Result(0))
    hooks.post_run_cell(Result(5))
    run.end()
    cells = cstore.cells_for_run(run.store, run._rid)
    assert [(c["cell_id"], c["source"], c["execution_count"]) for c in cells] == [
        ("outer", "%%capture\nbody", 5)
    ]


def test_a_broken_store_warns_once_and_never_raises(store_path):
    hooks = CellHooks(None, Session())
    run = mj.start_run("r")
    conn = sqlite3.connect(store_path)
    conn.execute("DROP TABLE cell_executions")  # a damaged store
    conn.commit()
    conn.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(3):
            hooks.pre_run_cell(Info(f"x = {n}", "c"))
            hooks.post_run_cell(Result(n))
    msgs = [str(w.message) for w in caught if "mlops-jupyter" in str(w.message)]
    assert len(msgs) == 1 and "recording the cell" in msgs[0]
    run.end()


def test_cancelled_async_cell_is_recorded_as_interrupted(store_path):
    hooks = CellHooks(None, Session())
    run = mj.start_run("r")
    hooks.pre_run_cell(Info("await forever()", "c"))
    hooks.post_run_cell(None)  # ipykernel passes None when it cancels the cell
    run.end()
    (cell,) = cstore.cells_for_run(run.store, run._rid)
    assert cell["status"] == "interrupted" and cell["error"] == "KeyboardInterrupt"
