"""`mlops-jupyter sweep join STUDY --objective module:function [--n-trials N]`: add a
worker to a sweep from any machine that reaches the store."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from ..errors import InvalidInputError


def _objective(ref: str) -> Any:
    """Import `module:function` (the current folder is importable, as with `python -m`)."""
    mod, sep, name = ref.partition(":")
    if not sep or not mod or not name:
        raise InvalidInputError(f"--objective must be module:function, got {ref!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        fn = importlib.import_module(mod)
        for part in name.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError) as e:
        raise InvalidInputError(f"cannot import the objective {ref}: {e}") from None
    if not callable(fn):
        raise InvalidInputError(f"the objective {ref} is not callable")
    return fn


def cmd_join(args) -> int:
    """Run trials of STUDY here. A study started with workers=/cluster= has a budget: help
    until it is met (at most --n-trials here); any other study gets --n-trials (default
    20) more trials, as `mj.sweep(objective, n_trials, study=STUDY)` would."""
    from . import _optuna, sweep
    from .distributed import TARGET_ATTR, storage_for, work

    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = _objective(args.objective)
    storage = storage_for(heartbeat_interval=args.heartbeat_interval, max_retry=args.max_retry)
    try:
        st = optuna.load_study(study_name=args.study, storage=storage)
        budget = st.user_attrs.get(TARGET_ATTR)
    except KeyError:
        budget = None
    if budget is None:
        result = sweep(
            objective,
            n_trials=args.n_trials or 20,
            study=args.study,
            direction=args.direction,
            sampler=args.sampler,
            heartbeat_interval=args.heartbeat_interval,
            max_retry=args.max_retry,
            live=False,
        )
        ran = len(result.runs())
    else:
        spec = {
            "study": args.study,
            "objective": objective,
            "sampler": args.sampler,
            "heartbeat_interval": args.heartbeat_interval,
            "max_retry": args.max_retry,
            "limit": args.n_trials,
            "gate": True,
        }
        ran = work(spec)
    print(f"{args.study}: ran {ran} trials here")
    return 0


def add_parser(sub) -> None:
    """Register `sweep join`."""
    p = sub.add_parser("sweep", help="hyperparameter sweeps")
    ss = p.add_subparsers(dest="sweep_command", required=True)
    j = ss.add_parser(
        "join",
        help="run trials of a study here (a worker from any machine)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    j.add_argument("study")
    j.add_argument("--objective", required=True, help="module:function taking an optuna trial")
    j.add_argument("--n-trials", type=int, default=None, help="at most this many here")
    j.add_argument("--direction", choices=["minimize", "maximize"], default="minimize")
    j.add_argument("--sampler", default="tpe")
    j.add_argument("--heartbeat-interval", type=int, default=10)
    j.add_argument("--max-retry", type=int, default=3)
    j.set_defaults(func=cmd_join)
