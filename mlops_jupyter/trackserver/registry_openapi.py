"""The model registry's routes (registry_routes.py) in the tracking server's OpenAPI
description."""

from __future__ import annotations

from typing import Any

from .. import registry as reg
from .registry_routes import _FLAVORS

_S = {"type": "string"}
_MODEL = {"name": "name", "in": "path", "required": True, "schema": _S}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer"}}


def _q(name: str, schema: dict | None = None, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema or _S}


def openapi_paths(op: Any, obj: Any) -> dict[str, Any]:
    """This module's routes in the OpenAPI description (`op`, `obj`: openapi's helpers)."""
    from .run_files import _FILE

    blob = op(
        "upload one file of a version being registered (raw bytes); stored only if they hash"
        " to {sha256}",
        params=[_MODEL, {"name": "sha256", "in": "path", "required": True, "schema": _S}],
    )
    blob["requestBody"] = {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
    register = obj(
        {
            "key": {"type": "string", "pattern": "^[0-9a-f]{12,32}$"},
            "digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "flavor": {"type": "string", "enum": list(_FLAVORS)},
            "files": {"type": "array", "items": _FILE},
            "meta": {"type": "object"},
            "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
            "run": _S,
            "alias": _S,
            "description": _S,
            "user": _S,
        },
        ["key", "digest", "flavor", "files"],
    )
    return {
        "/api/v1/models": {
            "get": op("registered versions (of one model: ?name=)", params=[_q("name")])
        },
        "/api/v1/model-audit": {
            "get": op("the registry's audit log, oldest first", params=[_q("name")])
        },
        "/api/v1/models/{name}/versions": {
            "get": op("the versions of one model", params=[_MODEL]),
            "post": op(
                "register a version from uploaded files; answers the missing digests, or the"
                " version (a request sent again with the same key answers the same version)",
                register,
                [_MODEL],
            ),
        },
        "/api/v1/models/{name}/find": {
            "get": op(
                "one version: by version, stage or alias (default: production, else newest)",
                params=[
                    _MODEL,
                    _q("version", {"type": "integer", "minimum": 1}),
                    _q("stage", {"type": "string", "enum": list(reg.STAGES)}),
                    _q("alias"),
                ],
            )
        },
        "/api/v1/models/{name}/versions/{version}/files": {
            "get": op("the files of a version (name, size, modified)", params=[_MODEL, _VERSION])
        },
        "/api/v1/models/{name}/versions/{version}/file": {
            "get": op(
                "the bytes of one file of a version",
                params=[_MODEL, _VERSION, _q("name", required=True)],
            )
        },
        "/api/v1/models/{name}/versions/{version}/stage": {
            "post": op(
                "move a version to a stage (into or out of production: admin scope)",
                obj(
                    {
                        "stage": {"type": "string", "enum": list(reg.STAGES)},
                        "reason": _S,
                        "archive_existing": {"type": "boolean"},
                        "user": _S,
                    },
                    ["stage"],
                ),
                [_MODEL, _VERSION],
            )
        },
        "/api/v1/models/{name}/aliases/{alias}": {
            "put": op(
                "point an alias at a version",
                obj({"version": {"type": "integer", "minimum": 1}, "user": _S}, ["version"]),
                [_MODEL, {"name": "alias", "in": "path", "required": True, "schema": _S}],
            ),
            "delete": op(
                "remove an alias",
                params=[
                    _MODEL,
                    {"name": "alias", "in": "path", "required": True, "schema": _S},
                    _q("user"),
                ],
            ),
        },
        "/api/v1/models/{name}/blobs/{sha256}": {"put": blob},
    }
