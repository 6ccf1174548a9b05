"""Per-kernel capture state: the log of executed cells, which runs are being recorded,
cell rows written per executed cell, provenance warnings, and re-run attempt chains.

Pure Python (no IPython): the magics adaptor feeds it plain values from IPython's
pre/post cell events."""

from __future__ import annotations

import hashlib
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError
from ..remote import capture as rcap
from ..store import capture as cstore
from ..tracking.run import Run
from .env import environment
from .notebook import NotebookFile, read_notebook
from .params import is_parameters_comment, literal_params

# runs already tagged with their environment by the start hook -> the notebook it saw
# (kept here rather than as an attribute on the Run, which is not ours to extend)
ENV_TAGGED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

PROVENANCE = "provenance"  # run_events.kind of every warning written here
_MAX_HISTORY = 20_000


def source_hash(source: str) -> str:
    """Stable hash of a cell's source (the key of the stored text)."""
    return hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def cell_key(cell_id: str | None, source: str) -> str:
    """Identity of "the same cell": the front end's cell id, else its source hash."""
    return f"id:{cell_id}" if cell_id else f"src:{source_hash(source)}"


@dataclass
class _Tracked:
    run: Run
    seq: int
    auto_params: bool
    last_index: int | None = None
    last_label: str = ""
    hash_by_cell: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def _rk(run: Run) -> tuple[str, str]:
    """A run's key in the session: its store and public id (a run logged through a tracking
    server has no row id here)."""
    return (run.store.key, run.id)


def _label(execution_count: int | None, index: int | None, from_file: bool) -> str:
    s = f"In [{execution_count}]" if execution_count is not None else "a cell"
    return s + (f" (notebook cell {index + 1})" if index is not None and from_file else "")


