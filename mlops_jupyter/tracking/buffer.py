"""The writer's queue: compact, bounded, and spilled to a spool file past its bound.

Log calls append a tuple `(run rowid, key, step or None, value, time)` to `stage`, a deque
(the cheapest thing the hot path can do). Tuples cost ~120 bytes a point, so the stage is
kept short: a packer thread (or the writer thread, before it writes) packs it into `Block`s
of typed numpy arrays per run/key (24 bytes a point). When the packed points exceed
`max_points`, the newest blocks are written to an unnamed temporary spool file and read
back, in order, when the store accepts writes again. Nothing is dropped except points that
can never be stored (they are counted and reported once).

The packer is its own thread because the writer can be busy for seconds (retrying a store
that cannot be reached) while the loop keeps logging. No log call waits on the store, on
file I/O or on another thread's long critical section: packing goes in short slices, and
spills and read-backs do their I/O outside the lock that log calls may take (see Queue
for the memory bound and the two cases where a log call does work itself)."""

from __future__ import annotations

import collections
import tempfile
import threading
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import numpy as np

from .validate import KNOWN_KEYS, MAX_STEP, key_problem

STAGE_MAX = 131_072  # tuples held before the caller packs a slice itself (about 15 MiB)
PACK_SLICE = 16_384  # tuples packed at a time: about a millisecond holding the GIL
PACKER_IDLE_S = 10.0  # an idle packer thread exits; the next full stage starts another
_rid_of, _key_of, _step_of, _value_of, _ts_of = (itemgetter(i) for i in range(5))

# One series of a block: run rowid, key, steps (int64, -1 = "next automatic step"),
# timestamps (float64 seconds), values (float64).
Group = tuple[int, str, np.ndarray, np.ndarray, np.ndarray]


class Block:
    """Points packed from the stage, grouped per run/key, in memory or in the spool."""

    __slots__ = ("groups", "n", "spooled", "gone")

    def __init__(self, groups: list[Group], n: int) -> None:
        self.groups: list[Group] | None = groups  # None once spooled
        self.n = n
        self.spooled: tuple[int, list[tuple[int, str, int]]] | None = None
        self.gone = False  # written (and forgotten) by the writer


def _item_problem(it: Any) -> str | None:
    """Why one queued tuple cannot be stored (None when it can)."""
    try:
        rid, key, step, value, ts = it
    except (TypeError, ValueError):
        return f"not a point: {it!r}"
    msg = key_problem(key)
    if msg is not None:
        return msg
    if type(rid) is not int:
        return f"bad run id {rid!r}"
    if step is not None:
        if type(step) is not int or not 0 <= step <= MAX_STEP:
            return f"metric {key!r}: step {step!r} is not an integer in [0, 2**63 - 1]"
    try:
        float(value)
        float(ts)
    except (TypeError, ValueError, OverflowError):
        return f"metric {key!r}: value {type(value).__name__} cannot be stored as a float64"
    return None


def pack(items: list[tuple]) -> tuple[Block | None, int, str | None]:
    """Pack queued tuples into a Block. Returns (block or None, points dropped, why the
    first one was dropped). Vectorised: a few C-level passes over the items."""
    try:
        return _pack_fast(items), 0, None
    except (TypeError, ValueError, OverflowError, _Unclean):
        pass
    good, dropped, why = [], 0, None
    for it in items:
        msg = _item_problem(it)
        if msg is None:
            good.append(it)
        else:
            dropped += 1
            why = why or msg
    try:
        block = _pack_fast(good) if good else None
    except (TypeError, ValueError, OverflowError, _Unclean) as e:  # pragma: no cover
        block, dropped, why = None, dropped + len(good), why or str(e)
    return block, dropped, why


class _Unclean(Exception):
    """The fast path met an item it must not guess about."""


