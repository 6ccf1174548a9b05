"""Andon alerts: rules over telemetry samples and logged metrics, stored as run events.

Defaults: GPU temperature > 85 C, memory > 90 %, disk < 5 % free, a logged metric becoming
NaN/inf, a `*loss` metric rising for 10 consecutive logs. Alerts are episodes: one event
when a condition starts (kind="alert"), its end time set when it clears.

Rules are evaluated in the telemetry sampler thread (from samples and from points already
in the store), never inside `mj.log`, so logging stays as cheap as without alerts.
"""

from __future__ import annotations

import fnmatch
import json
import operator
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import polars as pl

from ..errors import InvalidInputError

LEVELS = ("info", "warning", "critical")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass
class ThresholdRule:
    """Fires while a telemetry reading (keys matching `key`, a glob) crosses `threshold`."""

    name: str
    key: str
    op: str
    threshold: float
    level: str = "warning"
    message: str = "{key} = {value:.1f} ({op} {threshold:g})"

    def __post_init__(self) -> None:
        _check_common(self.name, self.level)
        if self.op not in _OPS:
            raise InvalidInputError(f"rule {self.name!r}: op must be one of {sorted(_OPS)}")
        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool):
            raise InvalidInputError(f"rule {self.name!r}: threshold must be a number")

    def check(self, sample: dict[str, float]) -> dict[str, tuple[str, dict[str, Any]]]:
        fn = _OPS[self.op]
        out = {}
        for k, v in sample.items():
            if fnmatch.fnmatchcase(k, self.key) and v == v and fn(v, self.threshold):
                msg = self.message.format(key=k, value=v, op=self.op, threshold=self.threshold)
                out[f"{self.name}:{k}"] = (msg, {"key": k, "value": v, "peak_value": v})
        return out


@dataclass
class NonFiniteRule:
    """Fires when a logged metric (keys matching `keys`) gets a NaN or infinite value."""

    name: str = "nonfinite"
    keys: str = "*"
    level: str = "critical"

    def __post_init__(self) -> None:
        _check_common(self.name, self.level)


@dataclass
class RisingRule:
    """Fires when a logged metric (keys matching `keys`) rises for `n` logs in a row."""

    name: str = "loss_rising"
    keys: str = "*loss"
    n: int = 10
    level: str = "warning"

    def __post_init__(self) -> None:
        _check_common(self.name, self.level)
        if not isinstance(self.n, int) or self.n < 2:
            raise InvalidInputError(f"rule {self.name!r}: n must be an integer >= 2")


@dataclass
class CallableRule:
    """A custom rule: `fn(sample) -> message or None`, called with every telemetry sample
    (a dict of `sys/...` readings)."""

    name: str
    fn: Callable[[dict[str, float]], str | None]
    level: str = "warning"

    def __post_init__(self) -> None:
        _check_common(self.name, self.level)
        if not callable(self.fn):
            raise InvalidInputError(f"rule {self.name!r}: fn must be callable")

    def check(self, sample: dict[str, float]) -> dict[str, tuple[str, dict[str, Any]]]:
        msg = self.fn(sample)
        return {self.name: (str(msg), {})} if msg else {}


Rule = ThresholdRule | NonFiniteRule | RisingRule | CallableRule


def _check_common(name: Any, level: Any) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidInputError("a rule needs a non-empty string name")
    if level not in LEVELS:
        raise InvalidInputError(f"rule {name!r}: level must be one of {LEVELS}, got {level!r}")


def default_rules(
    gpu_temp_c: float = 85.0,
    memory_percent: float = 90.0,
    disk_free_percent: float = 5.0,
    loss_rising_n: int = 10,
) -> list[Rule]:
    """The default rule set, with its thresholds adjustable."""
    return [
        ThresholdRule(
            "gpu_temp", "sys/gpu*/temp_c", ">", gpu_temp_c, "warning",
            "GPU temperature {value:.0f} C > {threshold:g} C ({key})",
        ),
        ThresholdRule(
            "memory", "sys/mem/percent", ">", memory_percent, "warning",
            "memory {value:.0f} % used > {threshold:g} %",
        ),
        ThresholdRule(
            "disk", "sys/disk/free_percent", "<", disk_free_percent, "critical",
            "disk {value:.1f} % free < {threshold:g} %",
        ),
        NonFiniteRule(),
        RisingRule(n=loss_rising_n),
    ]  # fmt: skip


_rules: list[Rule] = default_rules()
_rules_lock = threading.Lock()


def rules() -> list[Rule]:
    """The rules in force (a copy)."""
    with _rules_lock:
        return list(_rules)


def set_rules(new: Iterable[Rule]) -> None:
    """Replace every rule (e.g. `set_rules(default_rules(memory_percent=95))`)."""
    new = list(new)
    for r in new:
        if not isinstance(r, (ThresholdRule, NonFiniteRule, RisingRule, CallableRule)):
            raise InvalidInputError(f"not an alert rule: {r!r}")
    if len({r.name for r in new}) != len(new):
        raise InvalidInputError("rule names must be unique")
    with _rules_lock:
        _rules[:] = new


def add_rule(rule: Rule) -> None:
    """Add a rule (replacing one of the same name)."""
    set_rules([r for r in rules() if r.name != getattr(rule, "name", None)] + [rule])


