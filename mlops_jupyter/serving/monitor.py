"""Monitoring live inputs: windowed column profiles of what each worker answered, their
drift against the training data of the model version, and alerts on the version's run.

On the request path a worker only appends a reference to the request's parsed input
arrays to the buffer of its (window, variant, version) - a dict lookup and a list append.
Each window keeps at most `max_rows` rows: once full, every further request replaces a
random kept request with probability kept/seen (a reservoir sample of requests), so memory
stays bounded whatever the traffic. A background thread closes each window shortly after
it ends: it computes the same column profiles as data versions (data.profile), compares
them with the data version(s) the version's run read (`mj.drift` on profiles, store=False:
the verdict is kept on the window's own row, not as one more stored drift report and two
data versions per minute), writes one row (store/serving_profiles.py) and, for a drifted
window, one event on the version's run. Raw rows are stored only with log_inputs=True.

Judging a window and reading windows back (merged across workers; mj.serving_drift,
latest_drift, drift_windows) live in input_drift.py and are importable from here too.

Window boundaries are aligned to the clock (multiples of the window length since the
epoch), so the rows of several workers and machines for one window line up and are merged
when read (weighted by their sampled rows)."""

from __future__ import annotations

import logging
import random
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .input_drift import (  # noqa: F401 - the readers' API lives here too
    MIN_ROWS,
    _verdict,
    alert,
    drift_windows,
    judge,
    latest_drift,
    merge,
    pick_reference,
    reference_candidates,
    serving_drift,
)

log = logging.getLogger("mlops_jupyter.serving")
DEFAULT_WINDOW = 60.0
DEFAULT_ROWS = 10_000  # rows kept per window, variant and worker
MAX_COLUMNS = 100  # columns profiled per window: a profile is ~4 KB per numeric column
GRACE = 0.25  # s after a window ends before it is closed (requests already in flight)
RETRIES = 5  # flushes a window is tried at before it is dropped (the store unreachable)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|min|m|h)?\s*$")


