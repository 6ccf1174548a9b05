"""Live run monitor and telemetry panel (anywidget; the ES module ships in static/).

A follower thread reads only the points logged since its last look (from the store the
background writer fills), keeps them in numpy buffers, decimates each series to at most
~2000 points and pushes one batched update at most `rate` times a second (<= 10). The
training loop never calls into the widget."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from ..store import telemetry as tstore
from ..telemetry import sampler
from ..telemetry.sources import THERMAL_STATES
from .media_view import media_items
from .render import decimate, jsonable, static_html, telemetry_items

STATIC = Path(__file__).parent / "static"
MAX_RATE = 10.0
KEEP_POINTS = 2_000_000  # per series held by a live monitor before older points are folded
DUTY = 0.02  # the most CPU (fraction of one core) a live monitor's follower may use


class _Buf:
    """A growable (step, value) buffer."""

    __slots__ = ("x", "y", "n")

    def __init__(self) -> None:
        self.x = np.empty(1024, np.int64)
        self.y = np.empty(1024, np.float64)
        self.n = 0

    def extend(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.n + len(x) > KEEP_POINTS:
            # bound memory on very long runs: fold the history into its bucket extremes
            # (the chart shows ~1000 points anyway; min/max per bucket are kept exactly)
            hx, hy = decimate(self.x[: self.n], self.y[: self.n], KEEP_POINTS // 8)
            self.x[: len(hx)], self.y[: len(hy)], self.n = hx, hy, len(hx)
        need = self.n + len(x)
        if need > len(self.x):
            cap = max(need, 2 * len(self.x))
            self.x = np.resize(self.x, cap)
            self.y = np.resize(self.y, cap)
        self.x[self.n : need] = x
        self.y[self.n : need] = y
        self.n = need


class _Base(anywidget.AnyWidget):
    _esm = STATIC / "live.js"
    _css = STATIC / "live.css"
    mode = t.Unicode("run").tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    thermal = t.Unicode("unknown").tag(sync=True)
    telemetry = t.List().tag(sync=True)
    series = t.Dict().tag(sync=True)
    alerts = t.List().tag(sync=True)
    media = t.List().tag(sync=True)  # latest images/figures per key (media_view.py)
    updates = t.Int(0).tag(sync=True)

    _shown_at: int | None = None
    _handle: Any = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.title!r}, status={self.status!r}, "
            f"series={sorted(self.series)})"
        )

    def _bundle(self) -> dict[str, Any]:
        b = self._repr_mimebundle_()
        # anywidget returns (data, metadata); ipywidgets a plain dict
        return dict(b[0] if isinstance(b, tuple) else b)

    def _ipython_display_(self, **kw: Any) -> None:
        # `mj.live()` already displayed the widget; its return value as the last line of
        # the same cell must not show a second copy
        from IPython import get_ipython
        from IPython.display import display

        ip = get_ipython()
        if ip is not None and self._shown_at == ip.execution_count:
            return
        display(self._bundle(), raw=True)

    def show(self) -> None:
        """Display in the notebook (with a handle to attach a static copy later)."""
        from IPython import get_ipython
        from IPython.display import display

        self._handle = display(self._bundle(), raw=True, display_id=True)
        ip = get_ipython()
        self._shown_at = ip.execution_count if ip is not None else None

    def static_html(self) -> str:
        """The current state as self-contained HTML (inline SVG charts)."""
        return static_html(
            self.title, self.status, self.series, self.telemetry, self.thermal, self.alerts
        )

    def _freeze(self) -> None:
        # keep the widget, and add a static copy of the final state to the same output so
        # exported notebooks and front ends without widget support still show the result
        if self._handle is not None:
            try:
                bundle = self._bundle()
                bundle["text/html"] = self.static_html()
                self._handle.update(bundle, raw=True)
            except Exception:
                pass


class _StoreSource:
    """The monitor's reads from a store (remote/live.py has the tracking server's)."""

    remote = False

    def __init__(self, store: Any, rid: int) -> None:
        self.store, self.rid = store, rid

    def run_row(self) -> tuple[str, str, str]:
        return tstore.run_rows(self.store, [self.rid])[self.rid]

    def new_points(self, have: dict[str, int]) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
        return tstore.new_points(self.store, self.rid, have)

    def latest_values(self) -> dict[str, float]:
        return tstore.latest_values(self.store, self.rid)

    def list_events(self, kinds: tuple[str, ...]) -> list[tuple]:
        return tstore.list_events(self.store, [self.rid], kinds)


class LiveMonitor(_Base):
    """Live charts of a run's metrics, telemetry strip, thermal badge and alerts.
    `source`: where it reads (default: `store`; remote/live.RemoteSource over a server)."""

    def __init__(
        self,
        store: Any,
        rid: int,
        run: Any = None,
        rate: float = 4.0,
        buckets: int = 500,
        keys: list[str] | None = None,
        source: Any = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self._store, self._rid, self._run = store, rid, run
        self._src = source if source is not None else _StoreSource(store, rid)
        self._refresh_lock = threading.Lock()
        self._interval = 1.0 / min(MAX_RATE, max(0.1, float(rate)))
        if self._src.remote:  # each frame is a round trip to the server: at most one a second
            self._interval = max(self._interval, 1.0)
        self._buckets = buckets
        self._keys = keys
        self._bufs: dict[str, _Buf] = {}
        self._have: dict[str, int] = {}
        self._alert_sig: tuple = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cpu_s = 0.0  # CPU time spent following (for benchmarks)
        self._media_seen, self._media_cache = 0, {}
        uid, name, status = self._src.run_row()
        self.title = f"{name} ({uid})"
        self.status = status

    # -- polling -----------------------------------------------------------------------
    def _run_status(self) -> str:
        if self._run is not None:
            return self._run.status
        return self._src.run_row()[2]

    def refresh(self) -> bool:
        """Read new points/alerts/telemetry and push them; True if anything changed."""
        with self._refresh_lock:  # a caller's refresh and the follower's never interleave
            return self._refresh()

    def _refresh(self) -> bool:
        new = self._src.new_points(self._have)
        changed = False
        for key, (n, x, y) in new.items():
            if self._keys is not None and key not in self._keys:
                continue
            self._have[key] = n
            self._bufs.setdefault(key, _Buf()).extend(x, y)
            changed = True
        series = None
        if changed:
            series = {}
            for key in sorted(self._bufs):
                b = self._bufs[key]
                x, y = decimate(b.x[: b.n], b.y[: b.n], self._buckets)
                finite = b.y[: b.n][np.isfinite(b.y[: b.n])]
                series[key] = {
                    "x": x.tolist(),
                    "y": jsonable(y),
                    "n": b.n,
                    "last": jsonable(b.y[b.n - 1 : b.n])[0],
                    "min": float(finite.min()) if len(finite) else None,
                    "max": float(finite.max()) if len(finite) else None,
                }
        sample = sampler.latest(max_age=5.0) if self._run is not None else None
        if sample is None:
            sample = self._src.latest_values()
        thermal = sample.get("sys/thermal_state")
        alerts = [
            {
                "kind": r[3],
                "level": r[4],
                "message": r[5],
                "start": r[6],
                "end": r[7],
            }
            for r in self._src.list_events(("alert", "throttle"))
        ]
        sig = tuple((a["message"], a["end"]) for a in alerts)
        media = None
        if not self._src.remote:  # images are not read through the server (yet)
            self._media_seen, media = media_items(
                self._store, self._rid, self._media_seen, self._media_cache
            )
        with self.hold_sync():
            if media is not None:
                self.media = media
                changed = True
            if series is not None:
                self.series = series
            self.telemetry = telemetry_items(sample)
            if thermal is not None and thermal == thermal:
                self.thermal = THERMAL_STATES[int(thermal)]
            if sig != self._alert_sig:
                self._alert_sig = sig
                self.alerts = alerts
                changed = True
            self.updates += 1
        return changed

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            c0 = time.thread_time()
            try:
                status = self._run_status()
            except Exception:
                status = "running"  # a server away for a moment: look again next frame
            try:
                self.refresh()
            except Exception:
                pass  # a missed frame is fine; the next one catches up
            if status != "running":
                self.status = status
                self._freeze()
                return
            # Adaptive throttle: the follower competes with the training loop for the GIL,
            # so it never takes more than DUTY of one core, whatever the series length.
            cost = time.thread_time() - c0
            self.cpu_s += cost
            wait = max(self._interval, cost / DUTY)
            self._stop.wait(max(0.0, wait - (time.monotonic() - t0)))

    def start(self) -> LiveMonitor:
        """Follow the run until it ends (a background thread)."""
        if self._thread is None:
            if self._run is not None and self._run.status == "running":
                self._run.on_end(self._on_run_end)
            self._thread = threading.Thread(target=self._loop, name="mlops-live", daemon=True)
            self._thread.start()
        return self

    def _on_run_end(self, run: Any, status: str) -> None:
        # Draw the final state in the thread that ends the run, so it is sent while the
        # cell is still executing (a follower frame arriving after the cell finished would
        # be missed by tools that stop listening then, e.g. nbclient).
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        try:
            run.flush()
            from ..media import flush_media

            flush_media(timeout=2.0)  # images logged just before the end are shown too
            self.refresh()
        except Exception:
            pass
        self.status = status
        self._freeze()

    def stop(self) -> None:
        """Stop following (the widget keeps what it shows)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the follower has drawn the run's final state."""
        if self._thread is not None:
            self._thread.join(timeout)