def _pack_fast(items: list[tuple]) -> Block:
    n = len(items)
    rids = list(map(_rid_of, items))
    keys = list(map(_key_of, items))
    r0, k0 = rids[0], keys[0]
    one_run = rids.count(r0) == n  # the usual case; count() is a C loop
    if one_run and keys.count(k0) == n:
        pairs: dict = {(r0, k0): None}
        codes = None
    elif one_run:
        kcode = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        pairs = {(r0, k): None for k in kcode}
        codes = np.fromiter(map(kcode.__getitem__, keys), np.intp, n)
    else:
        pairs = dict.fromkeys(zip(rids, keys))  # unique series, first-seen order
        code = {p: i for i, p in enumerate(pairs)}
        codes = np.fromiter(map(code.__getitem__, zip(rids, keys)), np.intp, n)
    for rid, key in pairs:
        if type(rid) is not int or (key not in KNOWN_KEYS and key_problem(key) is not None):
            raise _Unclean
    vals = np.fromiter(map(_value_of, items), np.float64, n)
    ts = np.fromiter(map(_ts_of, items), np.float64, n)
    raw = list(map(_step_of, items))
    auto = raw.count(None)
    if auto == n:
        steps = np.full(n, -1, np.int64)
    else:
        kinds = set(map(type, raw))
        kinds.discard(type(None))
        if kinds != {int}:
            raise _Unclean  # floats, bools, numpy ints: let the slow path judge them
        if auto:
            raw = [-1 if s is None else s for s in raw]
        steps = np.fromiter(raw, np.int64, n)  # OverflowError beyond int64
        # -1 marks an automatic step: an explicit negative step must not pass for one
        if int(steps.min()) < -1 or int(np.count_nonzero(steps == -1)) != auto:
            raise _Unclean
    if codes is None:
        return Block([(r0, k0, steps, ts, vals)], n)
    order = np.argsort(codes, kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=len(pairs)))
    steps, ts, vals = steps[order], ts[order], vals[order]
    groups, a = [], 0
    for (rid, key), b in zip(pairs, ends.tolist()):
        groups.append((rid, key, steps[a:b], ts[a:b], vals[a:b]))
        a = b
    return Block(groups, n)


class Spool:
    """An unnamed temporary file holding spilled blocks (gone when the process ends).

    `lock` (reentrant) serialises the file's I/O: spills (the packer) against reads (the
    writer) and closing. It is never taken under `Queue.lock`, and log calls never take
    it except at the memory bound (see Queue)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.f: Any = None
        self.lock = threading.RLock()

    def write(self, groups: list[Group]) -> tuple[int, list[tuple[int, str, int]]]:
        """Append series to the file; return where they are (raises OSError when it
        cannot, leaving the file as it was)."""
        with self.lock:
            if self.f is None:
                self.f = tempfile.TemporaryFile(prefix="mlops-jupyter-spool-", dir=self.directory)
            f = self.f
            off = f.seek(0, 2)
            try:
                meta = []
                for rid, key, steps, ts, vals in groups:
                    f.write(steps.astype("<i8", copy=False).tobytes())
                    f.write(ts.astype("<f8", copy=False).tobytes())
                    f.write(vals.astype("<f8", copy=False).tobytes())
                    meta.append((rid, key, len(vals)))
                f.flush()
            except BaseException:
                self.truncate(off)
                raise
            return off, meta

    def truncate(self, off: int) -> None:
        """Give back the file's space from `off` on (what was written last)."""
        with self.lock:
            try:
                self.f.truncate(off)
            except (OSError, AttributeError):
                pass

    def get(self, block: Block) -> list[Group]:
        """Read a spilled block's series back."""
        with self.lock:
            assert block.spooled is not None
            off, meta = block.spooled
            self.f.seek(off)
            raw = self.f.read(24 * sum(m[2] for m in meta))
        out, pos = [], 0
        for rid, key, n in meta:
            steps = np.frombuffer(raw, "<i8", n, pos)
            ts = np.frombuffer(raw, "<f8", n, pos + 8 * n)
            vals = np.frombuffer(raw, "<f8", n, pos + 16 * n)
            out.append((rid, key, steps, ts, vals))
            pos += 24 * n
        return out

    def close(self) -> None:
        with self.lock:
            if self.f is not None:
                self.f.close()
                self.f = None


