"""The background writer: log calls append to a deque; a daemon thread drains it into the
store in batches every flush interval (and on demand), so the training loop never waits
on SQLite."""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time
import warnings

import numpy as np

from .. import config
from ..store import Store
from ..store import metrics as mstore

# A chunk with at least this many points is "full"; smaller trailing chunks are merged
# once MERGE_AFTER of them pile up, and when the run ends.
CHUNK_TARGET = 4096
MERGE_AFTER = 16
IDLE_EXIT_S = 10.0


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


class Writer:
    """One per (process, store). Thread-safe; `queue.append` is the only hot-path call."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: collections.deque = collections.deque()
        self._series: dict[tuple[int, int], _Series] = {}
        self._keys: dict[str, int] = {}
        self._runs: set[int] = set()  # active runs: heartbeat target
        self._closing: set[int] = set()  # ended runs whose tails should be merged
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._last_hb = 0.0
        self._warned = False
        self.interval = config.flush_interval()
        self.hb_interval = config.heartbeat_interval()
        self._thread: threading.Thread | None = None
        self._ensure_thread()

    # -- lifecycle ---------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
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
        with self._lock:
            self._closing.add(rid)

    def _loop(self) -> None:
        idle = 0.0
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            # an idle writer (no active run, nothing buffered) lets its thread go;
            # add_run() starts a new one
            if not self._runs and not self.queue and not self._closing:
                idle += self.interval
                if idle >= IDLE_EXIT_S:
                    with self._lock:
                        if not self._runs and not self.queue:
                            self._thread = None
                            return
                continue
            idle = 0.0
            try:
                self.flush()
            except Exception as e:  # never let the thread die: warn once, keep buffering
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"mlops-jupyter: could not write metrics yet ({e}); will keep retrying",
                        RuntimeWarning,
                        stacklevel=1,
                    )

    def close(self) -> None:
        """Final flush; stops the thread."""
        self._stop = True
        self._wake.set()
        self.flush()

    # -- draining ----------------------------------------------------------------------
    def flush(self) -> int:
        """Write everything buffered so far (in the calling thread); return points written."""
        with self._lock:
            q = self.queue
            pop = q.popleft
            items = [pop() for _ in range(len(q))]
            try:
                n = self._write(items)
            except BaseException:
                # keep the points for the next attempt, in their original order
                q.extendleft(reversed(items))
                raise
            return n

    def _write(self, items: list[tuple]) -> int:
        now = time.time()
        beat = bool(self._runs) and now - self._last_hb >= self.hb_interval
        if not items and not beat and not self._closing:
            return 0
        groups: dict[tuple[int, str], list[tuple]] = {}
        for it in items:
            g = groups.get((it[0], it[1]))
            if g is None:
                groups[(it[0], it[1])] = [it]
            else:
                g.append(it)
        # Work on copies of the writer state and adopt them only after COMMIT: a failed
        # transaction is rolled back, and the retry must reuse the same seqs, auto-steps and
        # (possibly un-inserted) key ids.
        keys = dict(self._keys)
        series = dict(self._series)
        with self.store.write() as c:
            mstore.key_ids(c, list({k for _, k in groups}), keys)
            for (rid, key), pts in groups.items():
                kid = keys[key]
                old = series.get((rid, kid))
                s = _Series(*mstore.next_position(c, rid, kid)) if old is None else old.copy()
                series[(rid, kid)] = s
                steps = np.empty(len(pts), np.int64)
                nxt = s.next_step
                for i, p in enumerate(pts):
                    st = p[2]
                    if st is None:
                        st = nxt
                    steps[i] = st
                    nxt = st + 1
                s.next_step = nxt
                ts = (np.fromiter((p[4] for p in pts), np.float64, len(pts)) * 1000).astype(
                    np.int64
                )
                vals = np.fromiter((p[3] for p in pts), np.float64, len(pts))
                mstore.append_chunk(c, rid, kid, s.seq, steps, ts, vals)
                if len(pts) >= CHUNK_TARGET and s.tail_count == 0:
                    s.tail_seq = s.seq + 1
                else:
                    s.tail_count += 1
                s.seq += 1
                if s.tail_count >= MERGE_AFTER:
                    self._merge(c, rid, kid, s)
            closing = set(self._closing)
            if closing:
                for (rid, kid), s in list(series.items()):
                    if rid in closing:
                        if s.tail_count > 1:
                            s = series[(rid, kid)] = s.copy()
                            self._merge(c, rid, kid, s)
                        del series[(rid, kid)]
            if beat:
                c.executemany(
                    "UPDATE runs SET heartbeat=? WHERE id=? AND status='running'",
                    [(now, r) for r in list(self._runs)],
                )
        self._keys, self._series = keys, series
        self._closing -= closing
        if beat:
            self._last_hb = now
        return len(items)

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
    key = str(store.path)
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
