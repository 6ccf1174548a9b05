"""REST routes of the sidebar's Loop view (issue #23): registered models with their stages,
gate verdicts, approvals the watcher waits for, its signals, and the lineage graph.

    GET  /mlops/api/v1/loop
        {"models": [{name, versions, latest, production, staging, last_gate, pending,
        signals, policy}]}: every registered model, by name. `production` is a version
        number or null, `staging` a list, `last_gate` the newest verdict of any version
        ({id, version, passed, baseline_version, time}) or null, `pending` how many
        versions wait for an approval, `signals` the watcher's signals of the model's rules
        counted by state.
    GET  /mlops/api/v1/loop/{model}
        The model as listed, plus "versions" (newest first, at most MAX_VERSIONS, each with
        its newest gate verdict in full, the number of verdicts and its approval),
        "pending" (versions a watcher chain waits on for an approval: rule, signal, since,
        gate), "signals" (every signal of the model's rules, newest first, with state,
        step, version and the reason of a failure), "decisions" (approve/reject lines of
        the audit log, newest first) and "lineage" (ModelLineage.to_dict()).
    POST /mlops/api/v1/loop/{model}/approve    body {"version": V, "reason": "..."}
    POST /mlops/api/v1/loop/{model}/reject     (the same body)
        Records the decision as `mlops-jupyter approve NAME --version V [--reject]` does
        (loop_state.set_approval: the approvals table and the audit log); answers
        {"model", "version", "decision", "reason", "user", "time"}. The user is the Jupyter
        user (the server's login name when Jupyter's identity is the anonymous one of a
        plain token, as for the command line), or "token NAME" on the tracking server,
        where this route needs a token with write scope.

Unknown models and versions are 404 answers, a bad body a 400, all JSON. The watcher's
signals name a rule, not a model: a rule's model is the `loop.model` tag of the runs its
chains made. Names and texts are stored user text; the view shows them as text only."""

from __future__ import annotations

import json
import re
from typing import Any

import tornado.web

from ..errors import InvalidInputError, RunNotFoundError
from ..store.db import Store
from .handlers import BaseHandler

MAX_VERSIONS = 50  # the newest versions shown in a model's detail
MAX_SIGNALS = 100
MAX_DECISIONS = 50
MAX_REASON = 2000
_ANONYMOUS = re.compile(r"[0-9a-f]{32}")  # jupyter_server's anonymous user id (uuid4 hex)


def _not_found(e: Exception) -> RunNotFoundError:
    return RunNotFoundError(str(e))  # the API's 404


def rule_models(store: Store) -> dict[str, str]:
    """{rule: model} from the tags of the watcher's chain runs (newest run wins)."""
    rows = store.read(
        "SELECT r.value, m.value FROM tags r JOIN tags m ON m.run_id = r.run_id"
        " WHERE r.key='loop.rule' AND m.key='loop.model' ORDER BY r.run_id",
        (),
    )
    out: dict[str, str] = {}
    for rule, model in rows:
        try:
            rule, model = json.loads(rule), json.loads(model)
        except (TypeError, ValueError):
            pass
        out[str(rule)] = str(model)
    return out


def _signal(s: dict[str, Any], model: str) -> dict[str, Any]:
    d = s["detail"] if isinstance(s["detail"], dict) else {}
    return {
        "model": model,
        "rule": s["rule"],
        "signal": s["signal"],
        "state": s["state"],
        "waiting_for": d.get("waiting_for") if s["state"] == "waiting" else None,
        "version": d.get("version"),
        "step": d.get("step"),
        "gate": d.get("gate"),
        "reason": d.get("reason"),
        "asked": d.get("asked"),
        "info": d.get("info"),
        "runs": d.get("runs") or [],
        "owner": s["owner"],
        "created": s["created"],
        "updated": s["updated"],
    }


def _signals_by_model(store: Store) -> dict[str, list[dict[str, Any]]]:
    from ..store import loop_state

    models = rule_models(store)
    out: dict[str, list[dict[str, Any]]] = {}
    for s in loop_state.signals(store):
        model = models.get(s["rule"])
        if model is not None:
            out.setdefault(model, []).append(_signal(s, model))
    return out


