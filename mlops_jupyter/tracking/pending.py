"""Runs started without waiting (`start_run(wait=False)`): the writer inserts each in the
transaction that writes its first points. `PendingRuns` is the writer's part that keeps them
(a mixin of Writer, which provides store, flush, _warn, _ensure_thread and the queues)."""

from __future__ import annotations

import itertools
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import MlopsJupyterError, StoreError
from ..store import runs as rstore

# Errors of the store itself (locked, full, read-only, I/O; the store raises every database
# error as a StoreError): the points are kept and retried. Anything else raised while writing
# points is a problem of those points: they are dropped.
STORE_ERRORS = (OSError, MlopsJupyterError)

# Runs started without waiting and not written yet: past this many the starter writes them
# itself (backpressure: memory stays bounded when the store is slow or away).
MAX_PENDING = 1024
# Provisional row ids of runs started without waiting: negative, unique in the process.
_provisional = itertools.count(-1, -1)


class Pending:
    """A run started without waiting (`start_run(wait=False)`): its row, params and tags
    (encoded), and, once ended, its status; the writer inserts it in the transaction that
    writes its first points (with its end, when it ended by then). `rid` is its row id
    once written. Log calls meanwhile use `prov`, a provisional negative id."""

    __slots__ = (
        "prov", "run", "uid", "name", "experiment", "start", "parent",
        "params", "tags", "status", "end", "taken", "rid", "failed",
    )  # fmt: skip

    def __init__(
        self,
        uid: str,
        name: str,
        experiment: str,
        parent: int | None,
        params: list[tuple[str, str]],
        tags: list[tuple[str, str]],
    ) -> None:
        self.prov = next(_provisional)
        self.run: Any = None  # the Run, while pending (a uid clash renames it)
        self.uid, self.name, self.experiment, self.parent = uid, name, experiment, parent
        self.start = time.time()
        self.params, self.tags = dict(params), dict(tags)
        self.status, self.end = "running", None
        self.taken = False  # being written by a flush: later changes go to the queues
        self.rid: int | None = None
        self.failed: str | None = None  # why it could not be written (dropped)


class _DryRun(Exception):
    """Rolls back a trial transaction that succeeded."""


class PendingRuns:
    """The writer's pending runs: queued, folded into, inserted and adopted."""

    store: Any
    _pending: dict[int, Pending]
    _pend_lock: threading.Lock
    _real: dict[int, int]
    _retire: tuple[list[int], list[int]]
    if TYPE_CHECKING:  # provided by Writer

        def flush(self) -> int: ...
        def _ensure_thread(self) -> None: ...
        @staticmethod
        def _warn(msg: str) -> None: ...

    def create_later(self, p: Pending) -> None:
        """Queue the insertion of run `p` (see Pending). When MAX_PENDING runs wait
        already, they are written first, in the caller (backpressure)."""
        if len(self._pending) >= MAX_PENDING:
            self.flush()
        with self._pend_lock:
            self._pending[p.prov] = p
        self._ensure_thread()

    def real_rid(self, p: Pending) -> int:
        """The row id of run `p`, written now (with everything queued) if still pending."""
        if p.rid is None:
            self.flush()
        if p.rid is None:
            raise StoreError(f"run {p.uid} could not be written: {p.failed or 'unknown error'}")
        return p.rid

    def _resolve(self, rid: int) -> int | None:
        """The row id for `rid` (provisional ids mapped); None for a run that could not
        be written."""
        return rid if rid >= 0 else self._real.get(rid)

    def _fold(self, rid: int, change) -> bool:
        """Apply `change(p)` to run `rid` while it is pending and not being written."""
        if rid >= 0:
            return False
        with self._pend_lock:
            p = self._pending.get(rid)
            if p is None or p.taken:
                return False
            change(p)
            return True

    def _take_pending(self) -> list[Pending]:
        with self._pend_lock:
            runs = [p for p in self._pending.values() if not p.taken]
            for p in runs:
                p.taken = True
        return runs

    def _untake(self, runs: list[Pending]) -> None:
        """Runs a failed flush did not write: pending again, changes fold in again."""
        with self._pend_lock:
            for p in runs:
                p.taken = False

    def _insert_runs(self, c, runs: list[Pending], made: dict[int, int]) -> None:
        """Insert pending runs in start order (a parent before its children), adding
        provisional -> row id to `made`; a uid another run holds is replaced."""

        def row(p: Pending) -> dict[str, Any]:
            parent = p.parent
            if parent is not None and parent < 0:
                parent = made.get(parent, self._real.get(parent))
            return {
                "uid": p.uid, "name": p.name, "experiment": p.experiment, "start": p.start,
                "parent_id": parent, "status": p.status, "end": p.end,
                "params": list(p.params.items()), "tags": list(p.tags.items()),
            }  # fmt: skip

        i = 0
        while i < len(runs):
            # a batch ends before a run whose parent is pending in it
            j = i + 1
            ids = {runs[i].prov}
            while j < len(runs) and runs[j].parent not in ids:
                ids.add(runs[j].prov)
                j += 1
            part = runs[i:j]
            for p, rid in zip(part, rstore.insert_runs(c, [row(p) for p in part])):
                for _ in range(5):
                    if rid is not None:
                        break
                    p.uid = rstore.new_uid()  # another run holds that id
                    rid = rstore.insert_runs(c, [row(p)])[0]
                if rid is None:
                    raise StoreError(f"no free run id for run {p.name!r}")
                made[p.prov] = rid
            i = j

    def _adopt(self, runs: list[Pending], made: dict[int, int]) -> None:
        """After COMMIT: the runs are written; their Run objects learn their row ids."""
        with self._pend_lock:
            for p in runs:
                rid = made[p.prov]
                self._real[p.prov] = rid
                p.rid = rid
                if p.run is not None and p.run.id != p.uid:
                    p.run.id = p.uid
                p.run = None
                self._pending.pop(p.prov, None)
                if p.end is not None:
                    self._retire[0].append(p.prov)
            runs.clear()

    def _drop_bad_runs(self, runs: list[Pending]) -> None:
        """Find the pending runs that cannot be written (each tried in a transaction
        that is rolled back) and drop them with a warning, so the others are written."""
        for p in list(runs):
            try:
                with self.store.write() as c:
                    self._insert_runs(c, [p], {})
                    raise _DryRun
            except _DryRun:
                continue
            except STORE_ERRORS as e:
                if self.store.unavailable(e):
                    raise
                why = e
            except Exception as e:
                why = e
            p.failed = f"{type(why).__name__}: {why}"
            self._warn(f"mlops-jupyter: run {p.name!r} ({p.uid}) could not be written: {why}")
            with self._pend_lock:
                self._pending.pop(p.prov, None)
            runs.remove(p)
