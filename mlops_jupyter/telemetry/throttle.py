"""Throttling episodes from telemetry samples: thermal state >= serious, NVML thermal/power
throttle flags, and CPU frequency collapse under load. Pure logic (no store, no threads)
so it can be tested with synthetic readings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .sources import THERMAL_STATES

# CPU frequency "collapse": below this fraction of the highest frequency seen while the
# CPU is busier than LOAD_PERCENT, for COLLAPSE_SAMPLES samples in a row.
COLLAPSE_FRACTION = 0.6
LOAD_PERCENT = 50.0
COLLAPSE_SAMPLES = 2


@dataclass
class Episode:
    """An open or closed condition with a start and (once over) an end time."""

    key: str
    message: str
    start: float
    level: str = "warning"
    data: dict[str, Any] = field(default_factory=dict)
    end: float | None = None
    event_id: int | None = None  # row in run_events once stored


class Episodes:
    """Edge detection over named conditions: `update({key: (message, data)}, now)` returns
    the episodes that started and those that ended since the previous update."""

    def __init__(self) -> None:
        self.open: dict[str, Episode] = {}

    def update(
        self, active: dict[str, tuple[str, dict[str, Any]]], now: float, level: str = "warning"
    ) -> tuple[list[Episode], list[Episode]]:
        started, ended = [], []
        for key, (msg, data) in active.items():
            ep = self.open.get(key)
            if ep is None:
                ep = self.open[key] = Episode(key, msg, now, level, dict(data))
                started.append(ep)
            else:
                ep.data.update(_peaks(ep.data, data))
        for key in [k for k in self.open if k not in active]:
            ep = self.open.pop(key)
            ep.end = now
            ended.append(ep)
        return started, ended

    def close_all(self, now: float) -> list[Episode]:
        """End every open episode (the run is over)."""
        return self.update({}, now)[1]


def _peaks(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    # keep the worst value seen during the episode, so the event says how bad it got
    out = {}
    for k, v in new.items():
        if k.startswith("peak_") and isinstance(v, (int, float)):
            o = old.get(k)
            out[k] = max(o, v) if isinstance(o, (int, float)) else v
    return out


class ThrottleDetector:
    """Turns samples into throttling episodes (see module docstring)."""

    def __init__(self) -> None:
        self.episodes = Episodes()
        self.max_freq = 0.0
        self._low_freq = 0

    def conditions(self, s: dict[str, float]) -> dict[str, tuple[str, dict[str, Any]]]:
        """The throttling conditions present in one sample."""
        active: dict[str, tuple[str, dict[str, Any]]] = {}
        state = s.get("sys/thermal_state")
        if state is not None and state >= 2:
            name = THERMAL_STATES[int(state)]
            active["thermal_state"] = (
                f"thermal state {name}",
                {"cause": "thermal_state", "peak_state": int(state)},
            )
        for k, v in s.items():
            if not v or not k.startswith("sys/gpu"):
                continue
            for kind in ("thermal", "power"):
                if k.endswith(f"/throttle_{kind}"):
                    dev = k.split("/")[1]  # gpu0
                    temp = s.get(f"sys/{dev}/temp_c")
                    data: dict[str, Any] = {"cause": f"gpu_{kind}", "device": dev}
                    if temp is not None:
                        data["peak_temp_c"] = temp
                    active[f"{dev}_{kind}"] = (f"{dev.upper()} {kind} throttling", data)
        freq = s.get("sys/cpu/freq_mhz")
        load = s.get("sys/cpu/percent")
        if freq:
            self.max_freq = max(self.max_freq, freq)
            if (
                load is not None
                and load >= LOAD_PERCENT
                and freq < COLLAPSE_FRACTION * self.max_freq
            ):
                self._low_freq += 1
            else:
                self._low_freq = 0
            if self._low_freq >= COLLAPSE_SAMPLES:
                active["cpu_freq"] = (
                    f"CPU frequency collapsed to {freq:.0f} MHz under load "
                    f"(max seen {self.max_freq:.0f} MHz)",
                    {"cause": "cpu_freq", "freq_mhz": freq, "max_freq_mhz": self.max_freq},
                )
        return active

    def update(self, s: dict[str, float], now: float) -> tuple[list[Episode], list[Episode]]:
        """Feed one sample; return (started, ended) episodes."""
        return self.episodes.update(self.conditions(s), now)
