"""The optuna storage route (optuna_routes.py) in the tracking server's OpenAPI
description."""

from __future__ import annotations

from typing import Any

from .optuna_routes import METHODS, READ


def paths(op: Any, obj: Any) -> dict[str, Any]:
    """`/api/v1/optuna/{method}`: the method is one of a closed list; its arguments are
    the JSON body (remote/optuna_storage.py documents each)."""
    _I = {"type": "integer", "minimum": 0}
    _S = {"type": "string"}
    _num = {"oneOf": [{"type": "number"}, {"type": "string", "enum": ["nan", "inf", "-inf"]}]}
    body = obj(
        {
            "study_id": _I,
            "trial_id": _I,
            "trial_number": _I,
            "study_name": _S,
            "directions": {
                "type": "array",
                "items": {"type": "string", "enum": ["MINIMIZE", "MAXIMIZE"]},
            },
            "key": _S,
            "value": {"oneOf": [_S, _num]},
            "retry": {"type": "boolean"},
            "template": {"type": "object"},
            "param_name": _S,
            "param_value_internal": _num,
            "distribution": _S,
            "state": {
                "type": "string",
                "enum": ["RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING"],
            },
            "values": {"type": "array", "items": _num, "nullable": True},
            "step": _I,
            "since_id": {"type": "integer", "minimum": -1},
            "include": {"type": "array", "items": _I},
            "grace_s": {"type": "integer", "minimum": 1},
        }
    )
    method = {
        "name": "method",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(METHODS)},
        "description": f"read scope: {', '.join(READ)}; the others need write",
    }
    return {
        "/api/v1/optuna/{method}": {
            "post": op(
                "one call of optuna's storage contract on the store's study storage;"
                " answers {result}",
                body,
                [method],
            )
        }
    }