def parse_window(text: str | float | int) -> float:
    """Seconds of a window length: 60, "60s", "500ms", "5m", "1h"; 0 or "off" = no
    monitoring. Raises InvalidInputError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        secs = float(text)
    elif isinstance(text, str) and text.strip().lower() in ("off", "none", "no"):
        return 0.0
    else:
        m = _WINDOW.match(str(text))
        if not m:
            raise InvalidInputError(
                f"window must be a duration like 60s, 500ms, 5m or 1h (0 or off: none); "
                f"got {text!r}"
            )
        secs = float(m[1]) * _UNITS[m[2] or "s"]
    if secs != 0 and not 0.1 <= secs <= 86_400:
        raise InvalidInputError(f"window must be between 100ms and 24h (or 0), got {text!r}")
    return secs


class _Window:
    __slots__ = ("items", "rows", "seen", "requests")

    def __init__(self) -> None:
        self.items: list[dict[str, np.ndarray]] = []
        self.rows = 0  # rows kept in items
        self.seen = 0  # rows answered
        self.requests = 0


class InputMonitor:
    """One worker's windows of answered inputs, closed and stored by a background thread."""

    def __init__(
        self,
        store: Any,
        model: str,
        window: float = DEFAULT_WINDOW,
        max_rows: int = DEFAULT_ROWS,
        log_inputs: bool = False,
        worker: str | None = None,
    ) -> None:
        if window <= 0:
            raise InvalidInputError("window must be positive")
        if max_rows < 1:
            raise InvalidInputError("max_rows must be at least 1")
        self.store, self.model, self.window = store, model, float(window)
        self.max_rows, self.log_inputs, self.worker = int(max_rows), log_inputs, worker
        self.windows: dict[tuple[int, str, int], _Window] = {}
        self.written = 0
        self.failed = 0
        self._refs: dict[int, list] = {}  # version -> candidate reference DataVersions
        self._retry: list[tuple] = []  # windows the store refused, tried again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mj-serve-monitor", daemon=True)
        self._thread.start()

    def add(self, variant: str, version: int, fields: dict[str, np.ndarray]) -> None:
        """Count one answered request's inputs (event loop only: no lock needed)."""
        key = (int(time.time() // self.window), variant, version)
        w = self.windows.get(key)
        if w is None:
            w = self.windows.setdefault(key, _Window())
        n = len(next(iter(fields.values())))
        w.seen += n
        w.requests += 1
        if w.rows + n <= self.max_rows:
            w.items.append(fields)
            w.rows += n
            return
        if n > self.max_rows:  # one request larger than the whole sample
            fields = {k: a[: self.max_rows] for k, a in fields.items()}
            n = self.max_rows
        # reservoir over requests: replace a random kept one with probability kept/seen
        j = int(random.random() * w.requests)
        if j < len(w.items):
            old = len(next(iter(w.items[j].values())))
            if w.rows - old + n <= self.max_rows:
                w.items[j] = fields
                w.rows += n - old

    def _loop(self) -> None:
        tick = min(1.0, self.window / 4)
        while not self._stop.wait(tick):
            self.flush(time.time())
        self.flush(None)

    def flush(self, now: float | None) -> None:
        """Close and store the windows that ended before `now` (None: all, at stop).
        A window the store refused is tried again at the next flushes (RETRIES times)."""
        current = None if now is None else int((now - GRACE) // self.window)
        todo, self._retry = self._retry, []
        for key in sorted(self.windows):
            if current is not None and key[0] >= current:
                continue
            w = self.windows.pop(key, None)
            if w is not None and w.items:
                start = key[0] * self.window
                todo.append((key, w, start, min(start + self.window, time.time()), 0))
        for key, w, start, end, tries in todo:
            try:
                self._close(key[1], key[2], start, end, w)
                self.written += 1
            except Exception as e:  # never stop serving over monitoring
                if tries + 1 < RETRIES and now is not None:
                    self._retry.append((key, w, start, end, tries + 1))
                    log.warning("input profile of %s not stored (will retry): %s", self.model, e)
                else:
                    self.failed += 1
                    log.warning("input profile of %s not stored: %s", self.model, e)

    def _close(self, variant: str, version: int, start: float, end: float, w: _Window) -> None:
        from ..data.profile import frame_profile
        from ..store import serving_profiles as sp

        frame = window_frame(w.items)
        profs, _ = frame_profile(frame)
        row: dict[str, Any] = {
            "model": self.model,
            "version": version,
            "variant": variant,
            "worker": self.worker,
            "window_start": start,
            "window_end": end,
            "n_rows": w.seen,
            "n_sampled": frame.height,
            "n_requests": w.requests,
            "profile": profs,
        }
        if version not in self._refs:
            self._refs[version] = reference_candidates(self.store, self.model, version)
        ref = pick_reference(self._refs[version], frame.columns)
        if ref is not None:
            row["reference"] = ref.id
            row["drift"] = judge(ref, profs, frame.height)
            row["drifted"], row["drift_share"] = _verdict(row["drift"])
        if getattr(self.store, "remote_serving", False):  # the server stores row and alert
            self.store.save_window(row)  # in one transaction (trackserver/serving_routes.py)
            return
        if self.log_inputs:
            row["inputs_blob"] = _store_rows(self.store, frame)
        # one transaction: a window tried again after a failure is stored and alerted once
        with self.store.write("store an input profile"):
            sp.save_profile(self.store, row)
            if row.get("drifted"):
                alert(self.store, self.model, version, variant, start, end, row["drift"], ref.id)

    def close(self) -> None:
        """Stop the thread after storing every window, the current (partial) one included."""
        self._stop.set()
        self._thread.join(timeout=30)


def start(store: Any, model: str, worker: str | None, opts: dict[str, Any]) -> InputMonitor | None:
    """The monitor a worker runs with serve's options (None when monitor_window is 0)."""
    window = parse_window(opts.get("monitor_window", DEFAULT_WINDOW))
    if not window:
        return None
    return InputMonitor(
        store,
        model,
        window,
        int(opts.get("monitor_rows") or DEFAULT_ROWS),
        bool(opts.get("log_inputs", False)),
        worker,
    )


def preload(store: Any, model: str, versions: list[int]) -> bool:
    """Import the drift check (scipy) now when a served version has training data linked:
    called before the workers fork, so no worker's first window imports it in a thread
    that would hold the GIL for a second or more between requests."""
    try:
        if not any(reference_candidates(store, model, v) for v in versions):
            return False
    except Exception as e:  # only a head start: the server starts without it
        log.warning("training data of %s not looked up before start: %s", model, e)
        return False
    from ..data import compare  # noqa: F401
    from ..data.stats import require_scipy

    require_scipy()
    return True


def window_frame(items: list[dict[str, np.ndarray]]):
    """The kept requests as one polars DataFrame: a 1-D field is a column of its name, a
    field of shape [batch, k] k columns "field[i]" - or "0".."k-1" when it is the only
    field, the names a numpy training array gets as a data version. Only the first
    MAX_COLUMNS columns are kept (an image's pixels would make megabytes per window)."""
    import polars as pl

    names = list(items[0])
    cols: dict[str, Any] = {}
    for name in names:
        a = np.concatenate([np.asarray(it[name]) for it in items])
        if a.ndim == 1:
            cols[name] = a
        else:
            a = a.reshape(len(a), -1)
            for i in range(min(a.shape[1], MAX_COLUMNS - len(cols))):
                cols[str(i) if len(names) == 1 else f"{name}[{i}]"] = a[:, i]
        if len(cols) >= MAX_COLUMNS:
            break
    return pl.DataFrame(cols)


def _store_rows(store: Any, frame: Any) -> str:
    """The window's kept rows as a Parquet blob (only with log_inputs); its digest."""
    with tempfile.TemporaryDirectory(prefix="mj-inputs-") as tmp:
        path = Path(tmp) / "inputs.parquet"
        frame.write_parquet(path)
        digest, _ = store.artifacts.put_blob(path)
    return digest