class Session:
    """Capture state of one kernel."""

    def __init__(self, notebook: Callable[[], str | None] = lambda: None) -> None:
        # (cell_id, source) of every executed cell, in execution order (appended per cell:
        # the only work done while no run is active)
        self.history: list[tuple[str | None, str]] = []
        self._notebook = notebook
        self._first_seen: dict[str, tuple[int, int]] = {}
        self._seen_upto = 0
        self._tracked: dict[int, _Tracked] = {}
        self._cell_runs: dict[tuple[str, str], Run] = {}
        self._stored_hashes: dict[str, set[str]] = {}
        self._warned: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------
    def note(self, cell_id: str | None, source: str) -> None:
        """Remember an executed cell (cheap; called for every cell)."""
        h = self.history
        h.append((cell_id, source))
        if len(h) > _MAX_HISTORY:
            del h[: len(h) // 2]
            self._first_seen.clear()
            self._seen_upto = 0

    def warn_once(self, what: str, err: BaseException) -> None:
        """A failing capture step warns once per kind; it never raises into the cell."""
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"mlops-jupyter: {what} failed: {err}", RuntimeWarning, stacklevel=2)

    def notice_once(self, what: str, message: str) -> None:
        """Warn `message` once per kernel for `what` (not a failure: a missing feature)."""
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def notebook(self) -> str | None:
        """Absolute path of the notebook this kernel runs, when knowable."""
        try:
            return self._notebook()
        except Exception:
            return None

    def _order(
        self,
        cell_id: str | None,
        source: str,
        nb: NotebookFile | None,
        after: int | None = None,
        at: int | None = None,
    ) -> tuple[int | None, bool]:
        """(position, from_file): a cell's notebook position from the saved file `nb` when
        the notebook is known (`after`: the position of the cell that ran before, which
        picks among cells with equal sources), else the order in which cells were first
        executed here. `at` is the execution's index in the history (default: the last).

        Without the file and without cell ids, a source that ran before is ambiguous (a
        re-run, or another cell with the same code): its position is None, not a guess."""
        if nb is not None:
            return nb.index_of(cell_id, source, after), True
        h = self.history
        seen = self._first_seen
        for j in range(self._seen_upto, len(h)):
            cid, src = h[j]
            seen.setdefault(cell_key(cid, src), (len(seen), j))
        self._seen_upto = len(h)
        key = cell_key(cell_id, source)
        hit = seen.get(key)
        if hit is None:
            return None, False
        pos, first_at = hit
        if key.startswith("src:") and first_at != (len(h) - 1 if at is None else at):
            return None, False
        return pos, False

    # -- params ----------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """Literal assignments of the `parameters` cells executed so far (later wins):
        cells tagged `parameters`/`injected-parameters` in the saved notebook, or whose
        first line is a `# parameters` comment."""
        nb = read_notebook(self.notebook())
        out: dict[str, Any] = {}
        for cid, src in self.history:
            if is_parameters_comment(src) or (nb is not None and nb.is_parameters(cid, src)):
                out.update(literal_params(src))
        return out

    # -- re-run chains -----------------------------------------------------------------------
    def previous_run(self, key: str, store) -> Run | str | None:
        """The last run started by the same cell: this kernel's Run, else (after a restart)
        the stored link when the cell has an id or the notebook is known."""
        nb = self.notebook() or ""
        run = self._cell_runs.get((nb, key))
        if run is not None and run.store is store:
            return run
        if nb or key.startswith("id:"):
            if rcap.is_remote(store):
                return rcap.last_run_for_cell(store, nb, key)
            rid = cstore.last_run_for_cell(store, nb, key)
            if rid is not None:
                return cstore.run_uid(store, rid)
        return None

    def active_from_cell(self, key: str) -> Run | None:
        """The still-running run that this cell started, if any."""
        run = self._cell_runs.get((self.notebook() or "", key))
        return run if run is not None and run.status == "running" else None

    def remember_cell_run(self, key: str, run: Run) -> None:
        nb = self.notebook() or ""
        self._cell_runs[(nb, key)] = run
        if rcap.is_remote(run.store):
            rcap.link_run_cell(run, nb, key)
        else:
            cstore.link_run_cell(run.store, run.store_id, nb, key)

    # -- tracking runs -------------------------------------------------------------------------
    def is_tracked(self, run: Run) -> bool:
        return _rk(run) in self._tracked

    def track(self, run: Run, auto_params: bool = False, env: bool = True) -> None:
        """Start recording cells into `run`; tag it with its environment and flag a kernel
        state that was built out of notebook order."""
        if _rk(run) in self._tracked:
            return
        if rcap.is_remote(run.store):
            seq = rcap.next_seq(run)
        else:
            seq = cstore.next_seq(run.store, run.store_id)
        self._tracked[_rk(run)] = _Tracked(run, seq, auto_params)
        if env and ENV_TAGGED.get(run, False) != self.notebook():
            try:
                run.set_tags(environment(self.notebook()))
            except Exception as e:
                self.warn_once("recording the environment", e)
        try:
            self._session_order_check(run)
        except Exception as e:
            self.warn_once("checking execution order", e)

    def _session_order_check(self, run: Run) -> None:
        last: tuple[int, int] | None = None
        found = []
        nb = read_notebook(self.notebook())
        from_file = nb is not None
        for i, (cid, src) in enumerate(self.history[:-1]):  # the last one starts the run
            idx, _ = self._order(cid, src, nb, last[1] if last else None, at=i)
            if idx is None:
                continue
            if last is not None and idx < last[1]:
                found.append((i, idx, last))
            last = (i, idx)
        if not found:
            return
        i, idx, (pi, pidx) = found[0]
        what = (
            f"notebook cell {idx + 1} ran after notebook cell {pidx + 1}"
            if from_file
            else f"execution #{i + 1} re-ran a cell that precedes the one run at #{pi + 1}"
        )
        self._event(
            run,
            f"before this run, the kernel state was built out of notebook order: {what} "
            f"({len(found)} such step(s))",
            level="info",
            data={"type": "session_out_of_order", "count": len(found), "first": [idx, pidx]},
        )

    def record_cell(
        self,
        runs: list[Run],
        cell_id: str | None,
        source: str,
        execution_count: int | None,
        start: float,
        duration: float,
        error: BaseException | None,
    ) -> None:
        """Write one executed cell into each of `runs` (recording starts for runs not yet
        tracked), with provenance warnings; forget runs that have ended."""
        digest = source_hash(source)
        status = (
            "ok"
            if error is None
            else ("interrupted" if isinstance(error, KeyboardInterrupt) else "error")
        )
        ename = None if error is None else type(error).__name__
        by_store: dict[Any, tuple[list, dict, list]] = {}
        nb = read_notebook(self.notebook())
        idx_cache: dict[int | None, tuple[int | None, bool]] = {}
        for run in runs:
            tr = self._tracked.get(_rk(run))
            if tr is None:
                self.track(run)
                tr = self._tracked[_rk(run)]
            rows, sources, events = by_store.setdefault(run.store, ([], {}, []))
            known = self._stored_hashes.setdefault(run.store.key, set())
            if digest not in known:
                sources[digest] = source
            after = tr.last_index
            if after not in idx_cache:
                idx_cache[after] = self._order(cell_id, source, nb, after)
            idx, from_file = idx_cache[after]
            label = _label(execution_count, idx, from_file)
            if cell_id is not None:
                prev = tr.hash_by_cell.get(cell_id)
                if prev is not None and prev[0] != digest:
                    events.append(
                        (
                            tr.run,
                            f"{label} was edited since it ran in this run "
                            f"(as In [{prev[1]}]); the run mixes both versions",
                            {"type": "changed_source", "cell_id": cell_id, "old": prev[0]},
                        )
                    )
                tr.hash_by_cell[cell_id] = (digest, execution_count)
            if idx is not None:
                if tr.last_index is not None and idx < tr.last_index:
                    events.append(
                        (
                            tr.run,
                            f"{label} ran out of notebook order: after {tr.last_label}, "
                            "which is below it",
                            {
                                "type": "out_of_order",
                                "cell_id": cell_id,
                                "execution_count": execution_count,
                                "index": idx,
                                "after_index": tr.last_index,
                            },
                        )
                    )
                tr.last_index, tr.last_label = idx, label
            rows.append(
                (
                    run if rcap.is_remote(run.store) else run.store_id,
                    tr.seq,
                    cell_id,
                    execution_count,
                    digest,
                    start,
                    duration,
                    status,
                    ename,
                )
            )
            tr.seq += 1
            if tr.auto_params and run.status == "running":
                new = {k: v for k, v in literal_params(source).items() if tr.params.get(k) != v}
                if new:
                    tr.params.update(new)
                    run.log_params(new)
        for store, (rows, sources, events) in by_store.items():
            if rcap.is_remote(store):
                rcap.record_cells(rows, sources)  # queued: sent with the run's points
            else:
                cstore.record_cells(store, rows, sources)
            self._stored_hashes[store.key].update(sources)
            for run, msg, data in events:
                self._event(run, msg, "warning", data)
        for run in runs:
            if run.status != "running":
                self._tracked.pop(_rk(run), None)

    def _event(self, run: Run, message: str, level: str, data: dict) -> None:
        """A provenance event on `run`."""
        try:
            run.add_event(PROVENANCE, message, level=level, data=data)
        except StoreError as e:
            # over a tracking server, events are not spooled (a server away refuses them)
            # and an older server has no events API: the cell and its record go on; say
            # once that the note was not recorded
            self.warn_once("recording a provenance warning", e)

    def untrack(self, run: Run) -> None:
        self._tracked.pop(_rk(run), None)

    def tracked_runs(self) -> list[Run]:
        return [t.run for t in self._tracked.values()]

    def now(self) -> float:
        return time.time()
