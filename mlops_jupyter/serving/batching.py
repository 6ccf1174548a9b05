"""Dynamic micro-batching: concurrent requests of one worker are stacked into one model
call and the outputs split back by rows.

A batch goes to the model when it holds `max_batch` rows, when its oldest request has
waited `max_wait` seconds, or when no other request is being read by this worker (then
waiting would only add latency: nothing else is about to arrive). While the model runs,
new requests queue up and form the next batch, so batches grow with the load on their own.
Requests whose instances have other shapes (variable-size fields) go in separate batches.
The model runs on the event loop itself by default: with the GIL, a model thread would
wait up to the interpreter's switch interval (5 ms) for each hand-over while the loop is
busy reading requests, which costs far more than a small model's call; meanwhile new
requests wait in the socket buffers and form the next batch. `threaded=True` runs it in
one thread per worker instead (large models whose compute releases the GIL for long).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


class Batcher:
    """Queue of pending requests of one worker; `await submit(fields)` returns that
    request's rows of the output and the size of the batch it ran in."""

    def __init__(
        self,
        fn: Callable[[dict], Any],
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        threaded: bool = False,
    ):
        self.fn = fn
        self.threaded = threaded
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.incoming = 0  # requests being read/parsed that will submit soon (see reading)
        self.calls = 0  # model calls so far
        self.rows = 0  # rows through the model so far
        self.max_seen = 0  # the largest batch so far (rows)
        self._queue: deque = deque()
        self._waiter: asyncio.Future | None = None  # the batch forming waits on it
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mj-model")

    def reading(self) -> None:
        """A request started being read: a forming batch may wait for it."""
        self.incoming += 1

    def read_done(self) -> None:
        """That request was read (it submits now) or failed."""
        self.incoming -= 1
        self._maybe_go()

    def _maybe_go(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            if self.incoming <= 0 or self._queued_rows() >= self.max_batch:
                w.set_result(None)

    async def submit(self, fields: dict[str, np.ndarray], was_reading: bool = False) -> tuple:
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())
        fut = loop.create_future()
        n = len(next(iter(fields.values())))
        key = tuple((k, v.shape[1:], v.dtype.str) for k, v in fields.items())
        self._queue.append((fields, n, key, fut, time.monotonic()))
        self._wake.set()
        if was_reading:  # queued first, then no longer counted as being read
            self.incoming -= 1
        self._maybe_go()
        return await fut

    def _take(self) -> list:
        """Up to max_batch rows of queued requests of the first one's shapes (at least one
        request, even a larger one)."""
        first = self._queue.popleft()
        out, rows = [first], first[1]
        keep = []
        while self._queue and rows < self.max_batch:
            item = self._queue.popleft()
            if item[2] == first[2] and rows + item[1] <= self.max_batch:
                out.append(item)
                rows += item[1]
            else:
                keep.append(item)
                if item[2] == first[2]:
                    break  # would overflow: it starts the next batch
        self._queue.extendleft(reversed(keep))
        return out

    def _queued_rows(self) -> int:
        return sum(item[1] for item in self._queue)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            # let requests being read join, within the wait limit (woken, not polled:
            # a busy loop would take the CPU those requests need to be read)
            wait = self._queue[0][4] + self.max_wait_s - time.monotonic()
            if self.incoming > 0 and self._queued_rows() < self.max_batch and wait > 0:
                self._waiter = loop.create_future()
                timer = loop.call_later(wait, self._expire, self._waiter)
                try:
                    await self._waiter
                finally:
                    timer.cancel()
                    self._waiter = None
            items = self._take()
            try:
                if len(items) == 1:
                    batch = items[0][0]
                else:
                    batch = {k: np.concatenate([it[0][k] for it in items]) for k in items[0][0]}
                n = sum(it[1] for it in items)
                if self.threaded:
                    out = await loop.run_in_executor(self._pool, self.fn, batch)
                else:
                    out = self.fn(batch)
                self.calls += 1
                self.rows += n
                self.max_seen = max(self.max_seen, n)
                parts = split(out, [it[1] for it in items], n)
            except Exception as e:  # the model failed: every request of the batch gets it
                for it in items:
                    if not it[3].done():
                        it[3].set_exception(e)
                continue
            for it, part in zip(items, parts):
                if not it[3].done():  # the client may have gone
                    it[3].set_result((part, n))

    @staticmethod
    def _expire(w: asyncio.Future) -> None:
        if not w.done():
            w.set_result(None)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


def split(out: Any, sizes: list[int], total: int) -> list[Any]:
    """Split a batch output (array, or dict/tuple of arrays with `total` rows) by rows."""
    if len(sizes) == 1:
        return [out]
    bounds = np.cumsum(sizes)[:-1]
    if isinstance(out, dict):
        cols = {k: np.split(_rows(v, total), bounds) for k, v in out.items()}
        return [{k: cols[k][i] for k in out} for i in range(len(sizes))]
    if isinstance(out, (tuple, list)) and not isinstance(out, np.ndarray):
        cols = [np.split(_rows(v, total), bounds) for v in out]
        return [tuple(c[i] for c in cols) for i in range(len(sizes))]
    return np.split(_rows(out, total), bounds)


def _rows(v: Any, total: int) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim == 0 or len(a) != total:
        raise ValueError(
            f"the model returned {a.shape[0] if a.ndim else 'a scalar'} rows for a batch of "
            f"{total}; a batched model must return one output row per input row"
        )
    return a
