"""The steps a firing rule runs, in order: retrain (the exported training pipeline or any
command), register (the version the pipeline registered), gate, promote (after a human
approval when the rule asks for one). One tracked run per chain, an event per step, so
every step is linked to the signal that caused it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from ..errors import InvalidInputError
from ..remote import loop_watch as lw  # a direct store's functions, or the server's routes
from .triggers import Rule


class StepFailed(RuntimeError):
    """A step of the chain failed; the chain stops with this reason."""

    def __init__(self, reason: str, notified: bool = False) -> None:
        super().__init__(reason)
        self.notified = notified


class Waiting(Exception):
    """The chain waits (for an approval); it continues on a later poll."""


def newest_version(store: Any, model: str) -> int:
    """The newest registered version of `model` (0 when it has none)."""
    return max((r["version"] for r in lw.model_versions(store, model)), default=0)


def _retrain(store: Any, rule: Rule, key: str, detail: dict[str, Any]) -> str:
    from ..tracking.api import remote_url, store_location

    info = detail.get("info", {})
    fields = {
        "model": rule.model,
        "signal": key,
        "rule": rule.name,
        "data_version": info.get("data_version", ""),
        "data_path": info.get("data_path", ""),
        "python": sys.executable,
    }
    try:
        argv = [a.format(**fields) for a in rule.retrain or []]
    except (KeyError, IndexError, ValueError) as e:
        raise StepFailed(f"retrain: bad placeholder in {rule.retrain!r}: {e}") from None
    env = dict(os.environ)
    # the pipeline writes to the watcher's store and can tag its run with the signal
    # retrain_store: where the job logs (the team's tracking server, its token from this
    # environment) when the watcher itself opens the store behind it
    env.update(
        MLOPS_JUPYTER_STORE=str(
            rule.params.get("retrain_store") or remote_url() or store_location()
        ),
        MLOPS_JUPYTER_LOOP_RULE=rule.name,
        MLOPS_JUPYTER_LOOP_SIGNAL=key,
        MLOPS_JUPYTER_LOOP_DATA_VERSION=str(fields["data_version"]),
        MLOPS_JUPYTER_LOOP_DATA_PATH=str(fields["data_path"]),
    )
    timeout = float(rule.params.get("retrain_timeout", 3600))
    try:
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise StepFailed(f"retrain: command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise StepFailed(f"retrain: {argv[0]} ran past {timeout:g} s") from None
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        raise StepFailed(f"retrain: exit {p.returncode}: " + " | ".join(tail)[-600:])
    return f"retrain finished: {' '.join(argv)[:200]}"


def _register(store: Any, rule: Rule, detail: dict[str, Any]) -> str:
    v = newest_version(store, rule.model)
    if v <= detail["before"]:
        raise StepFailed(
            f"register: the pipeline registered no new version of {rule.model!r} "
            f"(newest is v{v}); it must call mj.register_model({rule.model!r}, ...)"
        )
    detail["version"] = v
    return f"candidate {rule.model} v{v}"


def _gate(rule: Rule, key: str, detail: dict[str, Any], channels: list | None) -> str:
    from . import gate, not_worse
    from .cli import load_rules

    spec: dict[str, Any] = {"rules": [not_worse("accuracy", by=0.0)], "target": None}
    if rule.gate_rules:
        spec = load_rules(rule.gate_rules)
    report = gate(
        rule.model,
        candidate=detail["version"],
        data=rule.gate_data,
        rules=spec["rules"],
        target=spec.get("target") or rule.params.get("target", "y"),
        features=spec.get("features"),
        predict=spec.get("predict"),
        trusted=bool(rule.params.get("trusted", False)),
        notify=False,  # sent below, to the watcher's channels, naming the rule and signal
    )
    detail["gate"] = report.to_dict().get("id")
    if not report.passed:
        from .notify import notify

        notify(
            {
                "kind": "gate_failed",
                "model": rule.model,
                "version": detail["version"],
                "baseline": report.baseline,
                "rule": rule.name,
                "signal": key,
                "text": f"loop rule {rule.name} (signal {key}): {report.summary()}",
                "markdown": report.markdown(),
                "report": report.to_dict(),
            },
            channels,
        )
        raise StepFailed(f"gate failed: {report.summary()}", notified=True)
    return f"gate passed: {report.summary()}"


def _canary(store: Any, rule: Rule, detail: dict[str, Any]) -> str:
    """Start a canary rollout of the candidate (serving's controller ramps it, in `serve`
    or `mlops-jupyter rollout watch`); wait until it reaches 100 % or is rolled back."""
    from ..registry import _user

    v = detail["version"]
    if not detail.get("canary_started"):
        row = lw.start_canary(store, rule.model, v, rule.params, _user())
        detail["canary_started"] = time.time()
        detail["waiting_for"] = "canary"
        raise Waiting(f"canary of {rule.model} v{v} started: {row['reason']}")
    row = lw.rollout(store, rule.model)
    c = row["layout"].get("canary") if row else None
    if row is not None and c and c.get("version") == v:
        if row["state"] == "ramping":
            detail["waiting_for"] = "canary"
            raise Waiting(f"canary of {rule.model} v{v} is ramping")
        if row["state"] == "promoted":
            return f"canary of v{v} completed: {row['reason']}"
    state = row["state"] if row else "no rollout"
    why = row["reason"] if row else "the rollout was removed"
    raise StepFailed(f"canary of v{v} did not complete ({state}): {why}")


def ready(store: Any, rule: Rule, detail: dict[str, Any]) -> bool:
    """Whether a waiting chain has something to go on with: a decided approval, or a
    canary no longer ramping."""
    if detail.get("waiting_for") == "retry":  # `mlops-jupyter watch retry`
        return True
    v = detail.get("version")
    if v is None:
        return False
    if detail.get("waiting_for") == "canary":
        row = lw.rollout(store, rule.model)
        c = row["layout"].get("canary") if row else None
        return not (row and c and c.get("version") == v and row["state"] == "ramping")
    return lw.get_approval(store, rule.model, v) is not None


def _promote(
    store: Any, rule: Rule, key: str, detail: dict[str, Any], channels: list | None
) -> str:
    from ..registry import promote_model
    from .notify import notify

    v = detail["version"]
    if rule.approval:
        detail["waiting_for"] = "approval"
        a = lw.get_approval(store, rule.model, v)
        if a is None:
            if not detail.get("asked"):
                text = (
                    f"{rule.model} v{v} passed its checks (rule {rule.name}, signal {key}) "
                    f"and waits for approval: mlops-jupyter approve {rule.model} --version {v}"
                )
                notify(
                    {
                        "kind": "approval_needed",
                        "model": rule.model,
                        "version": v,
                        "rule": rule.name,
                        "signal": key,
                        "text": text,
                    },
                    channels,
                )
                detail["asked"] = time.time()
            raise Waiting(f"{rule.model} v{v} waits for approval")
        if a["decision"] != "approved":
            raise StepFailed(
                f"rejected by {a['user']}: {a['reason'] or 'no reason given'}", notified=True
            )
    stage = next(r["stage"] for r in lw.model_versions(store, rule.model) if r["version"] == v)
    why = f"loop rule {rule.name}: signal {key}"
    if stage != "staging":
        promote_model(rule.model, v, "staging", reason=why)
    promote_model(rule.model, v, "production", reason=why)
    return f"{rule.model} v{v} promoted to production"


def run_chain(
    store: Any,
    rule: Rule,
    key: str,
    detail: dict[str, Any],
    channels: list | None,
    owner: str | None = None,
) -> str:
    """Run the rule's steps from detail["step"] on; returns the new state (done, waiting,
    failed, rejected) and keeps it, with the detail, in the store. `owner`: the watcher
    holding the signal; the state is kept only while it still does (a watcher silent past
    its lease may have lost the signal to another, whose record wins)."""
    import mlops_jupyter as mj

    from .notify import notify

    tags = {"loop.rule": rule.name, "loop.signal": key, "loop.model": rule.model}
    run = mj.start_run(f"loop:{rule.name}", experiment="loop", tags=tags, nested=False)
    detail.setdefault("runs", []).append(run.id)
    state, status = "done", "finished"
    try:
        run.add_event("loop_signal", f"rule {rule.name}: signal {key}", data=detail.get("info"))
        while detail["step"] < len(rule.do):
            step = rule.do[detail["step"]]
            if step == "retrain":
                msg = _retrain(store, rule, key, detail)
            elif step == "register":
                msg = _register(store, rule, detail)
            else:
                if "version" not in detail:
                    _register(store, rule, detail)  # a chain without an explicit register
                msg = _gate(rule, key, detail, channels) if step == "gate" else None
                if step == "canary":
                    msg = _canary(store, rule, detail)
                if step == "promote":
                    msg = _promote(store, rule, key, detail, channels)
            run.add_event("loop_step", f"{step}: {msg}", data={"step": step, "signal": key})
            detail["step"] += 1
    except Waiting as w:
        state = "waiting"
        run.add_event("loop_wait", str(w), data={"signal": key})
    except (StepFailed, InvalidInputError, Exception) as e:
        reason = str(e) if isinstance(e, (StepFailed, InvalidInputError)) else repr(e)
        rejected = isinstance(e, StepFailed) and reason.startswith("rejected")
        state, status = ("rejected" if rejected else "failed"), "failed"
        detail["reason"] = reason
        step = rule.do[min(detail["step"], len(rule.do) - 1)]
        run.add_event("loop_failed", f"{step}: {reason}", level="error", data={"signal": key})
        if not getattr(e, "notified", False):
            text = f"loop rule {rule.name} stopped at {step} (signal {key}): {reason}"
            notify(
                {
                    "kind": "loop_failed",
                    "model": rule.model,
                    "rule": rule.name,
                    "step": step,
                    "signal": key,
                    "reason": reason,
                    "text": text,
                },
                channels,
            )
    finally:
        run.end(status)  # this chain's run, whatever else this process has active
    if not lw.update(store, rule.name, key, state, detail, owner):
        print(
            f"{rule.name}: {key}: not recorded as {state}: another watcher took this signal "
            "over after the lease (its record stands)",
            file=sys.stderr,
            flush=True,
        )
    return state
