"""Background telemetry sampling for active runs.

`attach(run)` is called for every new run (tracking START_HOOKS). One daemon thread per
process samples every source once per interval and hands the same sample to every
attached run: it is logged as `sys/...` metrics (through the run's buffered writer),
fed to throttle detection and to the alert rules, whose episodes become run events.
The thread stops when no run has been attached for IDLE_KEEP_S seconds.

Settings: MLOPS_JUPYTER_TELEMETRY=0 disables sampling; MLOPS_JUPYTER_TELEMETRY_INTERVAL
sets the interval in seconds (default 1).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..store import telemetry as tstore
from ..store.runs import add_event
from .alerts import AlertEngine, NonFiniteRule, RisingRule, level_of, rules
from .sources import Sources
from .throttle import Episode, Episodes, ThrottleDetector

DEFAULT_INTERVAL = 1.0
MIN_INTERVAL = 0.05
IDLE_KEEP_S = 30.0  # how long the sampling thread waits for the next run before it stops
FIRST_SAMPLE_DELAY_S = 0.1


def enabled() -> bool:
    """False when MLOPS_JUPYTER_TELEMETRY is 0/false/off/no."""
    v = os.environ.get("MLOPS_JUPYTER_TELEMETRY", "1").strip().lower()
    return v not in ("0", "false", "off", "no")


def interval() -> float:
    """Sampling interval in seconds (MLOPS_JUPYTER_TELEMETRY_INTERVAL, default 1)."""
    raw = os.environ.get("MLOPS_JUPYTER_TELEMETRY_INTERVAL", "")
    try:
        v = float(raw) if raw.strip() else DEFAULT_INTERVAL
    except ValueError:
        warnings.warn(
            f"MLOPS_JUPYTER_TELEMETRY_INTERVAL={raw!r} is not a number; using 1 s",
            RuntimeWarning,
            stacklevel=2,
        )
        v = DEFAULT_INTERVAL
    return max(MIN_INTERVAL, v)


@dataclass
class _RunState:
    run: Any
    throttle: ThrottleDetector = field(default_factory=ThrottleDetector)
    engine: AlertEngine = field(default_factory=AlertEngine)
    alerts: Episodes = field(default_factory=Episodes)
    have: dict[str, int] = field(default_factory=dict)  # points seen per user metric
    lock: threading.Lock = field(default_factory=threading.Lock)
    samples: int = 0
    remote_src: Any = None  # remote/live.RemoteSource of a run logged through a server


class Hub:
    """The process-wide sampler (one thread for every attached run)."""

    def __init__(self) -> None:
        self.states: dict[int, _RunState] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.interval = DEFAULT_INTERVAL
        self.sources: Sources | None = None
        self._root: Any = None
        self.latest: tuple[float, dict[str, float]] | None = None
        self.tick_cpu_s = 0.0  # CPU time of the sampling thread, for the benchmark
        self.ticks = 0
        self._warned: set[str] = set()

    # -- runs --------------------------------------------------------------------------
    def add(self, run: Any, thread: bool = True) -> _RunState:
        """Track `run` until it ends; `thread=False` only registers it (samples are then
        fed with `process`, as tests with synthetic readings do)."""
        st = _RunState(run)
        with self.lock:
            self.interval = interval()
            was_idle = not self.states
            self.states[id(run)] = st
            if was_idle:
                self.wake.set()  # an idle thread waits for runs: wake it
            # Starting a run must stay cheap (<1 ms): the thread builds its sources itself,
            # and it outlives the last run for IDLE_KEEP_S so back-to-back runs reuse it.
            if thread and (self.thread is None or not self.thread.is_alive()):
                self.thread = threading.Thread(
                    target=self._loop, name="mlops-telemetry", daemon=True
                )
                self.thread.start()
        run.on_end(self._on_end)
        return st

    def _on_end(self, run: Any, status: str) -> None:
        with self.lock:
            st = self.states.pop(id(run), None)
            if not self.states:
                self.wake.set()
        if st is None:
            return
        with st.lock:
            try:
                # last look at the metrics logged since the previous tick
                run.flush()
                self._check_metrics(st, time.time())
            except Exception as e:
                self._warn("alerts", e)
            now = time.time()
            for ep in st.throttle.episodes.close_all(now) + st.alerts.close_all(now):
                self._close(st, ep)

    def states_for(self, run: Any) -> _RunState | None:
        return self.states.get(id(run))

    # -- the thread --------------------------------------------------------------------
    def _loop(self) -> None:
        idle_since: float | None = None
        while True:
            t0 = time.monotonic()
            c0 = time.thread_time()
            with self.lock:
                states = list(self.states.values())
                if not states:
                    idle_since = idle_since or t0
                    if t0 - idle_since >= IDLE_KEEP_S:
                        self.thread = None
                        self.sources = None
                        return
            if not states:
                if self.wake.wait(IDLE_KEEP_S):
                    self.wake.clear()
                    # first sample shortly after the run starts, not during its start-up
                    time.sleep(min(self.interval, FIRST_SAMPLE_DELAY_S))
                continue
            idle_since = None
            root = states[0].run.store.root
            if self.sources is None or self._root != root:
                try:
                    self.sources, self._root = Sources(root), root
                except Exception as e:
                    self._warn("sources", e)
                    self.wake.wait(self.interval)
                    continue
            try:
                self.tick(states)
            except Exception as e:  # the sampler must never die silently mid-run
                self._warn("sampler", e)
            self.tick_cpu_s += time.thread_time() - c0
            self.ticks += 1
            self.wake.wait(max(0.0, self.interval - (time.monotonic() - t0)))
            self.wake.clear()

    def tick(self, states: list[_RunState]) -> dict[str, float]:
        """Take one sample and process it for every attached run."""
        assert self.sources is not None
        sample = self.sources.sample()
        for name, err in self.sources.failed.items():
            self._warn(name, err)
        self.process(states, sample, time.time())
        return sample

    def process(self, states: list[_RunState], sample: dict[str, float], now: float) -> None:
        """Log one sample to each run, then update its throttle episodes and alerts."""
        self.latest = (now, sample)
        rule_set = rules()
        for st in states:
            with st.lock:
                if st.run.status != "running":
                    continue
                try:
                    st.run.log(None, **sample)
                    st.samples += 1
                except Exception as e:
                    self._warn("log", e)
                    continue
                started, ended = st.throttle.update(sample, now)
                for ep in started:
                    self._open(st, ep, "throttle")
                for ep in ended:
                    self._close(st, ep)
                self._check_metrics(st, now, sample, rule_set)

    def _check_metrics(
        self,
        st: _RunState,
        now: float,
        sample: dict[str, float] | None = None,
        rule_set: list | None = None,
    ) -> None:
        rule_set = rules() if rule_set is None else rule_set
        conds = st.engine.sample_conditions(sample, rule_set) if sample else {}
        if sample is None:
            # at run end keep telemetry alerts that are still open
            conds.update({k: (ep.message, ep.data) for k, ep in st.alerts.open.items()})
        if any(isinstance(r, (NonFiniteRule, RisingRule)) for r in rule_set):
            new = _new_points(st)
            for k, (n, _s, _v) in new.items():
                st.have[k] = n
            conds.update(st.engine.metric_conditions(new, rule_set))
        started, ended = st.alerts.update(conds, now)
        for ep in started:
            ep.level = level_of(ep.key, rule_set)
            ep.data["rule"] = ep.key.split(":", 1)[0]
            self._open(st, ep, "alert")
        for ep in ended:
            self._close(st, ep)

    # -- events ------------------------------------------------------------------------
    def _open(self, st: _RunState, ep: Episode, kind: str) -> None:
        try:
            if _remote(st.run):  # through the server (remote/files.py), after the run's points
                ep.event_id = st.run.add_event(kind, ep.message, ep.level, ep.data, ep.start)
                return
            ep.event_id = add_event(
                st.run.store, st.run.store_id, kind, ep.message, ep.level, ep.data, ep.start
            )
        except Exception as e:
            self._warn("events", e)

    def _close(self, st: _RunState, ep: Episode) -> None:
        if ep.event_id is None:
            return
        try:
            if _remote(st.run):
                from ..remote import data as rdata

                # a short retry: episodes close at the run's end, which must not hang
                rdata.close_event(st.run, ep.event_id, ep.end or time.time(), ep.data, 2.0)
                return
            tstore.close_event(st.run.store, ep.event_id, ep.end or time.time(), ep.data)
        except Exception as e:
            self._warn("events", e)

    def _warn(self, what: str, err: Any) -> None:
        if what in self._warned:
            return
        self._warned.add(what)
        warnings.warn(
            f"mlops-jupyter telemetry: {what} failed ({err}); the other sources carry on",
            RuntimeWarning,
            stacklevel=2,
        )


def _remote(run: Any) -> bool:
    """Whether `run` is logged through a tracking server (its events go there)."""
    return type(run.store).__name__ == "RemoteStore"


def _new_points(st: _RunState) -> dict[str, tuple[int, Any, Any]]:
    """The user metrics' points logged since the last look: from the store, or over a
    tracking server through its read routes (only the grown series, from their last step)."""
    if not _remote(st.run):
        return tstore.new_points(st.run.store, st.run.store_id, st.have)
    if st.remote_src is None:
        from ..remote.live import RemoteSource

        st.remote_src = RemoteSource(st.run.store, st.run.id)
    try:
        return st.remote_src.new_points(st.have)
    except Exception as e:  # the server away: no metric alerts this tick, the rest goes on
        hub()._warn("metric alerts", e)
        return {}


_hub = Hub()


def hub() -> Hub:
    """The process-wide sampler."""
    return _hub


def attach(run: Any) -> None:
    """Start sampling telemetry for `run` until it ends (a tracking start hook)."""
    if not enabled():
        return
    _hub.add(run)


def latest(max_age: float | None = None) -> dict[str, float] | None:
    """The most recent sample taken for any run (None if none, or older than max_age s)."""
    lt = _hub.latest
    if lt is None or (max_age is not None and time.time() - lt[0] > max_age):
        return None
    return lt[1]


def _after_fork() -> None:
    # the sampling thread does not exist in a forked child
    global _hub
    _hub = Hub()


os.register_at_fork(after_in_child=_after_fork)
