"""Canary rollouts: the layout operations behind `mlops-jupyter rollout` (a fixed split, a
canary ramp, rollback, promote) and the controller that walks a ramp.

A canary starts at the ramp's first step (e.g. 5 %, listed first so its users stay with it
as it grows). The controller (`tick`, run about once a second by every serve supervisor
and by `mlops-jupyter rollout watch`) reads the prediction log of the current step's
window, canary against control, and:

- rolls back at once (layout -> control 100 %, state "rolled back", the rule and its
  evidence in the audit log and as an event on the canary version's run) when a rule
  fires: error rate (status >= 500) or the share of requests slower than `max_p99_ms`
  above 1 % with the lower end of its 95 % Wilson interval (so one unlucky request among
  twenty is not enough), the mean feedback below the control's by more than
  `metric_margin` (both with `min_feedback` values), input drift of the canary's
  version (`serving.monitor.latest_drift`, when that module provides it), or a worker that
  could not load the canary's version (it keeps serving the old layout and records the
  load error in the store: `serving_rollouts.record_refusal`);
- takes the next step once `every` seconds have passed in this step, the canary answered
  `min_requests` requests in it and its observed error rate and p99 are within the limits;
  the last step (100 %) leaves the canary alone: state "promoted";
- otherwise waits. Every write is a compare-and-set on the layout's generation: with
  several controllers each step is taken once."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InvalidInputError
from .live import describe, layout_of, plan_of
from .rollout import BUCKETS, canary_split, parse_ramp
from .variants import Plan, make_plan, resolve_variant

DEFAULT_RAMP = "5,25,50,100"
DEFAULT_EVERY = 1800.0


@dataclass
class Rules:
    """The checks of a canary step (defaults; `rollout set` overrides them)."""

    max_error_rate: float = 0.02
    max_p99_ms: float = 250.0
    min_requests: int = 100
    fail_after: int = 20  # requests of the canary before a rule may roll it back
    metric_margin: float = 0.05  # the feedback mean may trail the control's by this much
    min_feedback: int = 30
    higher_is_better: bool = True
    drift: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.max_error_rate < 1:
            raise InvalidInputError(f"max error rate must be in [0, 1), got {self.max_error_rate}")
        if not self.max_p99_ms > 0:
            raise InvalidInputError(f"max p99 must be > 0 ms, got {self.max_p99_ms}")
        for k in ("min_requests", "fail_after", "min_feedback"):
            if int(getattr(self, k)) < 1:
                raise InvalidInputError(f"{k.replace('_', ' ')} must be >= 1")
        if not self.metric_margin >= 0:
            raise InvalidInputError(f"metric margin must be >= 0, got {self.metric_margin}")


def wilson_low(k: int, n: int, z: float = 1.959964) -> float:
    """The lower end of the Wilson score interval of k successes in n trials."""
    if n == 0:
        return 0.0
    p = k / n
    d = 1 + z * z / n
    c = p + z * z / (2 * n)
    return max(0.0, (c - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / d)


def p99(latencies: list[float]) -> float | None:
    """Nearest-rank 99th percentile of sorted latencies."""
    if not latencies:
        return None
    return latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)]


def evaluate(
    rules: Rules,
    canary: dict,
    control: dict,
    drift: dict | None,
    refused: list[dict] | None = None,
) -> dict[str, Any]:
    """The checks of one window: {"failed": [{"rule", "evidence"}], "healthy": bool (the
    observed figures are within the limits), "enough": bool, figures...}. `refused`: the
    workers' records of the canary's version not loading (serving_rollouts.refusals), a
    rule that fires at once."""
    n, errs, lats = canary["n"], canary["errors"], canary["latencies"]
    slow = sum(1 for x in lats if x > rules.max_p99_ms)
    out: dict[str, Any] = {
        "canary_requests": n,
        "control_requests": control["n"],
        "error_rate": errs / n if n else None,
        "control_error_rate": control["errors"] / control["n"] if control["n"] else None,
        "p99_ms": p99(lats),
        "control_p99_ms": p99(control["latencies"]),
        "feedback_mean": canary["feedback_mean"],
        "control_feedback_mean": control["feedback_mean"],
        "feedback_n": canary["feedback_n"],
        "control_feedback_n": control["feedback_n"],
    }
    failed = []
    if n >= rules.fail_after and wilson_low(errs, n) > rules.max_error_rate:
        failed.append(
            {
                "rule": "error rate",
                "evidence": f"{errs} of {n} requests failed ({errs / n:.1%}; "
                f"limit {rules.max_error_rate:.1%})",
            }
        )
    answered = len(lats)
    if answered >= rules.fail_after and wilson_low(slow, answered) > 0.01:
        failed.append(
            {
                "rule": "p99 latency",
                "evidence": f"p99 {out['p99_ms']:.1f} ms > {rules.max_p99_ms:g} ms "
                f"({slow} of {answered} requests slower)",
            }
        )
    cm, km = canary["feedback_mean"], control["feedback_mean"]
    if (
        cm is not None
        and km is not None
        and min(canary["feedback_n"], control["feedback_n"]) >= rules.min_feedback
    ):
        worse = (km - cm) if rules.higher_is_better else (cm - km)
        if worse > rules.metric_margin:
            failed.append(
                {
                    "rule": "business metric",
                    "evidence": f"feedback mean {cm:.4g} vs control {km:.4g} "
                    f"(n {canary['feedback_n']} vs {control['feedback_n']}; "
                    f"margin {rules.metric_margin:g})",
                }
            )
    if rules.drift and drift and drift.get("drifted"):
        cols = ", ".join(map(str, drift.get("columns") or []))
        failed.append(
            {
                "rule": "input drift",
                "evidence": f"drift share {drift.get('share', 0):.2f}"
                + (f" (columns {cols})" if cols else ""),
            }
        )
    if refused:
        out["refused"] = refused
        failed.insert(0, {"rule": "canary load", "evidence": _load_evidence(refused)})
    out["failed"] = failed
    out["enough"] = n >= rules.min_requests
    out["healthy"] = (
        n > 0
        and errs / n <= rules.max_error_rate
        and (out["p99_ms"] is None or out["p99_ms"] <= rules.max_p99_ms)
    )
    return out


def _load_evidence(refused: list[dict]) -> str:
    """'worker h:12 could not load v3 (v3): ModuleNotFoundError: ...' (+ how many more)."""
    r = refused[0]
    f = r["failed"][0]
    text = f"worker {r['worker']} could not load {f['name']} (v{f['version']}): {f['error']}"
    others = len({x["worker"] for x in refused}) - 1
    return text + (f" (and {others} more worker{'s' if others != 1 else ''})" if others else "")


def _canary_refusals(store: Any, model: str, gen: int, version: int) -> list[dict]:
    """This generation's refusals by workers that could not load the canary's `version`
    (only its failures kept: a shadow that fails too is not the canary's fault)."""
    from ..store import serving_rollouts as sr

    out = []
    for r in sr.refusals(store, model, gen):
        mine = [f for f in r["failed"] if f.get("version") == version]
        if mine:
            out.append({**r, "failed": mine})
    return out


def _latest_drift(store: Any, model: str, version: int, since: float) -> dict | None:
    try:  # provided by the live-monitoring module once it exists
        from .monitor import latest_drift
    except (ImportError, AttributeError):
        return None
    try:
        return latest_drift(store, model, version, since)
    except Exception:  # no drift data is no reason to stop the controller
        return None


# -- the controller ------------------------------------------------------------------------


def tick(store: Any, model: str, now: float | None = None) -> dict[str, Any] | None:
    """One look at `model`'s canary: roll back, advance, or wait. Returns what was done
    ({"action": ..., ...}) or None when no canary is ramping."""
    from ..store import serving_rollouts as sr

    row = sr.get(store, model)
    if row is None or row["state"] != "ramping" or not row["layout"].get("canary"):
        return None
    now = time.time() if now is None else now
    layout, gen = row["layout"], row["generation"]
    c = layout["canary"]
    rules = Rules(**c.get("rules", {}))
    stats = sr.window(store, model, [c["name"], c["control"]], c["step_started"], now)
    drift = _latest_drift(store, model, c["version"], c["step_started"]) if rules.drift else None
    refused = _canary_refusals(store, model, gen, c["version"])
    ev = evaluate(rules, stats[c["name"]], stats[c["control"]], drift, refused)
    step = f"step {c['step'] + 1}/{len(c['ramp'])} ({c['ramp'][c['step']]:g} %)"
    if ev["failed"]:
        why = "; ".join(f"{f['rule']}: {f['evidence']}" for f in ev["failed"])
        done = _rollback(store, model, row, f"canary {c['name']} rolled back at {step}: {why}",
                         ev, user="controller")  # fmt: skip
        return {"action": "rollback" if done else "lost", "checks": ev, "reason": why}
    due = now - c["step_started"] >= c["every"]
    if due and ev["enough"] and ev["healthy"]:
        nxt = c["step"] + 1
        pct = c["ramp"][nxt]
        figures = (
            f"{ev['canary_requests']} requests, error rate {ev['error_rate']:.2%}, "
            f"p99 {ev['p99_ms']:.1f} ms"
        )
        c2 = {**c, "step": nxt, "step_started": now, "last_checks": ev}
        if pct >= 100:
            plan = Plan(model, [(c["name"], c["version"], BUCKETS)], _shadow(layout))
            reason = f"canary {c['name']} promoted: 100 % after {step} passed ({figures})"
            state = "promoted"
        else:
            sp = canary_split(c["name"], c["control"], pct)
            vers = {c["name"]: c["version"], c["control"]: c["control_version"]}
            plan = Plan(model, [(n, vers[n], w) for n, w in sp.weights], _shadow(layout))
            reason = f"canary {c['name']} step {nxt + 1}/{len(c['ramp'])}: {pct:g} % ({figures})"
            state = "ramping"
        g = sr.set_layout(store, model, layout_of(plan, c2), state, reason, "controller", gen)
        return {"action": state if g else "lost", "checks": ev, "reason": reason}
    ev["waiting_for"] = [
        w
        for w, ok in (
            (f"{c['every'] - (now - c['step_started']):.0f} s more in this step", due),
            (f"{rules.min_requests - ev['canary_requests']} more canary requests", ev["enough"]),
            ("error rate and p99 within the limits", ev["healthy"]),
        )
        if not ok
    ]
    ev["at"] = now
    sr.set_checks(store, model, gen, ev)
    return {"action": "wait", "checks": ev}


def _shadow(layout: dict) -> tuple[str, int] | None:
    sh = layout.get("shadow")
    return (sh[0], int(sh[1])) if sh else None


def _rollback(
    store: Any, model: str, row: dict, reason: str, evidence: dict | None, user: str
) -> bool:
    """Control 100 % (compare-and-set on `row`'s generation); an event on the canary's run."""
    from ..store import runs
    from ..store import serving_rollouts as sr

    layout = row["layout"]
    c = layout["canary"]
    sh = _shadow(layout)
    if sh is not None and sh[1] == c["version"]:
        sh = None
    plan = Plan(model, [(c["control"], c["control_version"], BUCKETS)], sh)
    c2 = {**c, "rolled_back": {"reason": reason, "checks": evidence, "at": time.time()}}
    g = sr.set_layout(
        store, model, layout_of(plan, c2), "rolled back", reason, user, row["generation"]
    )
    if g is None:
        return False
    rid = sr.version_run(store, model, c["version"])
    if rid is not None:
        try:
            runs.add_event(
                store, rid, "rollback", reason, "error", {"model": model, **(evidence or {})}
            )
        except Exception as e:  # the layout is rolled back already; say why the event is not
            print(f"rollback event not recorded on the run: {e}", file=sys.stderr)
    return True


def watch(
    store: Any, model: str, interval: float = 1.0, quiet: bool = False, once: bool = False
) -> None:
    """Run the controller of `model` every `interval` s (until interrupted)."""
    while True:
        try:
            out = tick(store, model)
        except Exception as e:  # the store may be away: try again at the next tick
            out = None
            print(f"rollout watch {model}: {e}", file=sys.stderr, flush=True)
        if out and not quiet and out["action"] == "lost":
            print(f"{model}: lost: another controller changed the layout first", flush=True)
        elif out and not quiet and out["action"] != "wait":
            print(f"{model}: {out['action']}: {out.get('reason', '')}", flush=True)
        if once:
            return
        time.sleep(interval)


# -- the operations of `mlops-jupyter rollout` ---------------------------------------------


def _current(store: Any, model: str) -> tuple[Plan, dict | None]:
    """The model's stored layout as a Plan (else its production/newest version 100 %)."""
    from ..store import serving_rollouts as sr

    row = sr.get(store, model)
    if row is not None:
        return plan_of(model, row["layout"]), row
    return make_plan(model), None


def _control(plan: Plan, row: dict | None) -> tuple[str, int]:
    c = row["layout"].get("canary") if row else None
    if row is not None and row["state"] == "ramping" and c:
        return c["control"], c["control_version"]
    name = plan.control
    return name, next(v for n, v, _ in plan.variants if n == name)


def set_split(
    store: Any, model: str, split: str | None, shadow: str | None, user: str
) -> dict[str, Any]:
    """A fixed layout: `split` (with `shadow`), or the current variants with a new shadow."""
    if split is None and shadow is None:
        raise InvalidInputError("give --split, --canary or --shadow")
    if split is not None:
        plan = make_plan(model, split, shadow)
        return _store(store, plan, None, "serving", plan.reason(), user)
    if not isinstance(shadow, str) or not shadow.strip():
        raise InvalidInputError("--shadow needs a variant: vN, a stage or an alias")
    cur, row = _current(store, model)
    info = resolve_variant(model, shadow.strip())
    plan = Plan(model, cur.variants, (shadow.strip(), info["version"]), cur.split_text)
    # a new shadow leaves a ramping canary where it is
    canary = row["layout"].get("canary") if row else None
    state = row["state"] if row and canary else "serving"
    return _store(store, plan, canary, state, plan.reason(), user)


def start_canary(
    store: Any,
    model: str,
    canary: str,
    ramp: str | None = None,
    every: float = DEFAULT_EVERY,
    shadow: str | None = None,
    rules: Rules | None = None,
    user: str = "",
) -> dict[str, Any]:
    """Start a canary of variant `canary` at the ramp's first step against the current
    control (the stored layout's, else the production version)."""
    steps = parse_ramp(ramp or DEFAULT_RAMP)
    if not isinstance(canary, str) or not canary.strip():
        raise InvalidInputError("--canary needs a variant: vN, a stage or an alias")
    canary = canary.strip()
    info = resolve_variant(model, canary)
    cur, row = _current(store, model)
    control, cv = _control(cur, row)
    if info["version"] == cv or canary == control:
        raise InvalidInputError(
            f"the canary {canary} (v{info['version']}) is the control itself ({control}, v{cv})"
        )
    sh = None
    if shadow is not None:
        sh_info = resolve_variant(model, shadow.strip())
        sh = (shadow.strip(), sh_info["version"])
    sp = canary_split(canary, control, steps[0])
    vers = {canary: info["version"], control: cv}
    plan = Plan(model, [(n, vers[n], w) for n, w in sp.weights], sh)
    now = time.time()
    c = {
        "name": canary,
        "version": info["version"],
        "control": control,
        "control_version": cv,
        "ramp": steps,
        "every": float(every),
        "step": 0,
        "started": now,
        "step_started": now,
        "rules": asdict(rules or Rules()),
    }
    state = "promoted" if steps[0] >= 100 else "ramping"
    ramp_text = ",".join(f"{s:g}" for s in steps)
    reason = (
        f"canary {canary} (v{info['version']}) against {control} (v{cv}): ramp {ramp_text} "
        f"every {every:g} s; step 1: {steps[0]:g} %"
    )
    return _store(store, plan, c, state, reason, user)


def rollback(store: Any, model: str, reason: str | None, user: str) -> dict[str, Any]:
    """Back to the control at 100 % (a canary's control, else the heaviest variant)."""
    from ..store import serving_rollouts as sr

    for _ in range(20):  # compare-and-set: a controller may step meanwhile
        cur, row = _current(store, model)
        if row is None:
            raise InvalidInputError(f"no rollout of {model!r} is stored: nothing to roll back")
        control, cv = _control(cur, row)
        why = f"rollback to {control} (v{cv})" + (f": {reason}" if reason else "")
        c = row["layout"].get("canary")
        if c and c.get("control") == control:
            if _rollback(store, model, row, why, None, user):
                return sr.get(store, model)
            continue
        sh = _shadow(row["layout"])
        plan = Plan(model, [(control, cv, BUCKETS)], sh)
        got = sr.set_layout(
            store, model, layout_of(plan, c), "rolled back", why, user, row["generation"]
        )
        if got is not None:
            return sr.get(store, model)
    raise InvalidInputError(f"the rollout of {model!r} kept changing; try again")


def promote(store: Any, model: str, user: str) -> dict[str, Any]:
    """The ramping canary to 100 % now."""
    from ..store import serving_rollouts as sr

    for _ in range(20):
        row = sr.get(store, model)
        c = row["layout"].get("canary") if row else None
        if row is None or not c or row["state"] != "ramping":
            raise InvalidInputError(f"{model!r} has no canary ramping: nothing to promote")
        plan = Plan(model, [(c["name"], c["version"], BUCKETS)], _shadow(row["layout"]))
        c2 = {**c, "step": len(c["ramp"]) - 1, "step_started": time.time()}
        reason = f"canary {c['name']} (v{c['version']}) promoted to 100 % by hand"
        g = sr.set_layout(
            store, model, layout_of(plan, c2), "promoted", reason, user, row["generation"]
        )
        if g is not None:
            return sr.get(store, model)
    raise InvalidInputError(f"the rollout of {model!r} kept changing; try again")


def _store(
    store: Any, plan: Plan, canary: dict | None, state: str, reason: str, user: str
) -> dict[str, Any]:
    from ..store import serving_rollouts as sr

    sr.set_layout(store, plan.model, layout_of(plan, canary), state, reason, user)
    row = sr.get(store, plan.model)
    assert row is not None
    return row


def show(store: Any, model: str) -> dict[str, Any]:
    """The stored rollout with its history (the audit log's rollout entries) and the
    layouts that workers refused (`refused`: serving_rollouts.refusals)."""
    from ..store import registry as rs
    from ..store import serving_rollouts as sr

    row = sr.get(store, model)
    if row is None:
        make_plan(model)  # an unknown model is a clear error
        raise InvalidInputError(
            f"no rollout of {model!r} is stored (serving what it is started with)"
        )
    hist = [
        {"ts": r[0], "reason": r[7], "user": r[8]}
        for r in rs.audit_log(store, model)
        if r[3] == "rollout"
    ]
    # the layouts some workers could not load (the newest five), with the load errors
    refused = sr.refusals(store, model, last=5)
    return {**row, "layout_text": describe(row["layout"]), "history": hist, "refused": refused}
