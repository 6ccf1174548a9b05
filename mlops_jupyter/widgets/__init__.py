"""Notebook front ends: the live run monitor, the telemetry panel, run comparison and rich
reprs. anywidget ES modules ship in `static/` (no CDN: they work offline).

    mj.live()                    # follow the active run (charts, telemetry, alerts)
    mj.compare(mj.runs().head(3), metric="loss")
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError
from .compare import Comparison, compare
from .reprs import run_html

__all__ = ["Comparison", "compare", "live", "run_html", "telemetry_panel"]


def live(
    run: Any = None,
    display: bool = True,
    rate: float = 4.0,
    keys: list[str] | None = None,
    buckets: int = 500,
) -> Any:
    """Live monitor of a run: line charts of its metrics updating while it runs, a
    telemetry strip with the thermal state, and its alerts; the final state stays after
    the run ends.

    `run`: a Run, a run id or name, or None for the active run (else the latest run in the
    store). `rate`: updates per second (at most 10). `keys`: metrics to chart (default all
    but `sys/...`). `buckets`: each series is decimated to about 2*buckets points."""
    from ..store import runs as rstore
    from ..store import telemetry as tstore
    from ..tracking import api
    from ..tracking.run import Run
    from .monitor import LiveMonitor

    if not isinstance(rate, (int, float)) or rate <= 0:
        raise InvalidInputError(
            f"rate must be a positive number of updates per second, got {rate!r}"
        )
    if keys is not None and (
        isinstance(keys, str) or not all(isinstance(k, str) and k for k in keys)
    ):
        raise InvalidInputError("keys must be a list of metric names")
    if run is None:
        run = api.active_run()
    source = None
    if isinstance(run, Run):
        remote = type(run.store).__name__ == "RemoteStore"
    else:
        remote = api.remote_url() is not None
        if remote:
            run = _remote_run_id(api.remote_url(), run)
    if remote:
        # over a tracking server: the monitor reads through its read routes
        from ..remote.api import remote_store
        from ..remote.live import RemoteSource

        obj = run if isinstance(run, Run) else None
        store = obj.store if obj is not None else remote_store(api.remote_url())
        source, rid = RemoteSource(store, obj.id if obj is not None else run), None
    elif isinstance(run, Run):
        store, rid, obj = run.store, run.store_id, run
    else:
        store = api._read_store()
        if run is None:
            run = tstore.latest_run(store)
            if run is None:
                raise InvalidInputError("no run to show: start one with mj.start_run() first")
        rid, obj = rstore.resolve_run(store, run), None
    w = LiveMonitor(store, rid, obj, rate=rate, buckets=buckets, keys=keys, source=source)
    follow = (obj.status if obj is not None else w.status) == "running"
    if follow:
        w.start()
    else:
        w.refresh()  # a finished run: draw it once, nothing to follow
    if display:
        w.show()
        if not follow:
            w._freeze()  # add the static copy right away
    return w


def _remote_run_id(url: str, ref: Any) -> str:
    """The id of run `ref` on the tracking server at `url`; for None its newest running
    run, else its newest run (as locally)."""
    from ..remote import api as remote

    if ref is None:
        df = remote.runs(url, None, None, False)
        if df.is_empty():
            raise InvalidInputError("no run to show: start one with mj.start_run() first")
        df = df.sort(["start_time"], descending=True)
        running = df.filter(df["status"] == "running")
        return str((running if not running.is_empty() else df)["id"][0])
    return str(remote.get_run(url, ref)["id"])


def telemetry_panel(interval: float = 1.0, display: bool = True) -> Any:
    """A live telemetry panel without a run (CPU, memory, temperatures, GPUs); call
    `.stop()` on it (or close it) to stop sampling."""
    from .monitor import TelemetryPanel

    if not isinstance(interval, (int, float)) or interval <= 0:
        raise InvalidInputError(f"interval must be a positive number of seconds, got {interval!r}")
    p = TelemetryPanel(interval=interval)
    p.sample_once()
    p.start()
    if display:
        p.show()
    return p
