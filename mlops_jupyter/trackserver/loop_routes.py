"""The closed loop over the tracking server: gate verdicts, promotion policies, approvals,
model-card fields, model cards, lineage graphs (client: remote/loop.py), so `mj.gate`,
`mj.gates`, `mj.set_model_policy`, `mj.approve`, `mj.model_card`, `mj.lineage` and
`mj.audit` work for a remote client as on a local store.

A gate is evaluated in the client (it loads both models through the registry routes); the
server stores the verdict it sends, after checking its shape and that a verdict claiming
"passed" has no failing rule. Cards and lineage graphs are collected here, from the store,
by the same functions a local client runs (loop/card.py collect_in, loop/lineage.py
lineage_in); the client renders them. Reads answer what the store functions answer, as
on a local store (a model without a policy: {}; a version nobody decided on: null).

Scopes: reads need `read`; storing a gate verdict, approving or rejecting a version and
writing card fields, and the watcher's claims and state changes (`/api/v1/loop/signals`),
need `write`; setting a model's policy needs `admin` (a policy decides what may enter
production, which itself needs admin). Every change is in the registry's
audit log under the token's name (and the login name the client reports). The policy is
applied by the server itself when a version is promoted (registry_routes.py ->
registry.promote_in), so a client cannot skip it."""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidInputError
from ..store import cards, loop_state
from ..store import gates as gstore
from ..store import registry as rs
from ..store import runs as rstore
from .app import HTTPError, check_value
from .registry_routes import _Handler, _name, _version
from .run_files import MAX_EVENT_KEY

_STATUSES = ("pass", "fail", "skipped")
_MAX_TEXT = 100_000  # a summary, a rule's name or detail: far above any real one


def _text(v: Any, what: str, optional: bool = True) -> str | None:
    if v is None and optional:
        return None
    check_value(isinstance(v, str) and len(v) <= _MAX_TEXT, f"{what!r} must be a string")
    rstore.check_text(v, what)
    return v


def request_key(body: dict) -> str | None:
    """The client's request key ("key", optional): a write sent again with the same key
    (a retry after a lost answer) answers as the first did and changes nothing."""
    v = body.get("key")
    if v is None:
        return None
    check_value(
        isinstance(v, str) and 0 < len(v) <= MAX_EVENT_KEY, f"'key': 1 to {MAX_EVENT_KEY} chars"
    )
    rstore.check_text(v, "key")
    return v


