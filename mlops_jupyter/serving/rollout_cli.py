"""`mlops-jupyter rollout set|show|rollback|promote|watch NAME`: change what the servers of
a model serve while they run (the layout stored in the team store; see live.py) and walk a
canary ramp with its checks (canary.py). Every change goes into the registry's audit log."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import datetime

from ..cli_format import number_in
from ..cli_format import positive_int as _positive
from ..errors import InvalidInputError
from .rollout import parse_every


def _every(text: str) -> float:
    try:
        return parse_every(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_seconds = number_in("seconds", lambda v: 0 < v <= 86400, "in (0, 86400] s")
_fraction = number_in("a number", lambda v: 0 <= v < 1, "in [0, 1)")
_ms = number_in("milliseconds", lambda v: v > 0, "> 0 ms")


def _user() -> str:
    from ..registry import _user as user

    return user()


def _store():
    from ..tracking.api import current_store

    return current_store()


def _remote():
    """The tracking server's ServingRemote when the store is one, else None."""
    from ..tracking.api import remote_url

    url = remote_url()
    if url is None:
        return None
    from ..remote.serving import handle

    return handle(url)


def cmd_set(args) -> int:
    from ..store import serving_rollouts as sr
    from . import canary as cn

    remote = _remote()
    store = remote if remote is not None else _store()
    before = remote.show_row(args.model) if remote else sr.get(store, args.model)
    if args.canary is not None:
        if args.split is not None:
            raise InvalidInputError("give either --split or --canary, not both")
        rules = cn.Rules(
            max_error_rate=args.max_error_rate,
            max_p99_ms=args.max_p99_ms,
            min_requests=args.min_requests,
            metric_margin=args.metric_margin,
            min_feedback=args.min_feedback,
            higher_is_better=not args.lower_is_better,
            drift=not args.no_drift,
        )
        if remote is not None:  # the server starts it on its store (admin)
            row = remote.change(args.model, {"action": "canary", "canary": args.canary,
                                             "ramp": args.ramp, "every": args.every,
                                             "shadow": args.shadow,
                                             "rules": dataclasses.asdict(rules)})  # fmt: skip
        else:
            row = cn.start_canary(
                store, args.model, args.canary, args.ramp, args.every, args.shadow, rules, _user()
            )
    else:
        if args.ramp is not None:
            raise InvalidInputError("--ramp goes with --canary")
        if remote is not None:
            body = {"action": "split", "split": args.split, "shadow": args.shadow}
            row = remote.change(args.model, body)
        else:
            row = cn.set_split(store, args.model, args.split, args.shadow, _user())
    print(f"{args.model}: {row['reason']} (generation {row['generation']}, {row['state']})")
    _note_refused(store, args.model, before)
    return 0


def _note_refused(store, model: str, before: dict | None) -> None:
    """Say when the replaced layout was refused by workers (they kept an older one)."""
    from ..store import serving_rollouts as sr

    if not before:
        refused = []
    elif getattr(store, "remote_serving", False):
        refused = store.refusals(model, before["generation"])
    else:
        refused = sr.refusals(store, model, before["generation"])
    if refused:
        print(f"note: the replaced generation {before['generation']} was refused by "
              f"{len(refused)} worker(s), which kept serving an older layout:")  # fmt: skip
        _print_refused(refused)


def _print_refused(refused: list[dict]) -> None:
    for r in refused:
        errs = "; ".join(f"{f['name']} (v{f['version']}): {f['error']}" for f in r["failed"])
        print(f"  generation {r['generation']} ({r['layout']}) {_t(r['ts'])} "
              f"worker {r['worker']}: {errs}")  # fmt: skip


def cmd_show(args) -> int:
    from . import canary as cn

    remote = _remote()
    info = remote.show(args.model) if remote else cn.show(_store(), args.model)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"model       {info['model']}")
    print(f"state       {info['state']} (generation {info['generation']}, "
          f"{_t(info['updated_at'])} by {info['updated_by'] or '?'})")  # fmt: skip
    print(f"layout      {info['layout_text']}")
    for n, v, w in info["layout"]["variants"]:
        print(f"  {n:<12} v{v:<5} {w / 100:g} %")
    c = info["layout"].get("canary")
    if c:
        ramp = ",".join(f"{s:g}" for s in c["ramp"])
        print(
            f"canary      {c['name']} (v{c['version']}) against {c['control']} "
            f"(v{c['control_version']}): ramp {ramp}, every {c['every']:g} s"
        )
        print(f"step        {c['step'] + 1}/{len(c['ramp'])} ({c['ramp'][c['step']]:g} %) "
              f"since {_t(c['step_started'])}")  # fmt: skip
        rules = ", ".join(f"{k}={v}" for k, v in c.get("rules", {}).items())
        print(f"rules       {rules}")
        if c.get("rolled_back"):
            print(f"rolled back {c['rolled_back']['reason']}")
    ch = info.get("checks")
    if ch:
        print(f"checks      {_checks(ch)}")
        for w in ch.get("waiting_for") or []:
            print(f"  waiting for {w}")
    if info.get("refused"):
        print("refused     layouts some workers could not load (they kept an older one)")
        _print_refused(info["refused"])
    print("history")
    for h in info["history"][-args.last :]:
        print(f"  {_t(h['ts'])}  {h['user'] or '':<10}  {h['reason']}")
    return 0


