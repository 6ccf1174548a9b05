"""OpenAPI entries of media_routes.py (rich media of runs) and ckpt_routes.py (checkpoint
series)."""

from __future__ import annotations

from typing import Any

_RUN = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_paths(op: Any, obj: Any) -> dict[str, Any]:
    """The media routes in the OpenAPI description (`op`, `obj`: openapi's helpers)."""
    from .media_routes import _KINDS, MAX_ITEMS, MAX_STEP

    item = obj(
        {
            "key": {"type": "string", "minLength": 1},
            "step": {"type": "integer", "minimum": 0, "maximum": MAX_STEP},
            "kind": {"type": "string", "enum": list(_KINDS)},
            "mime": {"type": "string", "minLength": 1},
            "name": {"type": "string", "minLength": 1},
            "created": {"type": "number", "minimum": 0},
        },
        ["key", "step", "kind", "mime", "name"],
    )
    items = {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_ITEMS}
    key = {"name": "key", "in": "query", "required": True, "schema": {"type": "string"}}
    upload = op(
        "store one checkpoint file under ?key= (checkpoints/...) if it hashes to {sha256}",
        params=[
            {"name": "sha256", "in": "path", "required": True, "schema": {"type": "string"}},
            key,
        ],
    )
    upload["requestBody"] = {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
    prefix = {"name": "prefix", "in": "query", "required": True, "schema": {"type": "string"}}
    return {
        "/api/v1/checkpoints/files/{sha256}": {"put": upload},
        "/api/v1/checkpoints/files": {
            "get": op("the checkpoint files stored under a checkpoints/ prefix", params=[prefix])
        },
        "/api/v1/checkpoints/file": {
            "get": op("one checkpoint file's bytes (sha256 in X-Content-SHA256)", params=[key]),
            "delete": op("delete one checkpoint file (a rotated-out one)", params=[key]),
        },
        "/api/v1/runs/{id}/media": {
            "get": op(
                "the run's media rows (key, step, kind, mime, digest, size, created, name)",
                params=[
                    _RUN,
                    {"name": "key", "in": "query", "schema": {"type": "string"}},
                    {"name": "step", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
            ),
            "post": op(
                "index artifacts the run already recorded as media (one row per key and step)",
                obj({"items": items}, ["items"]),
                params=[_RUN],
            ),
        },
    }
