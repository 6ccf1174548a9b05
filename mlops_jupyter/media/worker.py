"""The media worker: one daemon thread that encodes what the log calls queued and stores
it through the run's public `log_artifact`, then indexes it (store/media.py).

The caller only validates, snapshots the object and appends it to a bounded queue, so the
training loop never pays for PNG/parquet encoding or disk writes. When the queue is full
the item is dropped with a warning (once per process) rather than stalling the loop;
`WORKER.dropped` counts them.

The queue is a deque the worker polls while media keep coming (every POLL_S) and waits on
only after IDLE_S without any: waking a blocked thread on every call (queue.Queue) costs
the caller a futex call and often a context switch, about 20 us, the whole budget of a
log_image call."""

from __future__ import annotations

import atexit
import collections
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from ..store import media as mstore
from ..store import runs as rstore

MAX_QUEUED = 256  # about 50 MB of 256x256 RGB snapshots
POLL_S = 0.01
IDLE_S = 1.0


class _Item:
    __slots__ = ("run", "key", "step", "kind", "mime", "ext", "payload", "encode")

    def __init__(self, run, key, step, kind, mime, ext, payload, encode) -> None:
        self.run = run
        self.key = key
        self.step = step
        self.kind = kind
        self.mime = mime
        self.ext = ext
        self.payload = payload
        self.encode = encode


class MediaWorker:
    """A bounded queue and the thread that drains it."""

    def __init__(self, maxsize: int = MAX_QUEUED) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[_Item] = collections.deque()
        self._busy = False
        self._sleeping = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._rids: dict[tuple[str, str], int] = {}
        self._warned: set[str] = set()
        self.dropped = 0
        self.failed = 0

    def submit(
        self,
        run: Any,
        key: str,
        step: int,
        kind: str,
        mime: str,
        ext: str,
        payload: Any,
        encode: Callable[[Any], bytes],
    ) -> None:
        """Queue one item (never blocks)."""
        if self._thread is None:
            self._start()
        if len(self._items) >= self.maxsize:
            self.dropped += 1
            self._warn(
                "full",
                f"mlops-jupyter: media queue full ({self.maxsize} items waiting to be "
                f"encoded); {key!r} at step {step} was dropped (later drops are not reported)",
            )
            return
        self._items.append(_Item(run, key, step, kind, mime, ext, payload, encode))
        if self._sleeping:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                t = threading.Thread(target=self._loop, name="mlops-media", daemon=True)
                t.start()
                self._thread = t

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned and len(self._warned) < 10_000:
            self._warned.add(kind)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _rid(self, run: Any) -> int:
        k = (run.store.key, run.id)
        rid = self._rids.get(k)
        if rid is None:
            rid = self._rids[k] = rstore.resolve_run(run.store, run.id)
        return rid

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            self._busy = True  # before the pop, so flush() never sees "empty and idle" early
            try:
                item = self._items.popleft()
            except IndexError:
                self._busy = False
                if time.monotonic() - last < IDLE_S:
                    time.sleep(POLL_S)
                    continue
                self._wake.clear()
                self._sleeping = True
                if not self._items:  # an append before _sleeping was set is seen here
                    self._wake.wait()
                self._sleeping = False
                last = time.monotonic()
                continue
            try:
                self._store(item)
            except Exception as e:  # never let one bad item stop the worker
                self.failed += 1
                self._warn(
                    f"fail:{item.run.id}:{item.key}",  # once per run and key
                    f"mlops-jupyter: could not store media {item.key!r} (step {item.step}): "
                    f"{type(e).__name__}: {e}",
                )
            finally:
                item.payload = None
                self._busy = False
                last = time.monotonic()

    def _store(self, item: _Item) -> None:
        data = item.encode(item.payload)
        name = f"media/{item.key}/{item.step}.{item.ext}"
        fd, tmp = tempfile.mkstemp(prefix="mlops-media-", suffix=f".{item.ext}")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            item.run.log_artifact(tmp, name=name)
        finally:
            os.unlink(tmp)
        if type(item.run.store).__name__ == "RemoteStore":  # through a tracking server
            from ..remote import media as rmedia

            rmedia.index(item.run, item.key, item.step, item.kind, item.mime, name, time.time())
            return
        row = (self._rid(item.run), item.key, item.step, item.kind, item.mime, name, time.time())
        mstore.add_media(item.run.store, [row])

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is stored; False on timeout."""
        if self._thread is None:
            return True
        end = None if timeout is None else time.monotonic() + timeout
        while self._items or self._busy:
            if not self._thread.is_alive():
                self._thread = None
                self._start()
            if end is not None and time.monotonic() > end:
                return False
            time.sleep(0.001)
        return True


WORKER = MediaWorker()


@atexit.register
def _drain_at_exit() -> None:
    # registered after tracking's own exit hook, so it runs first: media reach the
    # store before open runs are ended
    WORKER.flush(timeout=30.0)
