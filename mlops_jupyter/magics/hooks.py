"""The cell hooks of `%load_ext mlops_jupyter`: pre/post_run_cell callbacks that record
each executed cell on the active run(s), and how the notebook and the cells run before
loading are found. Idle cost (no run active): remember the cell, read two clocks; they
never raise into the user's cell."""

from __future__ import annotations

import os
import time

from ..capture import NOTEBOOK_ENV, Session, resolve_notebook
from ..capture.locate import Locator
from ..tracking import api as _api
from ..tracking.run import Run

_perf = time.perf_counter
_wall = time.time


class CellHooks:
    """pre/post_run_cell callbacks. Idle cost: remember the cell, read two clocks."""

    def __init__(self, ip, session: Session) -> None:
        self.ip = ip
        self.session = session
        # pre/post events nest when a cell magic (ours, %%capture, ...) runs its body
        # through run_cell; only the outermost pair is the user's cell
        self.depth = 0
        self.cell: tuple[str | None, str] = (None, "")
        self.t0 = 0.0
        self.wall0 = 0.0
        self.pre_run: Run | None = None
        self.started: list[Run] = []  # runs a magic started in the current cell

    def pre_run_cell(self, info) -> None:
        self.depth += 1
        if self.depth > 1:
            return
        try:
            cell = self.cell = (getattr(info, "cell_id", None), info.raw_cell)
            self.session.note(*cell)
            self.pre_run = _api._active
            if self.started:
                self.started = []
            self.wall0 = _wall()
            self.t0 = _perf()
        except Exception as e:
            self.session.warn_once("the pre-cell hook", e)

    def post_run_cell(self, result) -> None:
        self.depth = max(0, self.depth - 1)
        if self.depth:
            return
        if _api._active is None and self.pre_run is None and not self.started:
            return
        duration = _perf() - self.t0
        try:
            targets: list[Run] = []
            for r in (*self.started, self.pre_run, *reversed(_api._stack)):
                if r is not None and r not in targets:
                    targets.append(r)
            if result is None:  # ipykernel cancelled an async cell on interrupt
                err: BaseException | None = KeyboardInterrupt()
                count = None
            else:
                err = result.error_before_exec or result.error_in_exec
                count = result.execution_count
            self.session.record_cell(
                targets,
                self.cell[0],
                self.cell[1],
                count,
                self.wall0,
                duration,
                err,
            )
            if _api._active is not None and not _is_remote(_api._active):
                _api.flush()  # metrics logged by this cell are visible when it ends
            # over a tracking server the sender (woken by the cell's records) sends them
            # within a flush interval: the cell never waits for a round trip to the server
        except Exception as e:
            self.session.warn_once("recording the cell", e)
        finally:
            self.pre_run = None


def _notebook_candidates(ip, session_state: dict, headless: Locator | None = None) -> str | None:
    """What the user or the front end says, else what a headless runner left behind."""
    ns = ip.user_ns
    found = resolve_notebook(
        session_state.get("explicit"),
        os.environ.get(NOTEBOOK_ENV),
        ns.get("__session__"),
        os.environ.get("JPY_SESSION_NAME"),
        ns.get("__vsc_ipynb_file__"),
    )
    if found is None and headless is not None:
        found = headless()
    return found


def _seed_history(ip, session: Session) -> None:
    """Cells that ran before `%load_ext` (a `parameters` cell first of all) count too: take
    them from the kernel's input history; the loading cell's id from its request."""
    raw = list(getattr(ip.history_manager, "input_hist_raw", None) or [])[1:]
    if not raw:
        return
    cell_id = None
    try:
        parent = ip.kernel.get_parent()
        cell_id = (parent.get("metadata") or {}).get("cellId")
    except Exception:
        pass  # not a Jupyter kernel, or an ipykernel without get_parent
    for src in raw[:-1]:
        session.note(None, src)
    session.note(cell_id if isinstance(cell_id, str) else None, raw[-1])


def _is_remote(run: Run) -> bool:
    return type(run).__name__ == "RemoteRun"