def _checks(ch: dict) -> str:
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    return (
        f"canary {ch['canary_requests']} requests, error rate {f(ch['error_rate'], '.2%')}, "
        f"p99 {f(ch['p99_ms'], '.1f')} ms, feedback {f(ch['feedback_mean'], '.4g')}; "
        f"control {ch['control_requests']} requests, error rate "
        f"{f(ch['control_error_rate'], '.2%')}, p99 {f(ch['control_p99_ms'], '.1f')} ms, "
        f"feedback {f(ch['control_feedback_mean'], '.4g')}"
    )


def _t(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def cmd_rollback(args) -> int:
    from ..store import serving_rollouts as sr
    from . import canary as cn

    remote = _remote()
    if remote is not None:
        before = remote.show_row(args.model)
        row = remote.change(args.model, {"action": "rollback", "reason": args.reason})
        print(f"{args.model}: {row['reason']} (generation {row['generation']})")
        _note_refused(remote, args.model, before)
        return 0
    store = _store()
    before = sr.get(store, args.model)
    row = cn.rollback(store, args.model, args.reason, _user())
    print(f"{args.model}: {row['reason']} (generation {row['generation']})")
    _note_refused(store, args.model, before)
    return 0


def cmd_promote(args) -> int:
    from . import canary as cn

    remote = _remote()
    if remote is not None:
        row = remote.change(args.model, {"action": "promote"})
    else:
        row = cn.promote(_store(), args.model, _user())
    print(f"{args.model}: {row['reason']} (generation {row['generation']})")
    return 0


def cmd_watch(args) -> int:
    from . import canary as cn

    remote = _remote()
    store = remote if remote is not None else _store()
    # an unknown model or no rollout: a clear error at once
    remote.show(args.model) if remote else cn.show(store, args.model)
    deadline = None if args.for_s is None else time.monotonic() + args.for_s
    try:
        while deadline is None or time.monotonic() < deadline:
            if remote is not None:  # each check runs on the server's store
                _remote_tick(remote, args.model)
            else:
                cn.watch(store, args.model, once=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
    return 0


def _remote_tick(remote, model: str) -> None:
    from ..remote.client import ServerUnavailable

    try:
        out = remote.tick(model)
    except ServerUnavailable as e:  # the server away: the next check
        print(f"{model}: {e}", file=sys.stderr)
        return
    if out and out["action"] == "lost":
        print(f"{model}: lost: another controller changed the layout first", flush=True)
    elif out and out["action"] != "wait":
        print(f"{model}: {out['action']}: {out.get('reason', '')}", flush=True)


def add_parser(sub) -> None:
    """Register `rollout`."""
    p = sub.add_parser(
        "rollout",
        help="change what running servers of a model serve: splits, canary ramps, rollback",
        description="The traffic layout of a model, kept in the store and followed by every "
        "`serve NAME` worker within about a second.",
    )
    rs = p.add_subparsers(dest="rollout_cmd", required=True)
    s = rs.add_parser("set", help="set a split, a shadow or start a canary ramp")
    s.add_argument("model", help="the model NAME")
    s.add_argument("--split", help="fixed weights: 'v3=90,v4=10' (vN, stage or alias)")
    s.add_argument("--canary", help="a canary variant (vN, stage or alias) against the control")
    s.add_argument("--ramp", help="canary percentages, increasing to 100 (default 5,25,50,100)")
    s.add_argument("--every", type=_every, default=1800.0,
                   help="time per ramp step: 2s, 30m, 2h (default 30m)")  # fmt: skip
    s.add_argument("--shadow", help="also run every request on this variant (only logged)")
    s.add_argument("--max-error-rate", type=_fraction, default=0.02)
    s.add_argument("--max-p99-ms", type=_ms, default=250.0)
    s.add_argument("--min-requests", type=_positive, default=100,
                   help="canary requests a step needs before it advances")  # fmt: skip
    s.add_argument("--metric-margin", type=float, default=0.05,
                   help="how far the canary's mean feedback may trail the control's")  # fmt: skip
    s.add_argument("--min-feedback", type=_positive, default=30)
    s.add_argument("--lower-is-better", action="store_true", help="for the feedback metric")
    s.add_argument("--no-drift", action="store_true", help="do not roll back on input drift")
    s.set_defaults(func=cmd_set)
    sh = rs.add_parser("show", help="layout, canary step, checks and history")
    sh.add_argument("model")
    sh.add_argument("--json", action="store_true")
    sh.add_argument("--last", type=_positive, default=10, help="history entries shown")
    sh.set_defaults(func=cmd_show)
    rb = rs.add_parser("rollback", help="back to the control at 100 %%")
    rb.add_argument("model")
    rb.add_argument("--reason")
    rb.set_defaults(func=cmd_rollback)
    pr = rs.add_parser("promote", help="the canary to 100 %% now")
    pr.add_argument("model")
    pr.set_defaults(func=cmd_promote)
    w = rs.add_parser("watch", help="run the canary controller here (servers run one too)")
    w.add_argument("model")
    w.add_argument("--interval", type=_seconds, default=1.0, help="seconds between checks")
    w.add_argument("--for", dest="for_s", type=_seconds, help="stop after this many seconds")
    w.set_defaults(func=cmd_watch)
