"""The Run object: what `start_run` returns and what every log call writes to."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ArtifactNotFoundError, InvalidInputError, MlopsJupyterError
from ..store import Store
from ..store import runs as rstore
from .artifacts import artifact_files
from .pending import Pending
from .validate import KNOWN_KEYS, MAX_STEP, as_step, as_value, bad_key
from .writer import Writer

__all__ = ["END_STATUSES", "Run", "as_step", "as_value", "bad_key"]

_now = time.time
END_STATUSES = ("finished", "failed", "killed", "crashed", "stopped")


class Run:
    """A tracked run. Use as a context manager, or call `end()` yourself.

    Attributes: `id` (short hex id), `name`, `experiment`, `status`, `store`, `store_id`.

    Integrations (telemetry, hpo, data autolog, widgets...) use only the public methods:
    `on_end`, `add_log_listener`/`remove_log_listener`, `flush`, `add_event`, `store_id`;
    never the private attributes, which may change."""

    def __init__(
        self,
        store: Store,
        writer: Writer,
        rid: int,
        uid: str,
        name: str,
        experiment: str,
        parent: Run | None = None,
        forget: Callable[[Run], None] | None = None,
        pending: Pending | None = None,
    ) -> None:
        self.store = store
        self.id = uid
        self.name = name
        self.experiment = experiment
        self.status = "running"
        self.parent = parent
        self._rid = rid
        self._writer = writer
        self._q = writer.q
        self._stage = writer.queue
        # log calls go through `_append`; it is the plain list append unless a log listener
        # is registered, so the hot path costs nothing extra without listeners
        self._append = writer.queue.append
        self._raw_append = self._append
        self._on_end: list = []  # callbacks(run, status), run before the final flush
        self._listeners: tuple = ()  # (fn, propagate); replaced whole, never mutated
        self._warned: set[int] = set()  # ids of listeners whose failure was already warned
        self._lock = threading.Lock()
        self._forget = forget  # the tracking API's "no longer active" hook
        # started without waiting: `_rid` is provisional until the writer inserts the run
        # (log calls keep using it; `store_id` waits for the real one)
        self._pending = pending

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, name={self.name!r}, experiment={self.experiment!r}, status={self.status!r})"

    # -- logging -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.status != "running":
            raise MlopsJupyterError(
                f"run {self.name!r} ({self.id}) has ended ({self.status}); start a new run"
            )

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Buffer one point; it reaches the store within one flush interval."""
        if type(key) is not str or key not in KNOWN_KEYS:
            bad_key(key)
        if type(value) is not float:
            value = as_value(key, value)
        if step is not None and (type(step) is not int or step < 0 or step > MAX_STEP):
            step = as_step(step)
        if self.status != "running":
            self._check_open()
        self._append((self._rid, key, step, value, _now()))
        if len(self._stage) >= self._q.limit:
            self._q.full()

    def log(self, step: int | None = None, **metrics: float) -> None:
        """Log several metrics at one step: `run.log(step=3, loss=0.2, acc=0.9)`.

        Every key and value is checked before any point is buffered."""
        self._log(step, metrics)

    def _log(self, step: int | None, metrics: dict[str, Any]) -> None:
        if step is not None and (type(step) is not int or step < 0 or step > MAX_STEP):
            step = as_step(step)
        if self.status != "running":
            self._check_open()
        t = _now()
        rid = self._rid
        points = []
        add = points.append
        for key, value in metrics.items():
            if key not in KNOWN_KEYS:
                bad_key(key)
            if type(value) is not float:
                value = as_value(key, value)
            add((rid, key, step, value, t))
        self._stage.extend(points)  # one call for every key
        if len(self._stage) >= self._q.limit:
            self._q.full()
        if self._listeners:
            self._notify(points)

    def log_params(self, params: dict[str, Any], wait: bool = True) -> None:
        """Record parameters (JSON-able values; others are stored as their str()).
        `wait=False`: checked now, written by the background writer with the run's next
        points (a write error is then a warning, not an exception)."""
        self._check_open()
        self._set_kv("params", params, wait)

    def set_tags(self, tags: dict[str, Any], wait: bool = True) -> None:
        """Set tags (free-form labels); an existing tag is overwritten. `wait=False` as
        for `log_params`."""
        self._set_kv("tags", tags, wait)

    def _set_kv(self, table: str, items: dict[str, Any], wait: bool) -> None:
        if wait:
            rstore.set_kv(self.store, table, self.store_id, items)
        else:
            rstore.encode_items(items, table)  # bad values raise here, in the caller
            self._writer.set_kv_later(self._ref(), table, dict(items))

    def _ref(self) -> int:
        """What the writer's queues take for this run: its row id, or while it is not
        written yet its provisional id."""
        p = self._pending
        return self._rid if p is None or p.rid is None else p.rid

    def log_artifact(self, path: str | os.PathLike, name: str | None = None) -> str:
        """Copy a regular file (or every regular file under a directory) into the store,
        content-addressed. Returns the artifact name. Identical content is stored once.

        Refused: an empty path, special files (devices, FIFOs, sockets), a path inside the
        store folder. In a directory, special files, symlinked folders and `.mlops/` store
        folders are skipped."""
        files, base = artifact_files(path, name, self.store.root)
        blobs = self.store.artifacts
        rid = self.store_id
        rows = [(rid, n, *blobs.put_blob(f), _now()) for n, f in files]
        rstore.add_artifacts(self.store, rows)
        return base

    def artifact_path(self, name: str) -> Path:
        """A local file holding artifact `name` (the stored file itself in a local store;
        a verified copy in the read-through cache with object storage)."""
        d = rstore.artifact_digest(self.store, self.store_id, name)
        if d is None:
            raise ArtifactNotFoundError(f"run {self.id} has no artifact {name!r}")
        return self.store.artifacts.blob_file(d)

    # -- integration API ---------------------------------------------------------------
    @property
    def store_id(self) -> int:
        """The run's row id inside its store: what store-level functions take. It is
        store-internal (not the public `id`) and means nothing in another store. A run
        started without waiting is written to the store first."""
        p = self._pending
        if p is None:
            return self._rid
        return p.rid if p.rid is not None else self._writer.real_rid(p)

    def flush(self) -> None:
        """Write the points buffered so far to the store now; returns once they are written."""
        self._writer.flush()

    def add_event(
        self,
        kind: str,
        message: str,
        level: str = "info",
        data: dict | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> int:
        """Record an event (alert, warning, lifecycle note) on this run and return its id;
        `start` defaults to now, `end` to none (an instant). Written synchronously; safe
        from any thread, and usable after the run has ended."""
        return rstore.add_event(self.store, self.store_id, kind, message, level, data, start, end)

    def on_end(self, callback: Callable[[Run, str], Any]) -> Callable[[], None]:
        """Call `callback(run, status)` once when the run ends, in the thread that ends it,
        before the last buffered points are flushed. A callback that raises only warns.
        Returns a function that unregisters the callback (safe to call twice)."""
        with self._lock:
            self._on_end.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                try:
                    self._on_end.remove(callback)
                except ValueError:
                    pass

        return unsubscribe

    def add_log_listener(
        self, fn: Callable[[str, float, int | None], Any], *, propagate: bool = False
    ) -> None:
        """Call `fn(key, value, step)` for every point logged to this run from now on,
        synchronously in the thread that logs it (the sampler thread's `sys/` points too),
        after the point is buffered. Keep it fast: it runs inside the training loop.

        An exception from `fn` warns once and is otherwise ignored, so logging never
        breaks; with `propagate=True` it reaches the log call instead, once every point of
        that call is buffered and seen by every listener. Thread-safe to add and remove."""
        if not callable(fn):
            raise InvalidInputError(f"fn must be callable, got {type(fn).__name__}")
        with self._lock:
            self._listeners = (*self._listeners, (fn, bool(propagate)))
            self._append = self._append_notify

    def remove_log_listener(self, fn: Callable[..., Any]) -> None:
        """Stop calling `fn`; a listener that is not registered is ignored."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x[0] is not fn)
            if not self._listeners:
                self._append = self._raw_append

    def _append_notify(self, point: tuple) -> None:
        self._raw_append(point)
        self._notify((point,))

    def _notify(self, points) -> None:
        listeners = self._listeners
        err: BaseException | None = None
        for _rid, key, step, value, _ts in points:
            for fn, propagate in listeners:
                try:
                    fn(key, value, step)
                except Exception as e:
                    if propagate:
                        err = err or e
                    elif id(fn) not in self._warned:
                        self._warned.add(id(fn))
                        warnings.warn(
                            f"mlops-jupyter: log listener {fn!r} failed: {e!r} "
                            "(further failures of it are not reported)",
                            RuntimeWarning,
                            stacklevel=4,
                        )
        if err is not None:
            raise err

    # -- ending ------------------------------------------------------------------------
    def end(self, status: str = "finished", wait: bool = True) -> None:
        """End the run; buffered points are flushed first. Ending twice is a no-op.
        `wait=False` returns at once and leaves the flush and the end to the background
        writer (sweeps end each trial run so; the next flush or any `end()` writes it)."""
        if status not in END_STATUSES:
            raise InvalidInputError(f"status must be one of {END_STATUSES}, got {status!r}")
        if self.status != "running":
            return
        with self._lock:
            callbacks, self._on_end = self._on_end, []
        for cb in callbacks:
            try:
                cb(self, status)
            except Exception as e:  # an integration must not lose the run's end
                warnings.warn(
                    f"mlops-jupyter: end-of-run hook failed: {e}", RuntimeWarning, stacklevel=2
                )
        self.status = status
        self._writer.remove_run(self._rid)
        # on a database server that is unreachable, the end is kept with the points and
        # written when it is back (the writer warns once); other errors raise here
        self._writer.end_run(self._ref(), status, wait)
        if self._forget is not None:
            self._forget(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, et, ev, tb) -> bool:
        if et is None:
            self.end("finished")
        elif issubclass(et, KeyboardInterrupt):
            self.end("killed")
        else:
            self.end("failed")
        return False
