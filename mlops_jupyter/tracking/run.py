"""The Run object: what `start_run` returns and what every log call writes to."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import ArtifactNotFoundError, InvalidInputError, MlopsJupyterError
from ..store import Store
from ..store import runs as rstore
from .artifacts import artifact_files, store_blob
from .validate import KNOWN_KEYS, MAX_STEP, as_step, as_value, bad_key
from .writer import Writer

__all__ = ["END_STATUSES", "Run", "as_step", "as_value", "bad_key"]

_now = time.time
END_STATUSES = ("finished", "failed", "killed", "crashed", "stopped")


class Run:
    """A tracked run. Use as a context manager, or call `end()` yourself.

    Attributes: `id` (short hex id), `name`, `experiment`, `status`."""

    def __init__(
        self,
        store: Store,
        writer: Writer,
        rid: int,
        uid: str,
        name: str,
        experiment: str,
        parent: Run | None = None,
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
        self._append = writer.queue.append  # integrations may wrap this (hpo's pruning tap)
        self._raw_append = self._append
        self._on_end: list = []  # callbacks(run, status), run before the final flush

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
        if self._append is self._raw_append:
            self._stage.extend(points)  # one call for every key
        else:  # an integration wraps the append: it sees each point
            for p in points:
                self._append(p)
        if len(self._stage) >= self._q.limit:
            self._q.full()

    def log_params(self, params: dict[str, Any]) -> None:
        """Record parameters (JSON-able values; others are stored as their str())."""
        self._check_open()
        rstore.set_kv(self.store, "params", self._rid, params)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags (free-form labels); an existing tag is overwritten."""
        rstore.set_kv(self.store, "tags", self._rid, tags)

    def log_artifact(self, path: str | os.PathLike, name: str | None = None) -> str:
        """Copy a regular file (or every regular file under a directory) into the store,
        content-addressed. Returns the artifact name. Identical content is stored once.

        Refused: an empty path, special files (devices, FIFOs, sockets), a path inside the
        store folder. In a directory, special files, symlinked folders and `.mlops/` store
        folders are skipped."""
        files, base = artifact_files(path, name, self.store.root)
        root = self.store.artifacts_dir
        rows = [(self._rid, n, *store_blob(root, f), _now()) for n, f in files]
        with self.store.write() as c:
            c.executemany("INSERT OR REPLACE INTO artifacts VALUES(?,?,?,?,?)", rows)
        return base

    def artifact_path(self, name: str) -> Path:
        """Where the stored copy of artifact `name` lives."""
        rows = self.store.read(
            "SELECT digest FROM artifacts WHERE run_id=? AND name=?", (self._rid, name)
        )
        if not rows:
            raise ArtifactNotFoundError(f"run {self.id} has no artifact {name!r}")
        d = rows[0][0]
        return self.store.artifacts_dir / d[:2] / d[2:]

    # -- ending ------------------------------------------------------------------------
    def end(self, status: str = "finished") -> None:
        """End the run; buffered points are flushed first. Ending twice is a no-op."""
        if status not in END_STATUSES:
            raise InvalidInputError(f"status must be one of {END_STATUSES}, got {status!r}")
        if self.status != "running":
            return
        for cb in list(self._on_end):
            try:
                cb(self, status)
            except Exception as e:  # an integration must not lose the run's end
                import warnings

                warnings.warn(
                    f"mlops-jupyter: end-of-run hook failed: {e}", RuntimeWarning, stacklevel=2
                )
        self.status = status
        self._writer.remove_run(self._rid)
        self._writer.flush()
        rstore.finish_run(self.store, self._rid, status)
        from . import api

        api._forget(self)

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