class Queue:
    """Stage (tuples) -> blocks (typed arrays, oldest first) -> spool past `max_points`.

    The hot path appends to `stage` and calls `full()` once `len(stage) >= limit`. At the
    soft limit `full()` only wakes the packer and the writer. No log call waits on file
    I/O, the store, or another thread's long critical section:

    - Packing runs in slices of PACK_SLICE tuples under `_pack_lock` (pop, pack, append:
      blocks keep the stage's order); each slice holds the GIL in C loops for about a
      millisecond. `lock` guards only the block list and its counts, and is held for
      reference swaps, never for packing or I/O.
    - Spills and read-backs do their file I/O under the spool's lock alone.

    Memory bound: at most `stage_max` tuples in the stage (about 120 bytes each; plus
    what one log call adds per logging thread) and one slice being packed, and `cap` =
    `max_points + stage_max` packed points in memory (24 bytes each): at the default
    MLOPS_JUPYTER_MAX_QUEUE, 131,072 tuples (~15 MiB) and 1,131,072 points (~26 MiB).
    Spilling starts past `max_points`; the slack lets the loop fill the stage once more
    while a spill is under way. A log call that finds the stage at `stage_max` (the
    packer is starved or stuck) packs one slice itself, waiting at most for the packer's
    current slice; packing a slice past `cap` (the spool file cannot keep up with the
    loop: a stalled disk) first waits for the spill. Only when no spool file can be
    written at all do points stay in memory past the bound (warned once)."""

    def __init__(
        self,
        max_points: int,
        spool_dir: str | None,
        wake: Callable[[], None],
        warn: Callable[[str], None],
    ) -> None:
        self.stage: collections.deque = collections.deque()
        self.blocks: collections.deque[Block] = collections.deque()
        self.max_points = max(1, max_points)
        self.stage_max = max(1, min(STAGE_MAX, self.max_points // 4))
        self.soft = max(1, self.stage_max // 8)  # wake the packer and the writer early
        self.cap = self.max_points + self.stage_max  # packed points held in memory
        self.limit = self.soft
        self.mem_points = 0  # points in in-memory blocks
        self.spooled_points = 0
        self._in_flight = 0  # tuples popped by a slice not yet in a block
        self.spool = Spool(spool_dir)
        self.lock = threading.Lock()
        self.dropped = 0
        self.spilled = False  # a spill happened (warned once)
        self._spool_failed = False  # the last spill failed: the memory bound is off
        self._spool_warned = False
        self._wake = wake
        self._warn = warn
        self.last_error: str | None = None  # the store's last write error, for messages
        self._pack = threading.Event()
        self._pack_lock = threading.Lock()  # one slice packed at a time, in stage order
        self._packer: threading.Thread | None = None
        self._packer_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.stage) + self._in_flight + self.mem_points + self.spooled_points

    def full(self) -> None:
        """Called by log calls when the stage reached `limit`."""
        if len(self.stage) >= self.stage_max:
            # the packer has fallen a whole stage behind: pack one slice here
            with self._pack_lock:
                if len(self.stage) >= self.stage_max:
                    self._pack_slice(PACK_SLICE)
        self.limit = self.stage_max  # until the packer has drained the stage
        self._pack.set()  # before the start: a packer about to idle out sees it
        self._start_packer()
        self._wake()

    def _start_packer(self) -> None:
        p = self._packer
        if p is not None and p.is_alive():  # not alive in a forked child: start another
            return
        with self._packer_lock:
            if self._packer is None or not self._packer.is_alive():
                self._packer = threading.Thread(
                    target=self._pack_loop, name="mlops-packer", daemon=True
                )
                self._packer.start()

    def _pack_loop(self) -> None:
        me = threading.current_thread()
        while True:
            if not self._pack.wait(PACKER_IDLE_S):
                with self._packer_lock:
                    if not self._pack.is_set():
                        if self._packer is me:
                            self._packer = None
                        return
                continue
            self._pack.clear()
            try:
                self.compact()
            except Exception as e:  # pragma: no cover - compact() keeps bad points itself
                self._warn(f"mlops-jupyter: packing metric points failed ({e}); retried")
            if len(self.stage) >= self.soft:
                self._pack.set()  # logged while packing: no later call may come to wake us

    def compact(self) -> None:
        """Pack what the stage holds now into blocks, slice by slice; spill when past the
        bound. Never raises for bad points (they are dropped and reported once)."""
        todo = len(self.stage)  # not the points logged meanwhile: don't chase the loop
        while True:
            # taken even with nothing staged: a slice another thread popped before this
            # call is in a block once the lock is ours (a flush must not miss it)
            with self._pack_lock:
                done = self._pack_slice(min(todo, PACK_SLICE)) if todo > 0 else 0
            if not done:
                break  # nothing staged, or another thread packed the rest
            todo -= done
            if todo <= 0:
                break
        self.limit = self.soft
        if self.mem_points > self.max_points:
            self._spill()

    def _pack_slice(self, k: int) -> int:
        """Pack the `k` oldest staged tuples into a block (holding `_pack_lock`); return
        how many were taken."""
        stage = self.stage
        k = min(k, len(stage))
        if k <= 0:
            return 0
        if not self._spool_failed and self.mem_points + k > self.cap:
            self._spill()  # the memory bound: wait for the spool file
        self._in_flight = k
        pop = stage.popleft
        items = [pop() for _ in range(k)]
        block, dropped, why = pack(items)
        del items
        with self.lock:
            if block is not None:
                self.blocks.append(block)
                self.mem_points += block.n
            self._in_flight = 0
            first_drop = dropped and not self.dropped
            self.dropped += dropped
        if first_drop:
            self._warn(
                f"mlops-jupyter: dropped {dropped} metric point(s) that cannot be "
                f"stored ({why}); later points are kept. Further drops are counted "
                "in silence."
            )
        return k

    def _spill(self) -> None:
        """Move the newest in-memory blocks to the spool until half the bound stays in
        memory (the oldest blocks are the next to be written). The file I/O holds the
        spool's lock only; `lock` is held to pick the blocks and to swap each one's
        arrays for its place in the file."""
        with self.spool.lock:
            with self.lock:
                if self.mem_points <= self.max_points:
                    return
                left, victims = self.mem_points, []
                for block in reversed(self.blocks):
                    if left <= self.max_points // 2:
                        break
                    if block.groups is not None:
                        victims.append(block)
                        left -= block.n
            for block in victims:
                groups = block.groups
                if groups is None or block.gone:
                    continue  # written meanwhile
                try:
                    where = self.spool.write(groups)
                except OSError as e:
                    self._spool_failed = True
                    if not self._spool_warned:
                        self._spool_warned = True
                        self._warn(
                            f"mlops-jupyter: cannot spill waiting metric points to a spool "
                            f"file ({e}); keeping them in memory"
                        )
                    return
                self._spool_failed = False
                with self.lock:
                    if block.gone:  # the writer wrote it meanwhile: give the space back
                        self.spool.truncate(where[0])
                        continue
                    block.spooled, block.groups = where, None
                    self.mem_points -= block.n
                    self.spooled_points += block.n
                if not self.spilled:
                    self.spilled = True
                    why = f" (last store error: {self.last_error})" if self.last_error else ""
                    self._warn(
                        f"mlops-jupyter: more than {self.max_points:,} metric points are "
                        f"waiting for the store{why}; the rest go to a temporary spool file "
                        "until it accepts writes (MLOPS_JUPYTER_MAX_QUEUE sets the bound)"
                    )

    def take(self, max_points: int) -> list[tuple[Block, list[Group]]]:
        """The oldest blocks (at least one, about `max_points` in all) with their series,
        read back from the spool where needed (outside `lock`). They stay queued until
        `done()`."""
        picked: list[tuple[Block, list[Group] | None]] = []
        total = 0
        with self.lock:
            for block in self.blocks:
                if picked and total + block.n > max_points:
                    break
                picked.append((block, block.groups))  # None: spooled
                total += block.n
        # a block spilled after it was picked keeps its arrays here: they are still valid
        return [(b, g if g is not None else self.spool.get(b)) for b, g in picked]

    def done(self, blocks: list[Block]) -> None:
        """Forget blocks that were written (or dropped); they are the oldest ones."""
        with self.lock:
            for b in blocks:
                if self.blocks and self.blocks[0] is b:
                    self.blocks.popleft()
                else:  # pragma: no cover - only the writer removes blocks, oldest first
                    self.blocks.remove(b)
                b.gone = True
                if b.spooled is not None:
                    self.spooled_points -= b.n
                else:
                    self.mem_points -= b.n
            empty = self.spooled_points == 0 and self.spool.f is not None
        if empty:  # everything spilled was written: give the space back
            with self.spool.lock, self.lock:
                if self.spooled_points == 0:
                    self.spool.close()

    def close(self) -> None:
        self.spool.close()
