"""`mlops-jupyter watch --config loop.toml [--once] [--interval S]`: poll the signals of
each rule and run its chain once per signal; `mlops-jupyter approve NAME --version V
[--reject] [--reason TEXT]` decides a chain waiting for approval; `mlops-jupyter watch
signals|retry|abandon` lists and recovers handled signals (docs/loop.md). On a direct
store or over the tracking server (remote/loop_watch.py)."""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..remote import loop_watch as lw
from .actions import newest_version, ready, run_chain
from .triggers import load_config, signals

__all__ = ["poll", "watch"]


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(owner: str) -> bool:
    """Whether `owner` (host:pid) was a watcher on this host whose process has ended."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:  # a killed child nobody reaped yet is a zombie: dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def poll(config: str | Path | dict[str, Any], now: float | None = None) -> list[dict]:
    """One pass over the rules of `config` (a watch config file, or load_config's dict):
    new signals are claimed (once, whichever watcher gets there first) and their chains
    run; chains waiting for an approval that was decided continue. Returns what happened:
    [{"rule", "signal", "state"}]."""
    cfg = config if isinstance(config, dict) else load_config(config)
    store = lw.open_watch_store()
    owner = _owner()
    out = []
    for rule in cfg["rules"]:
        for r in lw.signals(store, rule.name, "running"):
            # a watcher killed mid-chain on this host: its chain goes on from its last
            # finished step (compare-and-set, so one watcher takes it)
            if not _dead_here(r["owner"]):
                continue
            detail = lw.take_back(store, rule.name, r["signal"], r["owner"], owner)
            if detail is not None:
                print(
                    f"{rule.name}: {r['signal']}: taken back from {r['owner']} (no longer "
                    f"running), from step {detail.get('step', 0) + 1}",
                    flush=True,
                )
                state = run_chain(store, rule, r["signal"], detail, cfg["channels"])
                out.append({"rule": rule.name, "signal": r["signal"], "state": state,
                            "taken_from": r["owner"]})  # fmt: skip
        for w in lw.signals(store, rule.name, "waiting"):
            if not ready(store, rule, w["detail"]):
                continue  # still undecided or ramping: nothing to do (notified once)
            detail = lw.resume(store, rule.name, w["signal"], owner)
            if detail is not None:
                if detail.get("waiting_for") == "retry":
                    del detail["waiting_for"]
                state = run_chain(store, rule, w["signal"], detail, cfg["channels"])
                out.append({"rule": rule.name, "signal": w["signal"], "state": state})
        for key, info in signals(store, rule, now):
            before = newest_version(store, rule.model)
            detail = {"step": 0, "info": info, "before": before, "model": rule.model}
            if not lw.claim(store, rule.name, key, detail, owner):
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


def _signals_cmd(args) -> int:
    from datetime import datetime

    from ..cli_format import json_text, safe, table
    from ..store.loop_state import STATES

    if args.state is not None and args.state not in STATES:
        raise InvalidInputError(f"--state must be one of {', '.join(STATES)}, got {args.state!r}")
    rows = lw.signals(lw.open_watch_store(), args.rule, args.state)
    if args.json:
        print(json_text(rows))
        return 0
    if not rows:
        print("(no handled signals)")
        return 0
    out = []
    for r in rows:
        d = r["detail"]
        step = d.get("step", 0)
        out.append(
            [
                safe(r["rule"]),
                safe(r["signal"]),
                r["state"],
                str(step),
                safe(r["owner"] or ""),
                datetime.fromtimestamp(r["updated"]).strftime("%Y-%m-%d %H:%M:%S"),
                safe(str(d.get("reason") or d.get("waiting_for") or ""))[:80],
            ]
        )
    print(table(out, ["rule", "signal", "state", "steps done", "owner", "updated", "note"]))
    return 0


def _recover_cmd(args) -> int:
    from ..registry import _user

    if len(args.target) != 2:
        raise InvalidInputError(f"usage: mlops-jupyter watch {args.action} RULE SIGNAL")
    if args.action == "abandon" and not (args.reason or "").strip():
        raise InvalidInputError("watch abandon needs --reason TEXT (kept in the audit log)")
    rule, signal = args.target
    got = lw.recover(lw.open_watch_store(), rule, signal, args.action, _user(), args.reason)
    if args.action == "retry":
        step = got["detail"].get("step", 0)
        print(f"{rule}: {signal} -> waiting: the next poll runs the chain from step {step + 1}")
    else:
        print(f"{rule}: {signal} -> failed (abandoned)")
    return 0


def cmd_watch(args) -> int:
    if args.action == "signals":
        return _signals_cmd(args)
    if args.action in ("retry", "abandon"):
        return _recover_cmd(args)
    if args.target:
        raise InvalidInputError(f"unexpected arguments: {' '.join(args.target)}")
    if not args.config:
        raise InvalidInputError("watch needs --config FILE (or: watch signals|retry|abandon)")
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
    w.add_argument(
        "action",
        nargs="?",
        choices=("signals", "retry", "abandon"),
        help="signals: list handled signals; retry RULE SIGNAL: run a stuck or failed chain "
        "again from its last finished step; abandon RULE SIGNAL --reason: mark it failed",
    )
    w.add_argument("target", nargs="*", metavar="RULE SIGNAL", help=argparse.SUPPRESS)
    w.add_argument("--config", help="watch config (TOML with [[rule]] tables)")
    w.add_argument("--rule", help="signals: only this rule's")
    w.add_argument("--state", help="signals: only in this state (running, waiting, ...)")
    w.add_argument("--reason", help="abandon (or retry): why, kept in the audit log")
    w.add_argument("--json", action="store_true", help="signals: as JSON")
    w.add_argument("--once", action="store_true", help="one pass, then exit (cron, Airflow)")
    w.add_argument("--interval", type=float, default=60.0, help="seconds between polls (60)")
    w.set_defaults(func=cmd_watch)
    a = sub.add_parser("approve", help="approve (or --reject) a version a watcher waits on")
    a.add_argument("name", help="registered model name")
    a.add_argument("--version", required=True, help="the version to approve")
    a.add_argument("--reject", action="store_true", help="reject it: the chain stops")
    a.add_argument("--reason", help="why (kept in the audit log)")
    a.set_defaults(func=cmd_approve)
