"""`mlops-jupyter watch --config loop.toml [--once] [--interval S] [--lease S]`: poll the
signals of each rule and run its chain once per signal (a heartbeat thread keeps the
signal's lease while it runs; a running signal whose owner stopped beating for longer than
the lease is taken back); `mlops-jupyter approve NAME --version V
[--reject] [--reason TEXT]` decides a chain waiting for approval; `mlops-jupyter watch
signals|retry|abandon` lists and recovers handled signals (docs/loop.md). On a direct
store or over the tracking server (remote/loop_watch.py)."""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..remote import loop_watch as lw
from .actions import newest_version, ready, run_chain
from .triggers import load_config, signals

__all__ = ["poll", "watch"]

DEFAULT_LEASE = 600.0  # seconds without a heartbeat before a running signal is taken back
MIN_LEASE = 10.0  # a watcher beats every lease/4: below this, a slow store call loses it


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


def _alive_here(owner: str) -> bool:
    """Whether `owner` is this process or a live process on this host (provably alive:
    its lease is not needed to tell)."""
    host, _, pid = owner.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _dead_here(owner)


def check_lease(lease: Any, where: str = "--lease") -> float:
    """`lease` as seconds; InvalidInputError below MIN_LEASE or when not a number."""
    ok = isinstance(lease, (int, float)) and not isinstance(lease, bool)
    if not ok or not math.isfinite(lease) or lease < MIN_LEASE:
        raise InvalidInputError(
            f"{where} must be a number of seconds of at least {MIN_LEASE:g} (a watcher "
            f"refreshes its lease every lease/4 s), got {lease!r}"
        )
    return float(lease)


class _Heartbeat:
    """While a chain runs: a thread refreshes its signal's `updated` every lease/4 s
    (compare-and-set on running and this owner), so watchers elsewhere see it alive."""

    def __init__(self, store: Any, rule: str, signal: str, owner: str, lease: float) -> None:
        self.store, self.rule, self.signal, self.owner = store, rule, signal, owner
        self.every = lease / 4
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"loop-beat {signal}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)  # a beat in flight finishes (or the daemon is left)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                held = lw.beat(self.store, self.rule, self.signal, self.owner)
            except Exception as e:  # a store or network hiccup: the next beat tries again
                print(f"{self.rule}: {self.signal}: heartbeat failed: {e}", file=sys.stderr)
                continue
            if not held:
                if not self._stop.is_set():  # else the chain just ended: nothing to say
                    print(
                        f"{self.rule}: {self.signal}: no longer held by this watcher (taken "
                        "back after the lease?): its heartbeat stops",
                        file=sys.stderr,
                        flush=True,
                    )
                return


def _chain(store: Any, rule: Any, signal: str, detail: dict, cfg: dict, lease: float) -> str:
    with _Heartbeat(store, rule.name, signal, _owner(), lease):
        return run_chain(store, rule, signal, detail, cfg["channels"], _owner())


def _take_back(store: Any, rule: Any, r: dict, owner: str, lease: float) -> dict | None:
    """Take the running signal `r` from a watcher that died on this host (its pid) or that
    has not beaten for longer than the lease (compare-and-set, so one watcher takes it and
    a beat that lands first wins); its detail, or None. Says which."""
    dead = r["owner"] or ""
    if _dead_here(dead):
        why = "no longer running"
        detail = lw.take_back(store, rule.name, r["signal"], dead, owner)
    else:
        # this clock against the store's time: they agree within the lease (NTP)
        silent = time.time() - r["updated"]
        if _alive_here(dead) or silent <= lease:
            return None
        why = f"no heartbeat for {silent:.0f} s"
        detail = lw.take_back(store, rule.name, r["signal"], dead, owner, lease)
    if detail is not None:
        print(
            f"{rule.name}: {r['signal']}: taken back from {dead} ({why}), "
            f"from step {detail.get('step', 0) + 1}",
            flush=True,
        )
    return detail


def poll(
    config: str | Path | dict[str, Any], now: float | None = None, lease: float | None = None
) -> list[dict]:
    """One pass over the rules of `config` (a watch config file, or load_config's dict):
    new signals are claimed (once, whichever watcher gets there first) and their chains
    run; chains waiting for an approval that was decided continue; a running signal whose
    watcher died on this host, or sent no heartbeat for `lease` seconds (default: the
    config's `lease`, else 600), goes on from its last finished step. Returns what
    happened: [{"rule", "signal", "state"}] ("taken_from" on a signal taken back)."""
    cfg = config if isinstance(config, dict) else load_config(config)
    if lease is None:  # the config's (at least MIN_LEASE), else the default
        given = cfg.get("lease")
        lease = DEFAULT_LEASE if given is None else check_lease(given, "watch config: lease")
    elif not (isinstance(lease, (int, float)) and math.isfinite(lease) and lease > 0):
        raise InvalidInputError(f"lease must be a positive number of seconds, got {lease!r}")
    store = lw.open_watch_store()
    owner = _owner()
    out = []
    for rule in cfg["rules"]:
        for r in lw.signals(store, rule.name, "running"):
            if r["owner"] == owner:
                continue
            detail = _take_back(store, rule, r, owner, lease)
            if detail is not None:
                state = _chain(store, rule, r["signal"], detail, cfg, lease)
                out.append({"rule": rule.name, "signal": r["signal"], "state": state,
                            "taken_from": r["owner"]})  # fmt: skip
        for w in lw.signals(store, rule.name, "waiting"):
            if not ready(store, rule, w["detail"]):
                continue  # still undecided or ramping: nothing to do (notified once)
            detail = lw.resume(store, rule.name, w["signal"], owner)
            if detail is not None:
                if detail.get("waiting_for") == "retry":
                    del detail["waiting_for"]
                state = _chain(store, rule, w["signal"], detail, cfg, lease)
                out.append({"rule": rule.name, "signal": w["signal"], "state": state})
        for key, info in signals(store, rule, now):
            before = newest_version(store, rule.model)
            detail = {"step": 0, "info": info, "before": before, "model": rule.model}
            if not lw.claim(store, rule.name, key, detail, owner):
                continue  # handled before, here or by another watcher
            state = _chain(store, rule, key, detail, cfg, lease)
            out.append({"rule": rule.name, "signal": key, "state": state})
    return out


def watch(
    config: str | Path, interval: float = 60.0, once: bool = False, lease: float | None = None
) -> None:
    """Poll every `interval` seconds until interrupted (or one pass with `once`). `lease`:
    seconds without a heartbeat before a running signal is taken back (default: the
    config's `lease`, else 600; at least MIN_LEASE)."""
    cfg = load_config(config)
    if lease is not None:
        lease = check_lease(lease)
    elif cfg.get("lease") is not None:
        lease = check_lease(cfg["lease"], f"watch config {config}: lease")
    while True:
        started = time.monotonic()
        for r in poll(cfg, lease=lease):
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
        watch(args.config, args.interval, args.once, args.lease)
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
    w.add_argument(
        "--lease",
        type=float,
        metavar="SECONDS",
        help="a running signal whose watcher sent no heartbeat for this long is taken back "
        f"(default: the config's lease, else {DEFAULT_LEASE:g}; at least {MIN_LEASE:g})",
    )
    w.set_defaults(func=cmd_watch)
    a = sub.add_parser("approve", help="approve (or --reject) a version a watcher waits on")
    a.add_argument("name", help="registered model name")
    a.add_argument("--version", required=True, help="the version to approve")
    a.add_argument("--reject", action="store_true", help="reject it: the chain stops")
    a.add_argument("--reason", help="why (kept in the audit log)")
    a.set_defaults(func=cmd_approve)