class TelemetryPanel(_Base):
    """Live telemetry without a run: the strip, thermal badge and rolling charts of CPU,
    memory and GPU readings (one sample per `interval` seconds, `history` kept)."""

    KEYS = ("sys/cpu/percent", "sys/mem/percent", "sys/cpu/temp_c")

    def __init__(self, interval: float = 1.0, history: int = 300, **kw: Any) -> None:
        super().__init__(mode="telemetry", title="Telemetry", status="live", **kw)
        self._interval = max(0.1, float(interval))
        self._history = history
        self._hist: dict[str, list[float | None]] = {}
        self._i = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlops-telemetry-panel")
        self._thread.daemon = True

    def sample_once(self) -> None:
        from .. import telemetry

        snap = telemetry.snapshot()
        sample = {k: v for k, v in snap.items() if k.startswith("sys/")}
        keys = list(self.KEYS) + sorted(
            k
            for k in sample
            if k.startswith("sys/gpu") and k.endswith(("/util_percent", "/temp_c"))
        )
        for k in keys:
            if k in sample:
                h = self._hist.setdefault(k, [])
                h.append(sample[k])
                del h[: -self._history]
        with self.hold_sync():
            self.series = {
                k: {
                    "x": list(range(self._i + 1 - len(h), self._i + 1)),
                    "y": h,
                    "n": len(h),
                    "last": h[-1],
                    "min": min(h),
                    "max": max(h),
                }
                for k, h in self._hist.items()
            }
            self.telemetry = telemetry_items(sample)
            self.thermal = snap["thermal_state"]
            self.updates += 1
        self._i += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:
                pass
            self._stop.wait(self._interval)
        self.status = "stopped"
        self._freeze()

    def start(self) -> TelemetryPanel:
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (the panel keeps its last readings)."""
        self._stop.set()

    def close(self) -> None:
        self.stop()
        super().close()
