"""The background writer: log calls append to a compact, bounded queue (see buffer.py); a
daemon thread drains it into the store in batches every flush interval (and on demand), so
the training loop never waits on SQLite."""

from __future__ import annotations

import atexit
import os
import threading
import time
import warnings

import numpy as np

from .. import config
from ..errors import StoreError
from ..store import Store
from ..store import metrics as mstore
from ..store import runs as rstore
from .buffer import Block, Group, Queue
from .pending import STORE_ERRORS, Pending, PendingRuns, _DryRun

# A chunk with at least this many points is "full"; smaller trailing chunks are merged
# once MERGE_AFTER of them pile up, and when the run ends.
CHUNK_TARGET = 4096
MERGE_AFTER = 16
IDLE_EXIT_S = 10.0
WRITE_BATCH = 262_144  # points per transaction: keeps memory and lock time short


class _Series:
    """Writer-side position of one run/key: next chunk seq, next auto step, open tail."""

    __slots__ = ("seq", "next_step", "tail_seq", "tail_count")

    def __init__(self, seq: int, next_step: int) -> None:
        self.seq = seq
        self.next_step = next_step
        self.tail_seq = seq
        self.tail_count = 0

    def copy(self) -> _Series:
        c = _Series(self.seq, self.next_step)
        c.tail_seq, c.tail_count = self.tail_seq, self.tail_count
        return c


def resolve_steps(steps: np.ndarray, next_step: int) -> np.ndarray:
    """Replace -1 ("next automatic step") by the step after the previous point's, the
    first one continuing from `next_step`. Vectorised over the whole series."""
    n = len(steps)
    if n == 0:
        return steps.astype(np.int64)
    idx = np.arange(n, dtype=np.int64)
    last = np.maximum.accumulate(np.where(steps >= 0, idx, -1))
    base = np.where(last >= 0, steps[np.maximum(last, 0)], np.int64(next_step - 1))
    with np.errstate(over="ignore"):
        return base + (idx - last)


