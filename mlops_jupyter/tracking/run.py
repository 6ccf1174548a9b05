"""The Run object: what `start_run` returns and what every log call writes to."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import ArtifactNotFoundError, InvalidInputError, MlopsJupyterError
from ..store import Store
from ..store import runs as rstore
from .writer import Writer

_now = time.time
END_STATUSES = ("finished", "failed", "killed", "crashed", "stopped")


def bad_key(key: Any) -> None:
    """Raise the error for an invalid metric key."""
    if not isinstance(key, str):
        raise InvalidInputError(f"metric key must be a string, got {type(key).__name__} {key!r}")
    raise InvalidInputError("metric key must be a non-empty string")


def as_value(key: str, value: Any) -> float:
    """Coerce a metric value to float (numpy/torch scalars included) or raise clearly."""
    if isinstance(value, (str, bytes)) or value is None:
        raise InvalidInputError(
            f"metric {key!r}: value must be a number, got {type(value).__name__} {value!r}"
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"metric {key!r}: value must be a number (or a 1-element array/tensor), "
            f"got {type(value).__name__}"
        ) from None


def as_step(step: Any) -> int:
    """Validate a step: a non-negative integer (numpy integers accepted)."""
    if isinstance(step, bool) or isinstance(step, float):
        raise InvalidInputError(f"step must be a non-negative integer, got {step!r}")
    try:
        s = int(step.__index__()) if hasattr(step, "__index__") else None
    except TypeError:
        s = None
    if s is None:
        raise InvalidInputError(f"step must be a non-negative integer, got {type(step).__name__}")
    if s < 0:
        raise InvalidInputError(f"step must be a non-negative integer, got {s}")
    return s


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
        self._append = writer.queue.append
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
        if type(key) is not str or not key:
            bad_key(key)
        tv = type(value)
        if tv is not float and tv is not int:
            value = as_value(key, value)
        if step is not None and (type(step) is not int or step < 0):
            step = as_step(step)
        if self.status != "running":
            self._check_open()
        self._append((self._rid, key, step, value, _now()))

    def log(self, step: int | None = None, **metrics: float) -> None:
        """Log several metrics at one step: `run.log(step=3, loss=0.2, acc=0.9)`."""
        if step is not None and (type(step) is not int or step < 0):
            step = as_step(step)
        if self.status != "running":
            self._check_open()
        t = _now()
        rid = self._rid
        for key, value in metrics.items():
            tv = type(value)
            if tv is not float and tv is not int:
                value = as_value(key, value)
            self._append((rid, key, step, value, t))

    def log_params(self, params: dict[str, Any]) -> None:
        """Record parameters (JSON-able values; others are stored as their str())."""
        self._check_open()
        rstore.set_kv(self.store, "params", self._rid, params)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags (free-form labels); an existing tag is overwritten."""
        rstore.set_kv(self.store, "tags", self._rid, tags)

    def log_artifact(self, path: str | os.PathLike, name: str | None = None) -> str:
        """Copy a file (or every file of a directory) into the store, content-addressed.

        Returns the artifact name. Identical content is stored once."""
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidInputError(
                f"artifact path must be a str or PathLike, got {type(path).__name__}"
            )
        p = Path(path)
        if not p.exists():
            raise ArtifactNotFoundError(f"artifact path does not exist: {p}")
        base = name or p.name
        files = (
            [(base, p)]
            if p.is_file()
            else [
                (f"{base}/{f.relative_to(p).as_posix()}", f)
                for f in sorted(p.rglob("*"))
                if f.is_file()
            ]
        )
        rows = [(self._rid, n, *self._store_blob(f), _now()) for n, f in files]
        with self.store.write() as c:
            c.executemany("INSERT OR REPLACE INTO artifacts VALUES(?,?,?,?,?)", rows)
        return base

    def _store_blob(self, src: Path) -> tuple[str, int]:
        root = self.store.artifacts_dir
        root.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            digest = h.hexdigest()
            dest = root / digest[:2] / digest[2:]
            if dest.exists():
                os.unlink(tmp)
            else:
                dest.parent.mkdir(exist_ok=True)
                os.replace(tmp, dest)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return digest, size

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
