"""The watcher's config (a TOML file of [[rule]] tables) and its signals: a drift alert on
a model's served inputs, a metric decay in a run's logged feedback metric, a new version of
a named dataset, or a schedule. Each signal has a key, so it is handled once."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

SIGNALS = ("drift", "metric_decay", "new_data", "schedule")
STEPS = ("retrain", "register", "gate", "canary", "promote")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: Any) -> float:
    """Seconds in `every` ("30s", "5m", "1h", "1d", or a number of seconds)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text > 0:
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise InvalidInputError(f"every must look like 30s, 5m, 1h or 1d, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class Rule:
    """One [[rule]] of the config: when `on` fires, run the steps `do` for `model`."""

    name: str
    on: str
    model: str
    do: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    retrain: list[str] | None = None
    gate_rules: str | None = None
    gate_data: str | None = None
    approval: bool = False


def _rule(i: int, t: dict[str, Any], base: Path) -> Rule:
    where = f"rule {i + 1}"
    t = dict(t)
    name = t.pop("name", f"rule{i + 1}")
    on = t.pop("on", None)
    if on not in SIGNALS:
        raise InvalidInputError(f"{where}: on must be one of {', '.join(SIGNALS)}, got {on!r}")
    model = t.pop("model", None)
    if not isinstance(model, str) or not model:
        raise InvalidInputError(f"{where} ({name}): model = NAME is required")
    do = t.pop("do", ["retrain", "register", "gate", "promote"])
    if isinstance(do, str):
        do = [do]
    bad = [s for s in do if s not in STEPS]
    if not do or bad:
        raise InvalidInputError(f"{where} ({name}): do must list steps of {', '.join(STEPS)}")
    retrain = t.pop("retrain", None)
    if isinstance(retrain, str):
        import shlex

        retrain = shlex.split(retrain)
    if "retrain" in do and not retrain:
        raise InvalidInputError(f"{where} ({name}): the retrain step needs retrain = [argv...]")
    gate_rules = t.pop("gate_rules", None)
    gate_data = t.pop("gate_data", None)
    if "gate" in do and not gate_data:
        raise InvalidInputError(f"{where} ({name}): the gate step needs gate_data = FILE")
    approval = t.pop("approval", False)
    if not isinstance(approval, bool):
        raise InvalidInputError(f"{where} ({name}): approval must be true or false")
    need = {
        "drift": (),
        "new_data": ("dataset",),
        "schedule": ("every",),
        "metric_decay": ("metric", "threshold"),
    }[on]
    missing = [k for k in need if k not in t]
    if missing:
        raise InvalidInputError(f"{where} ({name}): on = {on!r} needs {', '.join(missing)}")
    if on == "schedule":
        t["every"] = parse_every(t["every"])
    if "canary_rules" in t:
        t["canary_rules"] = _canary_rules(t["canary_rules"], f"{where} ({name})")
    store_url = t.get("retrain_store")
    if store_url is not None and (not isinstance(store_url, str) or not store_url.strip()):
        raise InvalidInputError(f"{where} ({name}): retrain_store must be a store location")

    def rel(p: str | None) -> str | None:
        # paths in the config are relative to the config file, not the watcher's cwd
        if p is None or "://" in p or Path(p).is_absolute() or not (base / p).exists():
            return p
        return str(base / p)

    return Rule(name, on, model, list(do), t, retrain, rel(gate_rules), rel(gate_data), approval)


def _canary_rules(table: Any, where: str) -> dict[str, Any]:
    """The canary step's checks (`canary_rules = {min_requests = 20, ...}`): names and
    values of serving.canary.Rules, checked here so a typo fails at load, not mid-chain."""
    from dataclasses import fields

    from ..serving.canary import Rules

    known = {f.name: f.type for f in fields(Rules)}
    if not isinstance(table, dict):
        raise InvalidInputError(f"{where}: canary_rules must be a table")
    bad = sorted(set(table) - set(known))
    if bad:
        raise InvalidInputError(
            f"{where}: unknown canary_rules {', '.join(bad)} (known: {', '.join(known)})"
        )
    for k, v in table.items():
        kinds = {"bool": (bool,), "int": (int,), "float": (int, float)}[str(known[k])]
        number = not isinstance(v, bool) and isinstance(v, kinds) and v >= 0
        if not (isinstance(v, bool) if known[k] == "bool" else number):
            raise InvalidInputError(f"{where}: canary_rules.{k} = {v!r} is not a valid value")
    return dict(table)


def load_config(path: str | Path) -> dict[str, Any]:
    """{"rules": [Rule], "channels": [notification channels]} from a watch config."""
    from .notify import _from_table, read_toml

    p = Path(path).expanduser()
    cfg = read_toml(p, "watch config")
    tables = cfg.get("rule", [])
    if not isinstance(tables, list) or not tables:
        raise InvalidInputError(f"watch config {p}: no [[rule]] tables")
    rules = [_rule(i, t, p.parent) for i, t in enumerate(tables)]
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"watch config {p}: rule names must differ, got {names}")
    channels = [_from_table(k, t) for k in ("webhook", "email", "command") for t in cfg.get(k, [])]
    # lease: seconds without a heartbeat before another watcher takes a running signal
    # back (checked by loop/watch.py)
    return {"rules": rules, "channels": channels or None, "lease": cfg.get("lease")}


