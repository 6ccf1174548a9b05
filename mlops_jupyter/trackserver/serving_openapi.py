"""Serving's routes (serving_routes.py) in the tracking server's OpenAPI description."""

from __future__ import annotations

from typing import Any

_S = {"type": "string"}
_NUM = {"type": "number"}
_MODEL = {"name": "name", "in": "path", "required": True, "schema": _S}


def _q(name: str, schema: dict | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema or _S}


def openapi_paths(op: Any, obj: Any) -> dict[str, Any]:
    """This module's routes in the OpenAPI description (`op`, `obj`: openapi's helpers)."""
    row = {
        "type": "array",
        "minItems": 12,
        "maxItems": 12,
        "description": "request_id, model, version, variant, ts, latency_ms, status, error, "
        "n_rows, batch_size, outputs, worker",
        "items": {},
    }
    window = obj(
        {
            "model": _S,
            "version": {"type": "integer", "minimum": 1},
            "variant": _S,
            "worker": {**_S, "nullable": True},
            "window_start": _NUM,
            "window_end": _NUM,
            "n_rows": {"type": "integer", "minimum": 0},
            "n_sampled": {"type": "integer", "minimum": 0},
            "n_requests": {"type": "integer", "minimum": 0},
            "profile": {"type": "array", "items": {"type": "object"}},
            "reference": {**_S, "nullable": True},
            "drifted": {"type": "boolean", "nullable": True},
            "drift_share": {**_NUM, "nullable": True},
            "drift": {"type": "object", "nullable": True},
        },
        [
            "model",
            "version",
            "variant",
            "window_start",
            "window_end",
            "n_rows",
            "n_sampled",
            "n_requests",
            "profile",
        ],
    )
    change = obj(
        {
            "action": {"type": "string", "enum": ["split", "canary", "rollback", "promote"]},
            "split": _S,
            "shadow": _S,
            "canary": _S,
            "ramp": _S,
            "every": {"type": "number", "minimum": 0},
            "rules": {"type": "object"},
            "reason": _S,
            "user": _S,
        },
        ["action"],
    )
    refusal = obj(
        {
            "generation": {"type": "integer", "minimum": 0},
            "worker": _S,
            "layout": _S,
            "failed": {"type": "array", "items": {"type": "object"}},
        },
        ["generation", "worker", "layout", "failed"],
    )
    return {
        "/api/v1/serving/predictions": {
            "post": op(
                "append prediction rows to the log (write scope); a row already stored is "
                "skipped: {stored, duplicates}",
                obj({"rows": {"type": "array", "items": row, "maxItems": 10_000}}, ["rows"]),
            )
        },
        "/api/v1/serving/feedback": {
            "post": op(
                "ground truth of an answered request (write scope)",
                obj({"request_id": _S, "value": {}, "ts": _NUM}, ["request_id", "value"]),
            )
        },
        "/api/v1/serving/profiles": {
            "post": op(
                "store a closed window of live input profiles and its drift alert (write "
                "scope; a window already stored is skipped)",
                obj({"row": window}, ["row"]),
            )
        },
        "/api/v1/serving/models/{name}/references": {
            "get": op(
                "the training data versions (with profiles) a model version is compared with",
                params=[_MODEL, {**_q("version", {"type": "integer"}), "required": True}],
            )
        },
        "/api/v1/serving/models/{name}/outcomes": {
            "get": op(
                "per variant, answered requests with their newest feedback (mj.ab_report)",
                params=[_MODEL, _q("since", _NUM), _q("until", _NUM)],
            )
        },
        "/api/v1/serving/models/{name}/ab_inputs": {
            "get": op(
                "what mj.ab_report needs, counted by the server: per variant (successes, n) "
                "or the feedback values, and the versions it answered with",
                params=[
                    _MODEL,
                    _q("since", _NUM),
                    _q("until", _NUM),
                    _q("metric", {"type": "string", "enum": ["binary", "continuous"]}),
                ],
            )
        },
        "/api/v1/serving/models/{name}/drift": {
            "get": op(
                "mj.serving_drift's frame as a base64 Arrow IPC stream",
                params=[
                    _MODEL,
                    _q("version", {"type": "integer"}),
                    _q("reference"),
                    _q("last", {"type": "integer"}),
                ],
            )
        },
        "/api/v1/serving/rollouts/{name}": {
            "get": op("the stored rollout of a model, or null", params=[_MODEL]),
            "post": op(
                "change the rollout: split, canary, rollback or promote (admin scope)",
                change,
                params=[_MODEL],
            ),
        },
        "/api/v1/serving/rollouts/{name}/show": {
            "get": op("layout, canary step, checks, history and refusals", params=[_MODEL])
        },
        "/api/v1/serving/rollouts/{name}/refusals": {
            "get": op(
                "layouts workers could not load",
                params=[_MODEL, _q("generation", {"type": "integer"})],
            ),
            "post": op("record a layout a worker could not load", refusal, params=[_MODEL]),
        },
        "/api/v1/serving/rollouts/{name}/tick": {
            "post": op(
                "one step of the model's canary controller, on the server's store",
                obj({}),
                params=[_MODEL],
            )
        },
    }