class Writer(PendingRuns):
    """One per (process, store). Thread-safe; appending to `queue` is the only hot-path call."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._wake = threading.Event()
        self.q = Queue(config.max_queue(), config.spool_dir(), self._wake.set, self._warn)
        self.queue = self.q.stage  # what log calls append to
        self._series: dict[tuple[int, int], _Series] = {}
        self._keys: dict[str, int] = {}
        self._runs: set[int] = set()  # active runs: heartbeat target
        self._closing: set[int] = set()  # ended runs whose tails should be merged
        # ends of runs not written yet because the database server was unreachable:
        # {rid: (status, end time)}, written after their points
        self._ends: dict[int, tuple[str, float]] = {}
        # params/tags set with wait=False: [(rid, "params"|"tags", items)], written in
        # order before the ends
        self._kv: list[tuple[int, str, dict]] = []
        # runs started without waiting, by provisional id, in start order; provisional ->
        # row id of those written (kept two flushes after their end: points in flight)
        self._pending: dict[int, Pending] = {}
        self._pend_lock = threading.Lock()
        self._real: dict[int, int] = {}
        self._retire: tuple[list[int], list[int]] = ([], [])
        self._offline_warned = False
        self._lock = threading.Lock()  # held while writing to the store
        self._thread_lock = threading.Lock()  # starting/stopping the thread
        self._stop = False
        self._last_hb = 0.0
        self._warned = False
        self.interval = config.flush_interval()
        self.hb_interval = config.heartbeat_interval()
        self._thread: threading.Thread | None = None
        self._ensure_thread()

    @staticmethod
    def _warn(msg: str) -> None:
        warnings.warn(msg, RuntimeWarning, stacklevel=2)

    @property
    def dropped(self) -> int:
        """Points refused by the writer because they can never be stored."""
        return self.q.dropped

    def pending(self) -> int:
        """Points logged but not yet written (in memory or spooled)."""
        return len(self.q)

    # -- lifecycle ---------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop = False
                self._thread = threading.Thread(target=self._loop, name="mlops-writer", daemon=True)
                self._thread.start()

    def add_run(self, rid: int) -> None:
        self._runs.add(rid)
        self._ensure_thread()

    def remove_run(self, rid: int) -> None:
        """Stop heartbeats for `rid`; its points are flushed and its chunks compacted."""
        self._runs.discard(rid)
        self._closing.add(rid)

    def _loop(self) -> None:
        idle = 0.0
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            # an idle writer (no active run, nothing buffered) lets its thread go;
            # add_run() starts a new one
            if (
                not self._runs
                and not len(self.q)
                and not self._closing
                and not self._ends
                and not self._kv
                and not self._pending
            ):
                idle += self.interval
                if idle >= IDLE_EXIT_S:
                    with self._thread_lock:
                        if not self._runs and not len(self.q):
                            self._thread = None
                            return
                continue
            idle = 0.0
            try:
                self.flush()
            except Exception as e:  # never let the thread die: warn once, keep buffering
                if isinstance(e, STORE_ERRORS) and self.store.unavailable(e):
                    self._offline(e)
                elif not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"mlops-jupyter: could not write metrics yet ({e}); they are kept "
                        "and retried",
                        RuntimeWarning,
                        stacklevel=1,
                    )

    # -- params, tags and ends queued for the writer ---------------------------------------
    def set_kv_later(self, rid: int, table: str, items: dict) -> None:
        """Queue params or tags (already checked) for the next flush."""
        if self._fold(rid, lambda p: getattr(p, table).update(rstore.encode_items(items, table))):
            return
        self._kv.append((rid, table, items))
        self._ensure_thread()

    def end_run(self, rid: int, status: str, wait: bool = True) -> None:
        """Flush a run's points and record its end. When the store's server cannot be
        reached, both are kept and written when it is back (one warning); other store
        errors raise. `wait=False`: leave both to the background thread."""
        now = time.time()

        def ended(p: Pending) -> None:
            p.status, p.end = status, now

        if not self._fold(rid, ended):
            self._ends[rid] = (status, now)
        if not wait:
            # no wake-up: the next periodic flush takes it with other runs' ends and points
            self._ensure_thread()
            return
        try:
            self.flush()
        except STORE_ERRORS as e:
            if not self.store.unavailable(e):
                self._ends.pop(rid, None)
                raise
            self._offline(e)

    def _offline(self, e: BaseException) -> None:
        if not self._offline_warned:
            self._offline_warned = True
            self._warn(
                f"mlops-jupyter: the store cannot be reached ({e}); metrics and run ends are "
                f"kept (in memory, then in a spool file) and written when it is back"
            )
        self._ensure_thread()

    def close(self) -> None:
        """Final flush (at interpreter exit); stops the thread and removes the spool file.
        A database server that cannot be reached is waited for up to
        MLOPS_JUPYTER_EXIT_WAIT seconds (default 30); what is still unwritten then is
        reported in a warning."""
        self._stop = True
        self._wake.set()
        deadline = time.monotonic() + config.exit_wait()
        try:
            while True:
                try:
                    self.flush()
                    return
                except STORE_ERRORS as e:
                    if not self.store.unavailable(e) or time.monotonic() > deadline:
                        n = len(self.q)
                        raise StoreError(
                            f"{e} ({n} metric point(s), {len(self._pending)} run(s) and "
                            f"{len(self._ends)} run end(s) were not written)"
                        ) from e
                    time.sleep(0.5)
        finally:
            self.q.close()

    # -- draining ----------------------------------------------------------------------
    def flush(self) -> int:
        """Write everything queued so far (in the calling thread); return points written.

        Raises the store's error when it cannot write (the points stay queued)."""
        self.q.compact()
        with self._lock:
            # runs started without waiting are taken before the points are packed: every
            # point of theirs packed here has its run written in the same transaction
            runs = self._take_pending()
            self.q.compact()
            todo = len(self.q.blocks)  # what was queued when called: don't chase the producer
            written = 0
            try:
                while True:
                    batch = self.q.take(WRITE_BATCH) if todo > 0 else []
                    last = todo - len(batch) <= 0
                    try:
                        written += self._write_safely(batch, last, runs)
                    except STORE_ERRORS as e:
                        self.q.last_error = str(e)
                        raise
                    runs = []  # written with the first batch
                    self.q.done([b for b, _ in batch])
                    todo -= len(batch)
                    if todo <= 0:
                        break
            finally:
                self._untake(runs)
            self._write_ends()
            for prov in self._retire[1]:  # ended two flushes ago: no point of theirs left
                self._real.pop(prov, None)
            self._retire = ([], self._retire[0])
            self.q.last_error = None
            if self._offline_warned:
                self._offline_warned = False
                self._warn("mlops-jupyter: the store is reachable again; kept points written")
            return written

    def _write_ends(self) -> None:
        """Queued params/tags, then queued run ends, in one transaction; each entry leaves
        the queue only once written. Params or tags the store refuses (checked when
        queued, so this is rare) are dropped with a warning so later ends still land."""
        kv, ends = list(self._kv), list(self._ends.items())
        if not kv and not ends:
            return

        def write(_c) -> None:
            for prov, table, items in kv:
                rid = self._resolve(prov)
                if rid is None:
                    continue  # its run could not be written (warned)
                try:
                    with self.store.write():  # a savepoint: a refused row alone rolls back
                        rstore.set_kv(self.store, table, rid, items)
                except STORE_ERRORS as e:
                    if self.store.unavailable(e):
                        raise
                    self._warn(f"mlops-jupyter: could not record {table} {items!r}: {e}")
            for prov, (status, end) in ends:
                rid = self._resolve(prov)
                if rid is not None:
                    rstore.finish_run(self.store, rid, status, end)

        self.store.write_again(write, "record run ends")
        del self._kv[: len(kv)]
        for rid, _ in ends:
            self._ends.pop(rid, None)
            if rid < 0:
                self._retire[0].append(rid)

    def _write_safely(
        self, batch: list[tuple[Block, list[Group]]], last: bool, runs: list[Pending]
    ) -> int:
        """Write a batch (and the pending `runs`, emptied once written); if a point (not
        the store) is the problem, find the series that cannot be written (each tried in a
        transaction that is rolled back), drop them, and write the others in one
        transaction, so later points keep flowing. A run that cannot be written is
        dropped likewise (with its points)."""
        groups = [g for _, gs in batch for g in gs]
        try:
            return self._write(groups, last, runs=runs)
        except STORE_ERRORS as e:
            if not runs or self.store.unavailable(e):
                raise
            self._drop_bad_runs(runs)  # a refused run (e.g. its parent was deleted)?
            return self._write(groups, last, runs=runs)
        except Exception:
            if runs:
                self._drop_bad_runs(runs)
        good = []
        for g in groups:
            try:
                self._write([g], last, dry_run=True, runs=runs)
            except _DryRun:
                good.append(g)
            except STORE_ERRORS:
                raise
            except Exception as e:
                if not self.q.dropped:
                    self._warn(
                        f"mlops-jupyter: dropped {len(g[4])} point(s) of metric {g[1]!r} "
                        f"that cannot be written ({type(e).__name__}: {e}); later points "
                        "are kept"
                    )
                self.q.dropped += len(g[4])
        return self._write(good, last, runs=runs)

    def _write(
        self,
        groups: list[Group],
        last: bool = True,
        dry_run: bool = False,
        runs: list[Pending] | None = None,
    ) -> int:
        """Write pending `runs` and series in one transaction; `last`: also compact the
        tails of ended runs; `dry_run`: roll the transaction back (raises _DryRun when it
        would have worked). `runs` is emptied once written."""
        now = time.time()
        beat = bool(self._runs) and now - self._last_hb >= self.hb_interval
        closing_ids = set(self._closing) if last else set()
        if not groups and not beat and not closing_ids and not runs:
            return 0
        made: dict[int, int] = {}  # provisional -> row id of the runs inserted here

        def real(rid: int) -> int | None:
            return rid if rid >= 0 else made.get(rid, self._real.get(rid))

        total = 0
        keys = dict(self._keys)
        series = dict(self._series)
        with self.store.write() as c:
            if runs:
                self._insert_runs(c, runs, made)
            total = self._write_points(c, groups, keys, series, real, made)
            closing = {r for r in map(real, closing_ids) if r is not None}
            if closing:
                for (rid, kid), s in list(series.items()):
                    if rid in closing:
                        if s.tail_count > 1:
                            s = series[(rid, kid)] = s.copy()
                            self._merge(c, rid, kid, s)
                        del series[(rid, kid)]
            if beat:
                rstore.beat(c, now, [r for r in map(real, list(self._runs)) if r is not None])
            if dry_run:
                raise _DryRun
        self._keys, self._series = keys, series
        # a run still pending (started after this flush began) is closed by a later one
        self._closing -= {r for r in closing_ids if real(r) is not None or r not in self._pending}
        if beat:
            self._last_hb = now
        if runs:
            self._adopt(runs, made)
        return total

    def _write_points(self, c, groups: list[Group], keys, series, real, made) -> int:
        """The series of `groups` (inside the transaction), one chunk per series, into
        the copies `keys` and `series` of the writer state; points of runs that could not
        be written are dropped. A run inserted in this transaction (`made`) has no
        chunks yet: no need to ask where its series stand."""
        series_parts: dict[tuple[int, str], list[Group]] = {}
        for g in groups:
            rid = real(g[0])
            if rid is None:
                self.q.dropped += len(g[4])
                continue
            series_parts.setdefault((rid, g[1]), []).append(g)
        fresh = set(made.values())
        # Work on copies of the writer state and adopt them only after COMMIT: a failed
        # transaction is rolled back, and the retry must reuse the same seqs, auto-steps and
        # (possibly un-inserted) key ids.
        total = 0
        if series_parts:
            # sorted: writers inserting the same new keys in one order cannot deadlock
            mstore.key_ids(c, sorted({k for _, k in series_parts}), keys)
            for (rid, key), parts in series_parts.items():
                kid = keys[key]
                old = series.get((rid, kid))
                if old is not None:
                    s = old.copy()
                elif rid in fresh:
                    s = _Series(0, 0)
                else:
                    s = _Series(*mstore.next_position(c, rid, kid))
                series[(rid, kid)] = s
                if len(parts) == 1:
                    _, _, raw, ts_s, vals = parts[0]
                else:
                    raw = np.concatenate([p[2] for p in parts])
                    ts_s = np.concatenate([p[3] for p in parts])
                    vals = np.concatenate([p[4] for p in parts])
                steps = resolve_steps(raw, s.next_step)
                if len(steps) and int(steps.min()) < 0:
                    # automatic steps ran past 2**63 - 1: those points cannot be stored
                    ok = steps >= 0
                    self.q.dropped += int(len(steps) - np.count_nonzero(ok))
                    steps, ts_s, vals = steps[ok], ts_s[ok], vals[ok]
                    if not len(steps):
                        continue
                s.next_step = int(steps[-1]) + 1
                ts = (np.asarray(ts_s, np.float64) * 1000).astype(np.int64)
                mstore.append_chunk(c, rid, kid, s.seq, steps, ts, np.asarray(vals, np.float64))
                total += len(vals)
                if len(vals) >= CHUNK_TARGET and s.tail_count == 0:
                    s.tail_seq = s.seq + 1
                else:
                    s.tail_count += 1
                s.seq += 1
                if s.tail_count >= MERGE_AFTER:
                    self._merge(c, rid, kid, s)
        return total

    @staticmethod
    def _merge(c, rid: int, kid: int, s: _Series) -> None:
        n = mstore.merge_chunks(c, rid, kid, s.tail_seq)
        s.seq = s.tail_seq + 1
        if n >= CHUNK_TARGET:
            s.tail_seq, s.tail_count = s.seq, 0
        else:
            s.tail_count = 1


_writers: dict[str, Writer] = {}
_writers_lock = threading.Lock()


def writer_for(store: Store) -> Writer:
    """The process-wide writer of `store` (started on first use)."""
    key = store.key
    w = _writers.get(key)
    if w is None:
        with _writers_lock:
            w = _writers.get(key)
            if w is None:
                w = _writers[key] = Writer(store)
    return w


def flush_all() -> None:
    """Flush every writer of this process (used at exit and by `mj.flush()`)."""
    for w in list(_writers.values()):
        w.flush()


@atexit.register
def _close_all() -> None:
    for w in list(_writers.values()):
        try:
            w.close()
        except Exception as e:
            warnings.warn(f"mlops-jupyter: final flush failed: {e}", RuntimeWarning, stacklevel=1)


def _after_fork() -> None:
    # the writer thread does not exist in a forked child; start afresh there
    _writers.clear()


os.register_at_fork(after_in_child=_after_fork)