def signals(store: Any, rule: Rule, now: float | None = None) -> list[tuple[str, dict]]:
    """The rule's current signal, as [(key, info)] (empty when nothing fires). Only the
    newest occurrence counts: a watcher that was down does not replay a backlog."""
    now = time.time() if now is None else now
    p = rule.params
    if rule.on == "schedule":
        slot = int(now // p["every"])
        return [(f"schedule:{slot}", {"slot_start": slot * p["every"]})]
    if rule.on == "new_data":
        from ..remote import loop_watch as lw

        rows = lw.data_versions(store, p["dataset"], 1)
        if not rows:
            return []
        d = rows[0]
        return [(f"data:{d['id']}", {"data_version": d["id"], "data_path": d["source"]})]
    if rule.on == "drift":
        return _drift(store, rule)
    return _decay(store, rule)


def _drift(store: Any, rule: Rule) -> list[tuple[str, dict]]:
    """drift: the newest drift alert on the production version's inputs, from windows
    since its promotion (any version's when there is no production version). Alerts on a
    canary's windows are the canary controller's to act on. A drifted version fires once:
    its later windows drift too (as the control of a canary, or when its retrained
    candidate failed), and each would otherwise start one more retraining."""
    from ..remote import loop_watch as lw  # a direct store, or the tracking server

    prod = [
        r["version"] for r in lw.model_versions(store, rule.model) if r["stage"] == "production"
    ]
    since = 0.0
    if prod:
        # the newest promotion of that version to production (audit rows: ts, .., version,
        # action, from, to, ...)
        promoted = [
            r[0]
            for r in lw.audit_log(store, rule.model)
            if r[2] == prod[0] and r[3] == "transition" and r[5] == "production"
        ]
        since = max(promoted, default=0.0)
    alerts = [
        a
        for a in lw.drift_alerts(store, rule.model)
        if (not prod or a["version"] in prod) and a["window_start"] >= since
    ]
    if not alerts:
        return []
    a = alerts[0]
    handled = lw.signals(store, rule.name)
    if any(s["signal"].startswith(f"drift:{a['version']}:") for s in handled):
        return []
    key = f"drift:{a['version']}:{a['variant']}:{a['window_start']:.0f}"
    return [(key, {"alert": a})]


def _decay(store: Any, rule: Rule) -> list[tuple[str, dict]]:
    """metric_decay: the last value of `metric` in the newest run of `experiment`
    (default "feedback") below `threshold` (above it with higher_is_better = false)."""
    from ..remote import loop_watch as lw

    p = rule.params
    frame = lw.runs_frame(store, p.get("experiment", "feedback"))
    col = f"metrics.{p['metric']}.last"
    if frame.is_empty() or col not in frame.columns:
        return []
    row = frame.row(0, named=True)  # newest first
    value = row[col]
    if value is None:
        return []
    higher = p.get("higher_is_better", True)
    decayed = value < p["threshold"] if higher else value > p["threshold"]
    if not decayed:
        return []
    key = f"decay:{row['id']}:{value:.6g}"
    return [(key, {"run": row["id"], "metric": p["metric"], "value": value})]
