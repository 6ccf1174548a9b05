"""The closed loop's routes (loop_routes.py) in the tracking server's OpenAPI description."""

from __future__ import annotations

from typing import Any

from ..store.loop_state import STATES as _STATES

_S = {"type": "string"}
_INT = {"type": "integer", "minimum": 1}
_MODEL = {"name": "name", "in": "path", "required": True, "schema": _S}
# the client's request key: a write sent again with it (a retry) has no second effect
_REQ_KEY = {"type": "string", "minLength": 1, "maxLength": 64}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer"}}


def _q(name: str, schema: dict | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema or _S}


def openapi_paths(op: Any, obj: Any) -> dict[str, Any]:
    """This module's routes in the OpenAPI description (`op`, `obj`: openapi's helpers)."""
    result = obj(
        {
            "rule": _S,
            "status": {"type": "string", "enum": ["pass", "fail", "skipped"]},
            "detail": _S,
            "evidence": {"type": "object"},
        },
        ["rule", "status"],
    )
    report = obj(
        {
            "results": {"type": "array", "items": result, "minItems": 1},
            "passed": {"type": "boolean"},
            "n": {"type": "integer", "minimum": 0},
            "baseline": {**_INT, "nullable": True},
            "data_id": {**_S, "nullable": True},
            "created": {"type": "number"},
        },
        ["results", "passed", "n"],
    )
    key = {"type": "string", "minLength": 1, "maxLength": 1000}
    signal = {"rule": key, "signal": key, "owner": key, "detail": {"type": "object"}}
    resume = {k: signal[k] for k in ("rule", "signal", "owner")}
    return {
        "/api/v1/loop/signals": {
            "get": op(
                "the watcher's handled signals, oldest first",
                params=[_q("rule"), _q("state", {"type": "string", "enum": list(_STATES)})],
            ),
            "post": op(
                "claim a signal for a watcher (compare-and-set; write scope): claimed, owner",
                obj(signal, ["rule", "signal", "owner"]),
            ),
        },
        "/api/v1/loop/signals/resume": {
            "post": op(
                "take a waiting signal back to running (compare-and-set); its detail or null."
                " Sent again with the same key: the same answer, nothing changed",
                obj({**resume, "key": _REQ_KEY}, ["rule", "signal", "owner"]),
            )
        },
        "/api/v1/loop/signals/state": {
            "put": op(
                "set a claimed signal's state and detail",
                obj(
                    {
                        "rule": key,
                        "signal": key,
                        "state": {"type": "string", "enum": list(_STATES)},
                        "detail": {"type": "object"},
                        "owner": key,
                    },
                    ["rule", "signal", "state"],
                ),
            )
        },
        "/api/v1/models/{name}/drift-alerts": {
            "get": op("drift alerts serving raised on the model's inputs", params=[_MODEL])
        },
        "/api/v1/gates": {
            "get": op(
                "stored gate verdicts, oldest first (of one model: ?model=, one version: ?version=)",
                params=[_q("model"), _q("version", _INT)],
            )
        },
        "/api/v1/models/{name}/versions/{version}/gates": {
            "post": op(
                "store a gate verdict the client computed (write scope); answers its id."
                " Sent again with the same key: the first verdict's id, nothing stored",
                obj(
                    {"report": report, "summary": _S, "user": _S, "key": _REQ_KEY},
                    ["report", "summary"],
                ),
                [_MODEL, _VERSION],
            )
        },
        "/api/v1/models/{name}/versions/{version}/latest-gate": {
            "get": op(
                "the newest verdict of a version against ?baseline= (absent: no production)",
                params=[_MODEL, _VERSION, _q("baseline", _INT)],
            )
        },
        "/api/v1/models/{name}/versions/{version}/approval": {
            "get": op("the approval decision on a version, or null", params=[_MODEL, _VERSION]),
            "post": op(
                "approve or reject promoting a version (write scope; audited)",
                obj(
                    {
                        "decision": {"type": "string", "enum": ["approved", "rejected"]},
                        "reason": _S,
                        "user": _S,
                    },
                    ["decision"],
                ),
                [_MODEL, _VERSION],
            ),
        },
        "/api/v1/models/{name}/policy": {
            "get": op("the model's promotion policy ({} when none)", params=[_MODEL]),
            "put": op(
                "set the model's promotion policy (admin scope; audited)",
                obj({"require_gate": {"type": "boolean"}, "user": _S}),
                [_MODEL],
            ),
        },
        "/api/v1/models/{name}/card-fields": {
            "get": op("the user-written fields of the model's card", params=[_MODEL]),
            "patch": op(
                "merge card fields (a null value removes one; write scope; audited)",
                obj({"fields": {"type": "object"}, "user": _S}, ["fields"]),
                [_MODEL],
            ),
        },
        "/api/v1/models/{name}/card": {
            "get": op(
                "everything a version's model card shows (default: production, else newest)",
                params=[_MODEL, _q("version", _INT)],
            )
        },
        "/api/v1/models/{name}/lineage": {
            "get": op(
                "the model's lineage graph: nodes and typed edges (of every version, or one)",
                params=[_MODEL, _q("version", _INT)],
            )
        },
    }
