"""`mlops-jupyter watch --config loop.toml [--once] [--interval S]`: poll the signals of
each rule and run its chain once per signal; `mlops-jupyter approve NAME --version V
[--reject] [--reason TEXT]` decides a chain waiting for approval (docs/loop.md)."""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..store import loop_state
from .actions import newest_version, ready, run_chain
from .triggers import load_config, signals

__all__ = ["poll", "watch"]


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def poll(config: str | Path | dict[str, Any], now: float | None = None) -> list[dict]:
    """One pass over the rules of `config` (a watch config file, or load_config's dict):
    new signals are claimed (once, whichever watcher gets there first) and their chains
    run; chains waiting for an approval that was decided continue. Returns what happened:
    [{"rule", "signal", "state"}]."""
    from ..tracking.api import current_store

    cfg = config if isinstance(config, dict) else load_config(config)
    store = current_store()
    owner = _owner()
    out = []
    for rule in cfg["rules"]:
        for w in loop_state.signals(store, rule.name, "waiting"):
            if not ready(store, rule, w["detail"]):
                continue  # still undecided or ramping: nothing to do (notified once)
            detail = loop_state.resume(store, rule.name, w["signal"], owner)
            if detail is not None:
                state = run_chain(store, rule, w["signal"], detail, cfg["channels"])
                out.append({"rule": rule.name, "signal": w["signal"], "state": state})
        for key, info in signals(store, rule, now):
            detail = {"step": 0, "info": info, "before": newest_version(store, rule.model)}
            if not loop_state.claim(store, rule.name, key, detail, owner):
                continue  # handled before, here or by another watcher
            state = run_chain(store, rule, key, detail, cfg["channels"])
            out.append({"rule": rule.name, "signal": key, "state": state})
    return out


def watch(config: str | Path, interval: float = 60.0, once: bool = False) -> None:
    """Poll every `interval` seconds until interrupted (or one pass with `once`)."""
    cfg = load_config(config)
    while True:
        started = time.monotonic()
        for r in poll(cfg):
            print(f"{r['rule']}: {r['signal']} -> {r['state']}", flush=True)
        if once:
            return
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def cmd_watch(args) -> int:
    if args.interval <= 0:
        raise InvalidInputError(f"--interval must be positive, got {args.interval}")
    try:
        watch(args.config, args.interval, args.once)
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_approve(args) -> int:
    from .approve import approve

    d = approve(args.name, int(args.version), reject=args.reject, reason=args.reason)
    print(f"{args.name} v{args.version}: {d.get('decision')}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `watch` and `approve`."""
    w = sub.add_parser(
        "watch", help="turn signals (drift, decay, new data, schedule) into retrain/gate/promote"
    )
    w.add_argument("--config", required=True, help="watch config (TOML with [[rule]] tables)")
    w.add_argument("--once", action="store_true", help="one pass, then exit (cron, Airflow)")
    w.add_argument("--interval", type=float, default=60.0, help="seconds between polls (60)")
    w.set_defaults(func=cmd_watch)
    a = sub.add_parser("approve", help="approve (or --reject) a version a watcher waits on")
    a.add_argument("name", help="registered model name")
    a.add_argument("--version", required=True, help="the version to approve")
    a.add_argument("--reject", action="store_true", help="reject it: the chain stops")
    a.add_argument("--reason", help="why (kept in the audit log)")
    a.set_defaults(func=cmd_approve)
