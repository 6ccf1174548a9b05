"""`mj.log_image`, `mj.log_figure`, `mj.log_table`, `mj.log_text`, `mj.log_audio` and
`mj.confusion_matrix`: rich media per step, stored content-addressed as artifacts of the
run with an index row per (key, step).

The caller's thread only checks its arguments and snapshots the object; encoding and
storing happen on the media worker (see worker.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInputError, NoActiveRunError
from ..tracking import active_run
from . import encode as enc
from .figures import confusion_counts, confusion_frame, figure_bytes
from .worker import WORKER

MAX_STEP = (1 << 63) - 1
_known_keys: set[str] = set()
_next: dict[tuple[str, str], int] = {}  # (run id, key) -> step given to step=None


def _key(key: Any) -> str:
    if key in _known_keys:
        return key
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"key must be a non-empty string, got {key!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"key {key!r} is not valid UTF-8 text") from None
    if key.startswith("/") or "\x00" in key:
        raise InvalidInputError(f"key {key!r} must not start with '/' or contain NUL")
    if len(_known_keys) > 100_000:
        _known_keys.clear()
    _known_keys.add(key)
    return key


def _run(run: Any) -> Any:
    r = active_run() if run is None else run
    if r is None:
        raise NoActiveRunError("log media")
    if getattr(r, "status", "running") != "running":
        raise InvalidInputError(f"run {r.id} has ended ({r.status}); start a new run")
    return r


def _step(run: Any, key: str, step: Any) -> int:
    k = (run.id, key)
    if step is None:
        s = _next.get(k)
        if s is None:
            from ..remote import media as rmedia
            from ..store import media as mstore
            from ..store import runs as rstore

            if rmedia.is_remote_store(run.store):  # a run logged through a tracking server
                s = rmedia.next_step(run.store, run.id, key)
            else:
                s = mstore.next_step(run.store, rstore.resolve_run(run.store, run.id), key)
    else:
        if isinstance(step, bool) or not hasattr(step, "__index__"):
            raise InvalidInputError(f"step must be a non-negative integer, got {step!r}")
        s = step.__index__()
        if s < 0 or s > MAX_STEP:
            raise InvalidInputError(f"step must be a non-negative int64, got {s}")
    if s >= _next.get(k, 0):
        _next[k] = s + 1
    return s


def log_image(
    key: str, img: Any, step: int | None = None, *, run: Any = None, copy: bool = True
) -> None:
    """Log an image at `step` (None: one past this key's last step), stored as PNG.

    `img`: numpy array, PIL image, torch or MLX tensor; HW, HWC or CHW (torch tensors are
    read as CHW when the first axis has 1, 3 or 4 entries); uint8, bool or float in [0, 1].
    The pixels are copied before the call returns (encoding happens later, on the media
    worker); `copy=False` skips that copy of a numpy array, which is then read later and
    must not be changed until `mj.flush_media()`."""
    key = _key(key)
    r = _run(run)
    snap, layout = enc.snapshot_image(img, copy)
    s = _step(r, key, step)
    ours = copy and isinstance(img, np.ndarray)  # only our own copies go back to the pool

    def encode(x: Any) -> bytes:
        try:
            return enc.encode_png(enc.image_array(x, layout))
        finally:
            if ours:
                enc.recycle(x)

    WORKER.submit(r, key, s, "image", "image/png", "png", snap, encode)


def log_figure(
    key: str, fig: Any, step: int | None = None, *, dpi: int | None = None, run: Any = None
) -> None:
    """Log a matplotlib (as PNG), altair or plotly (as their JSON spec) figure."""
    key = _key(key)
    r = _run(run)
    data, mime, ext = figure_bytes(fig, dpi)
    WORKER.submit(r, key, _step(r, key, step), "figure", mime, ext, data, bytes)


def log_table(key: str, frame: Any, step: int | None = None, *, run: Any = None) -> None:
    """Log a polars or pandas DataFrame (stored as parquet; read back as polars)."""
    key = _key(key)
    r = _run(run)
    f = enc.snapshot_table(frame)
    s = _step(r, key, step)
    WORKER.submit(r, key, s, "table", "application/vnd.apache.parquet", "parquet", f, _parquet)


def _parquet(f: Any) -> bytes:
    return enc.encode_parquet(f)


def log_text(key: str, text: str, step: int | None = None, *, run: Any = None) -> None:
    """Log a piece of text (a generation, a sample, a report) at `step`."""
    key = _key(key)
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("text is not valid UTF-8 (it contains a lone surrogate)") from None
    r = _run(run)
    WORKER.submit(
        r, key, _step(r, key, step), "text", "text/plain; charset=utf-8", "txt", data, bytes
    )


def log_audio(
    key: str, samples: Any, sample_rate: int, step: int | None = None, *, run: Any = None
) -> None:
    """Log audio as 16-bit PCM WAV. `samples`: float in [-1, 1] or int16, shape (n,) or
    (n, channels); numpy, torch or MLX."""
    key = _key(key)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InvalidInputError(f"sample_rate must be a positive int, got {sample_rate!r}")
    r = _run(run)
    a = enc.audio_array(samples)
    s = _step(r, key, step)

    def encode(x: np.ndarray) -> bytes:
        return enc.encode_wav(x, sample_rate)

    WORKER.submit(r, key, s, "audio", "audio/wav", "wav", a, encode)


def confusion_matrix(
    y_true: Any,
    y_pred: Any,
    labels: Any = None,
    *,
    key: str = "confusion_matrix",
    step: int | None = None,
    run: Any = None,
) -> np.ndarray:
    """Count the confusion matrix of `y_true` vs `y_pred`, log it as a table (actual,
    predicted, count) under `key`, and return the counts (rows: true class, columns:
    predicted class, in the order of `labels`, default the sorted classes seen)."""
    key = _key(key)
    r = _run(run)
    counts, labels = confusion_counts(y_true, y_pred, labels)
    frame = confusion_frame(counts, labels)
    s = _step(r, key, step)
    WORKER.submit(
        r, key, s, "confusion_matrix", "application/vnd.apache.parquet", "parquet", frame, _parquet
    )
    return counts


def flush_media(timeout: float | None = None) -> bool:
    """Wait until every logged media item is stored; False if `timeout` passed first."""
    return WORKER.flush(timeout)