def remove_rule(name: str) -> None:
    """Remove the rule called `name`."""
    cur = rules()
    if name not in {r.name for r in cur}:
        raise InvalidInputError(f"no alert rule named {name!r}; have {[r.name for r in cur]}")
    set_rules([r for r in cur if r.name != name])


def configure(**thresholds: float) -> None:
    """Reset to the default rules with other thresholds: gpu_temp_c, memory_percent,
    disk_free_percent, loss_rising_n."""
    try:
        set_rules(default_rules(**thresholds))
    except TypeError as e:
        raise InvalidInputError(str(e)) from None


@dataclass
class _SeriesState:
    last: float | None = None
    rising: int = 0
    nonfinite: bool = False
    bad_step: int | None = None
    bad_value: float = float("nan")


@dataclass
class AlertEngine:
    """Per-run rule state: turns samples and newly logged points into active conditions."""

    series: dict[str, _SeriesState] = field(default_factory=dict)

    def metric_conditions(
        self, new: dict[str, tuple[int, np.ndarray, np.ndarray]], rule_set: list[Rule]
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """Feed newly logged points ({key: (total, steps, values)}); update series state."""
        nonfinite = [r for r in rule_set if isinstance(r, NonFiniteRule)]
        rising = [r for r in rule_set if isinstance(r, RisingRule)]
        for key, (_n, steps, vals) in new.items():
            st = self.series.setdefault(key, _SeriesState())
            if len(vals) == 0:
                continue
            bad = ~np.isfinite(vals)
            if bad.any():
                i = int(np.argmax(bad))
                st.nonfinite = True
                st.bad_step, st.bad_value = int(steps[i]), float(vals[i])
            elif np.isfinite(vals[-1]):
                st.nonfinite = False
            # count consecutive rises through the new points, carrying the previous tail
            seq = vals if st.last is None else np.concatenate(([st.last], vals))
            if len(seq) > 1:
                up = np.diff(seq) > 0
                if up.all():
                    st.rising += len(up)
                else:
                    st.rising = int(len(up) - 1 - np.flatnonzero(~up)[-1])
            st.last = float(vals[-1])
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, st in self.series.items():
            for r in nonfinite:
                if st.nonfinite and fnmatch.fnmatchcase(key, r.keys):
                    out[f"{r.name}:{key}"] = (
                        f"{key} became {st.bad_value} at step {st.bad_step}",
                        {"key": key, "value": str(st.bad_value), "step": st.bad_step},
                    )
            for r in rising:
                if st.rising >= r.n and fnmatch.fnmatchcase(key, r.keys):
                    out[f"{r.name}:{key}"] = (
                        f"{key} rose for {st.rising} consecutive logs",
                        {"key": key, "peak_logs": st.rising, "value": st.last},
                    )
        return out

    @staticmethod
    def sample_conditions(
        sample: dict[str, float], rule_set: list[Rule]
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for r in rule_set:
            if isinstance(r, (ThresholdRule, CallableRule)):
                try:
                    out.update(r.check(sample))
                except Exception as e:  # a broken custom rule must not stop the others
                    out[f"{r.name}:error"] = (f"rule {r.name} failed: {e}", {})
        return out


def level_of(condition_key: str, rule_set: list[Rule]) -> str:
    """The level of the rule that produced a condition key ("rule:subject")."""
    name = condition_key.split(":", 1)[0]
    for r in rule_set:
        if r.name == name:
            return r.level
    return "warning"


def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc)


def alerts(run: Any = None, include_throttle: bool = True) -> pl.DataFrame:
    """Alerts (and throttling episodes) stored with runs, newest first.

    `run`: a Run, a run id or name, a list of those, or None for every run. Columns:
    run_id, run_name, kind, rule, level, message, start_time, end_time, active, data."""
    from ..store import telemetry as tstore
    from ..tracking import api
    from ..tracking.api import resolve_run

    refs = None if run is None else list(run) if isinstance(run, (list, tuple)) else [run]
    if (url := api.remote_url()) is not None:  # the server lists them (remote/data_more.py)
        from ..remote import data_more as rmore
        from ..remote.api import remote_store

        rows = rmore.alert_rows(remote_store(url), refs, include_throttle)
    else:
        store = api._read_store()
        rids = None if refs is None else [resolve_run(r, store) for r in refs]
        kinds = ("alert", "throttle") if include_throttle else ("alert",)
        rows = tstore.list_events(store, rids, kinds)
    datas = [json.loads(r[8]) if r[8] else {} for r in rows]
    return pl.DataFrame(
        {
            "run_id": [r[1] for r in rows],
            "run_name": [r[2] for r in rows],
            "kind": [r[3] for r in rows],
            "rule": [d.get("rule") or d.get("cause") for d in datas],
            "level": [r[4] for r in rows],
            "message": [r[5] for r in rows],
            "start_time": pl.Series([_ts(r[6]) for r in rows], dtype=pl.Datetime("us", "UTC")),
            "end_time": pl.Series([_ts(r[7]) for r in rows], dtype=pl.Datetime("us", "UTC")),
            # an episode still open on a run that is no longer running ended with it
            "active": [r[7] is None and r[9] == "running" for r in rows],
            "data": [json.dumps(d) if d else None for d in datas],
        },
        schema_overrides={"rule": pl.String, "data": pl.String, "run_name": pl.String},
    )