def _pending(store: Store, name: str, signals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Versions a waiting chain asks an approval for, not decided yet (one per version)."""
    from ..store import loop_state

    out: dict[int, dict[str, Any]] = {}
    for s in signals:
        v = s["version"]
        if s["state"] != "waiting" or s["waiting_for"] != "approval" or not isinstance(v, int):
            continue
        if v in out or loop_state.get_approval(store, name, v) is not None:
            continue
        out[v] = {"version": v, "rule": s["rule"], "signal": s["signal"],
                  "since": s["asked"] or s["updated"], "gate": s["gate"]}  # fmt: skip
    return sorted(out.values(), key=lambda p: -p["version"])


def _gate_brief(g: dict[str, Any] | None) -> dict[str, Any] | None:
    if g is None:
        return None
    return {k: g[k] for k in ("id", "version", "passed", "baseline_version", "time")}


def _gate_full(g: dict[str, Any]) -> dict[str, Any]:
    rep = g["report"] if isinstance(g["report"], dict) else {}
    return {
        **_gate_brief(g),
        "data_id": g["data_id"],
        "user": g["user"],
        "n": rep.get("n"),
        "results": rep.get("results") or [],
        # anything else a report carries (evaluation slices, ...) as it is
        "extra": {k: v for k, v in rep.items() if k not in _REPORT_KNOWN},
    }


_REPORT_KNOWN = {"id", "model", "candidate", "baseline", "data_id", "n", "passed", "created",
                 "results"}  # fmt: skip


def _summary(
    name: str,
    versions: list[dict[str, Any]],
    gates: list[dict[str, Any]],
    signals: list[dict[str, Any]],
    pending: int,
    policy: dict[str, Any],
) -> dict[str, Any]:
    states: dict[str, int] = {}
    for s in signals:
        states[s["state"]] = states.get(s["state"], 0) + 1
    prod = [v["version"] for v in versions if v["stage"] == "production"]
    return {
        "name": name,
        "versions": len(versions),
        "latest": max((v["version"] for v in versions), default=None),
        "production": max(prod) if prod else None,
        "staging": sorted(v["version"] for v in versions if v["stage"] == "staging"),
        "last_gate": _gate_brief(gates[-1]) if gates else None,
        "pending": pending,
        "signals": states,
        "policy": policy,
    }


def list_models(store: Store) -> dict[str, Any]:
    """Every registered model with its stages, newest gate, pending approvals, signals."""
    from ..store import gates as gstore
    from ..store import registry as rs
    from ..store.api_queries import clean

    by_model: dict[str, list[dict[str, Any]]] = {}
    for v in rs.list_versions(store):
        by_model.setdefault(v["name"], []).append(v)
    gates: dict[str, list[dict[str, Any]]] = {}
    for g in gstore.list_gates(store):
        gates.setdefault(g["model"], []).append(g)
    signals = _signals_by_model(store)
    models = []
    for name in rs.model_names(store):
        sig = signals.get(name, [])
        pending = len(_pending(store, name, sig))
        models.append(
            _summary(
                name,
                by_model.get(name, []),
                gates.get(name, []),
                sig,
                pending,
                gstore.get_policy(store, name),
            )  # fmt: skip
        )
    return clean({"models": models})


def model_detail(store: Store, name: str) -> dict[str, Any]:
    """Everything the Loop view shows for model `name` (see the module docstring)."""
    from ..loop.lineage import lineage_in
    from ..store import gates as gstore
    from ..store import loop_state
    from ..store import registry as rs
    from ..store.api_queries import clean

    if name not in rs.model_names(store):
        raise RunNotFoundError(f"no registered model named {name!r}")
    versions = rs.list_versions(store, name)
    gates = gstore.list_gates(store, name)
    signals = _signals_by_model(store).get(name, [])
    pending = _pending(store, name, signals)
    out = _summary(name, versions, gates, signals, len(pending), gstore.get_policy(store, name))
    newest: dict[int, dict[str, Any]] = {}
    counts: dict[int, int] = {}
    for g in gates:  # oldest first: the last one seen is the newest
        newest[g["version"]] = g
        counts[g["version"]] = counts.get(g["version"], 0) + 1
    out["versions"] = [
        {
            "version": v["version"],
            "stage": v["stage"],
            "aliases": v["aliases"],
            "run_id": v["run_id"],
            "created": v["created"],
            "created_by": v["created_by"],
            "gate": _gate_full(newest[v["version"]]) if v["version"] in newest else None,
            "gates": counts.get(v["version"], 0),
            "approval": loop_state.get_approval(store, name, v["version"]),
        }
        for v in versions[:MAX_VERSIONS]
    ]
    out["pending"] = pending
    out["signals"] = sorted(signals, key=lambda s: -(s["updated"] or 0))[:MAX_SIGNALS]
    decisions = [
        {"time": ts, "version": ver, "action": act, "reason": reason, "user": who}
        for ts, _m, ver, act, _f, _t, _a, reason, who in rs.audit_log(store, name)
        if act in ("approve", "reject")
    ]
    out["decisions"] = decisions[::-1][:MAX_DECISIONS]
    try:
        out["lineage"] = lineage_in(store, name).to_dict()
    except rs.ModelNotFoundError as e:  # removed since the check above
        raise _not_found(e) from None
    return clean(out)


def parse_decision(body: bytes | None) -> tuple[int, str | None]:
    """(version, reason) from a POST body {"version": V, "reason": "..."}; a clear error
    for anything else."""
    from ..registry import _check_version
    from ..store.runs import check_text

    try:
        data = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError('the body must be JSON: {"version": V, "reason": "..."}') from None
    if not isinstance(data, dict):
        raise InvalidInputError('the body must be a JSON object: {"version": V, "reason": "..."}')
    unknown = sorted(set(data) - {"version", "reason"})
    if unknown:
        raise InvalidInputError(f"unknown field(s) {unknown}: expected 'version' and 'reason'")
    if "version" not in data:
        raise InvalidInputError("'version' is required")
    version = _check_version(data["version"])
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInputError("'reason' must be a string")
    if isinstance(reason, str):
        reason = reason.strip() or None
        if reason is not None and len(reason) > MAX_REASON:
            raise InvalidInputError(f"'reason' is longer than {MAX_REASON} characters")
        check_text(reason, "reason")
    return version, reason


def decide(
    store: Store, name: str, version: int, reject: bool, reason: str | None, user: str
) -> dict[str, Any]:
    """Record an approval (or rejection) of `name` v`version` as mj.approve does."""
    from ..store import loop_state
    from ..store import registry as rs

    decision = "rejected" if reject else "approved"
    try:
        loop_state.set_approval(store, name, version, decision, reason, user)
    except rs.ModelNotFoundError as e:
        raise _not_found(e) from None
    got = loop_state.get_approval(store, name, version) or {}
    return {"model": name, "version": version, **got}


class LoopModels(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(lambda: list_models(self.store()))


class LoopModel(BaseHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        # tornado has already percent-decoded the name
        await self.answer(lambda: model_detail(self.store(), name))


class LoopDecision(BaseHandler):
    @tornado.web.authenticated
    async def post(self, name: str, action: str) -> None:
        user = self.who()
        body = self.request.body

        def run() -> dict[str, Any]:
            version, reason = parse_decision(body)
            return decide(self.store(), name, version, action == "reject", reason, user)

        await self.answer(run)

    def who(self) -> str:
        """The audit log's user: the tracking server's token, else the Jupyter user."""
        from ..registry import _user

        user = self.current_user
        if isinstance(user, str):  # the tracking server: the token's name
            return f"token {user}"
        name = getattr(user, "username", None)
        if not isinstance(name, str) or not name or _ANONYMOUS.fullmatch(name):
            return _user()  # a plain token's anonymous identity: the server's login
        return name


def loop_routes() -> list[tuple[str, type]]:
    """Routes (relative to the API prefix) to register before the catch-all."""
    return [
        (r"/loop", LoopModels),
        (r"/loop/([^/]+)", LoopModel),
        (r"/loop/([^/]+)/(approve|reject)", LoopDecision),
    ]