def _opt_version(v: Any, what: str) -> int | None:
    if v is None:
        return None
    check_value(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{what!r}: a version")
    return v


def _gate_body(body: dict) -> dict[str, Any]:
    """The verdict a client sends, checked: report (its results), baseline, data id, summary."""
    report = body.get("report")
    check_value(isinstance(report, dict), "'report' must be an object")
    results = report.get("results")
    check_value(
        isinstance(results, list) and bool(results), "'report.results' must be a non-empty list"
    )
    for i, r in enumerate(results):
        check_value(isinstance(r, dict), f"'report.results[{i}]' must be an object")
        _text(r.get("rule"), f"report.results[{i}].rule", optional=False)
        check_value(r.get("status") in _STATUSES, f"'report.results[{i}].status': {_STATUSES}")
        _text(r.get("detail"), f"report.results[{i}].detail")
        ev = r.get("evidence")
        check_value(ev is None or isinstance(ev, dict), f"'report.results[{i}].evidence': object")
    passed = report.get("passed")
    check_value(isinstance(passed, bool), "'report.passed' must be true or false")
    ran = [r["status"] for r in results if r["status"] != "skipped"]
    if passed and not (ran and all(s == "pass" for s in ran)):
        raise HTTPError(
            400,
            "INVALID_PARAMETER_VALUE",
            "the report says passed but a rule failed or none ran: nothing recorded",
        )
    n = report.get("n")
    check_value(isinstance(n, int) and not isinstance(n, bool) and n >= 0, "'report.n' >= 0")
    baseline = _opt_version(report.get("baseline"), "report.baseline")
    data_id = _text(report.get("data_id"), "report.data_id")
    summary = _text(body.get("summary"), "summary", optional=False)
    try:
        json.dumps(report, allow_nan=False)
    except (TypeError, ValueError):
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", "'report' must be plain JSON") from None
    return {
        "report": report,
        "passed": passed,
        "baseline": baseline,
        "data_id": data_id,
        "summary": summary,
    }


class GatesHandler(_Handler):
    """GET ?model=&version=: stored gate verdicts, oldest first (as mj.gates)."""

    async def get(self) -> None:
        def go() -> dict:
            name = self.get_query_argument("model", None)
            v = self.get_query_argument("version", None)
            version = _version(v) if v is not None else None
            if name is not None:
                _name(name)
            rows = gstore.list_gates(self.store, name, version)
            if name is not None and not rows:
                rs.find_version(self.store, name, version)  # 404 for an unknown model/version
            return {"gates": rows}

        await self.go(go)


class VersionGatesHandler(_Handler):
    """POST {"report", "summary", "user"?, "key"?}: store a gate verdict of this version;
    its id (the first verdict's, and nothing stored, when `key` was sent before)."""

    async def post(self, name: str, version: str) -> None:
        def go() -> dict:
            body = self.body_json()
            n, v = _name(name), _version(version)
            g = _gate_body(body)
            report = {**g["report"], "model": n, "candidate": v, "id": None}
            gid = gstore.save_gate(
                self.store,
                n,
                v,
                g["baseline"],
                g["data_id"],
                g["passed"],
                report,
                self.who(body),
                g["summary"],
                request_key(body),
            )
            return {"id": gid}

        await self.go(go)


class LatestGateHandler(_Handler):
    """GET ?baseline=: the newest verdict of this version against `baseline` (absent:
    against no production version), or null."""

    async def get(self, name: str, version: str) -> None:
        def go() -> dict:
            b = self.get_query_argument("baseline", None)
            base = _version(b) if b is not None else None
            n, v = _name(name), _version(version)
            return {"gate": gstore.latest_gate(self.store, n, v, base)}

        await self.go(go)


class PolicyHandler(_Handler):
    """GET: the model's policy ({} when none). PUT {"require_gate", "user"?} (admin)."""

    def needed_scope(self) -> str:
        return "read" if self.request.method in ("GET", "HEAD") else "admin"

    async def get(self, name: str) -> None:
        def go() -> dict:
            n = _name(name)
            return {"policy": gstore.get_policy(self.store, n)}

        await self.go(go)

    async def put(self, name: str) -> None:
        def go() -> dict:
            body = self.body_json()
            req = body.get("require_gate", False)
            check_value(isinstance(req, bool), "'require_gate' must be true or false")
            policy = {"require_gate": True} if req else {}
            gstore.set_policy(self.store, _name(name), policy, self.who(body))
            return {"policy": policy}

        await self.go(go)


class ApprovalHandler(_Handler):
    """GET: the decision on this version, or null. POST {"decision": approved|rejected,
    "reason"?, "user"?}: record it (audited under the token's name)."""

    async def get(self, name: str, version: str) -> None:
        def go() -> dict:
            n, v = _name(name), _version(version)
            return {"approval": loop_state.get_approval(self.store, n, v)}

        await self.go(go)

    async def post(self, name: str, version: str) -> None:
        def go() -> dict:
            body = self.body_json()
            n, v = _name(name), _version(version)
            decision = body.get("decision")
            check_value(decision in ("approved", "rejected"), "'decision': approved or rejected")
            reason = _text(body.get("reason"), "reason")
            loop_state.set_approval(self.store, n, v, decision, reason, self.who(body))
            return {"approval": loop_state.get_approval(self.store, n, v)}

        await self.go(go)


class CardFieldsHandler(_Handler):
    """GET: the user-written card fields. PATCH {"fields": {...}, "user"?}: merge them (a
    null value removes a field); answers the fields now stored."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            n = _name(name)
            return {"fields": cards.get_fields(self.store, n)}

        await self.go(go)

    async def patch(self, name: str) -> None:
        def go() -> dict:
            body = self.body_json()
            fields = body.get("fields")
            check_value(
                isinstance(fields, dict) and bool(fields), "'fields' must be a non-empty object"
            )
            owners = fields.get("owners")
            check_value(
                owners is None
                or (isinstance(owners, list) and all(isinstance(o, str) for o in owners)),
                "'fields.owners' must be a list of names",
            )
            for k in fields:
                rstore.check_text(k, "card field name")
            rstore.check_text(json.dumps(fields, ensure_ascii=False), "card fields")
            return {"fields": cards.set_fields(self.store, _name(name), fields, self.who(body))}

        await self.go(go)


class CardHandler(_Handler):
    """GET ?version=: everything the model card shows (loop/card.py collect_in)."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            from ..loop.card import collect_in

            v = self.get_query_argument("version", None)
            return {"card": collect_in(self.store, _name(name), _version(v) if v else None)}

        await self.go(go)


class LineageHandler(_Handler):
    """GET ?version=: the model's lineage graph (nodes, edges), of every version or one."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            from ..loop.lineage import lineage_in

            v = self.get_query_argument("version", None)
            try:
                g = lineage_in(self.store, _name(name), _version(v) if v else None)
            except InvalidInputError as e:
                raise HTTPError(400, "INVALID_PARAMETER_VALUE", str(e)) from None
            return g.to_dict()

        await self.go(go)


# -- the watcher's state (store/loop_state.py) ---------------------------------------------
def _key(body: dict, k: str) -> str:
    v = body.get(k)
    check_value(isinstance(v, str) and 0 < len(v) <= 1000, f"{k!r}: 1-1000 characters")
    rstore.check_text(v, k)
    return v


def _detail(body: dict) -> dict[str, Any]:
    d = body.get("detail", {})
    check_value(isinstance(d, dict), "'detail' must be an object")
    return d


class SignalsHandler(_Handler):
    """GET ?rule=&state=: handled signals, oldest first. POST {"rule", "signal", "detail",
    "owner"}: claim a signal (compare-and-set): {"claimed", "owner"} (the owner holding it)."""

    async def get(self) -> None:
        def go() -> dict:
            rule = self.get_query_argument("rule", None)
            state = self.get_query_argument("state", None)
            check_value(state is None or state in loop_state.STATES, f"state: {loop_state.STATES}")
            rstore.check_text(rule, "rule")
            return {"signals": loop_state.signals(self.store, rule, state)}

        await self.go(go)

    async def post(self) -> None:
        def go() -> dict:
            body = self.body_json()
            rule, signal, owner = _key(body, "rule"), _key(body, "signal"), _key(body, "owner")
            claimed = loop_state.claim(self.store, rule, signal, _detail(body), owner)
            holder = next(
                (s["owner"] for s in loop_state.signals(self.store, rule) if s["signal"] == signal),
                None,
            )
            return {"claimed": claimed, "owner": holder}

        await self.go(go)


class SignalResumeHandler(_Handler):
    """POST {"rule", "signal", "owner", "key"?}: take a waiting signal back to running
    (compare-and-set); {"detail"}: its detail, or null when it was not waiting. Sent again
    with the same key: the same answer while the owner still runs it, nothing changed."""

    async def post(self) -> None:
        def go() -> dict:
            body = self.body_json()
            rule, signal, owner = _key(body, "rule"), _key(body, "signal"), _key(body, "owner")
            key = request_key(body)
            return {"detail": loop_state.resume(self.store, rule, signal, owner, key)}

        await self.go(go)


class SignalStateHandler(_Handler):
    """PUT {"rule", "signal", "state", "detail", "owner"?}: set a claimed signal's state and
    detail (with "owner": only while that watcher holds it) -> {"updated"}."""

    async def put(self) -> None:
        def go() -> dict:
            body = self.body_json()
            rule, signal = _key(body, "rule"), _key(body, "signal")
            state = body.get("state")
            check_value(state in loop_state.STATES, f"'state' must be one of {loop_state.STATES}")
            if not any(s["signal"] == signal for s in loop_state.signals(self.store, rule)):
                raise HTTPError(
                    404, "RESOURCE_DOES_NOT_EXIST", f"rule {rule!r} has no signal {signal!r}"
                )
            owner = body.get("owner")
            if owner is not None:
                owner = _key(body, "owner")
            updated = loop_state.update(self.store, rule, signal, state, _detail(body), owner)
            return {"updated": updated}

        await self.go(go)


class DriftAlertsHandler(_Handler):
    """GET: the drift alerts serving raised on the model's inputs, newest first."""

    async def get(self, name: str) -> None:
        await self.go(lambda: {"alerts": loop_state.drift_alerts(self.store, _name(name))})


ROUTES = [
    (r"/api/v1/loop/signals", SignalsHandler),
    (r"/api/v1/loop/signals/resume", SignalResumeHandler),
    (r"/api/v1/loop/signals/state", SignalStateHandler),
    (r"/api/v1/models/([^/]+)/drift-alerts", DriftAlertsHandler),
    (r"/api/v1/gates", GatesHandler),
    (r"/api/v1/models/([^/]+)/versions/([^/]+)/gates", VersionGatesHandler),
    (r"/api/v1/models/([^/]+)/versions/([^/]+)/latest-gate", LatestGateHandler),
    (r"/api/v1/models/([^/]+)/versions/([^/]+)/approval", ApprovalHandler),
    (r"/api/v1/models/([^/]+)/policy", PolicyHandler),
    (r"/api/v1/models/([^/]+)/card-fields", CardFieldsHandler),
    (r"/api/v1/models/([^/]+)/card", CardHandler),
    (r"/api/v1/models/([^/]+)/lineage", LineageHandler),
]
