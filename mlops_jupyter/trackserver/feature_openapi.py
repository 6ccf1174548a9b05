"""The feature store's routes (feature_routes.py) in the tracking server's OpenAPI
description."""

from __future__ import annotations

from typing import Any

_S = {"type": "string"}
_INT = {"type": "integer", "minimum": 1}
_NAME = {"name": "name", "in": "path", "required": True, "schema": _S}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": _INT}
_DIGEST = {"name": "sha256", "in": "path", "required": True, "schema": _S}
_TIME = {"type": "number", "nullable": True}


def _q(name: str, schema: dict | None = None, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema or _S}


def openapi_paths(op: Any, obj: Any) -> dict[str, Any]:
    """This module's routes in the OpenAPI description (`op`, `obj`: openapi's helpers)."""
    from .data_routes import version_record

    text = {"type": "string", "nullable": True}
    record = version_record(obj)
    column = obj({"name": _S, "dtype": _S}, ["name", "dtype"])
    view = obj(
        {
            "entities": {"type": "array", "items": _S, "minItems": 1},
            "timestamp": _S,
            "ttl_s": {"type": "number", "nullable": True, "exclusiveMinimum": True, "minimum": 0},
            "schema": {"type": "array", "items": column},
            "code_hash": {"type": "string", "nullable": True, "pattern": "^[0-9a-f]{64}$"},
            "code": text,
            "description": text,
            "owner": text,
        },
        ["entities", "timestamp", "schema"],
    )
    register = obj(
        {
            "view": view,
            "version": _INT,
            "data": record,
            "materialization": obj(
                {
                    "digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "size": {"type": "integer", "minimum": 0},
                    "n_rows": {"type": "integer", "minimum": 0},
                    "oldest": _TIME,
                    "newest": _TIME,
                },
                ["digest", "size", "n_rows"],
            ),
        },
        ["view", "data", "materialization"],
    )
    source = obj(
        {
            "view": _S,
            "version": _INT,
            "data_version": _S,
            "features": {"type": "array", "items": _S, "minItems": 1},
        },
        ["view", "version", "data_version", "features"],
    )
    blob = op(
        "upload the offline parquet of a view being registered (raw bytes); stored only if"
        " they hash to {sha256}",
        params=[_NAME, _DIGEST],
    )
    blob["requestBody"] = {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
    return {
        "/api/v1/features/views": {
            "get": op(
                "feature views: the current version of each (every version with ?all=true)",
                params=[_q("all", {"type": "string", "enum": ["true", "false"]})],
            )
        },
        "/api/v1/features/views/{name}": {
            "get": op(
                "one feature view version (default: the current one) with its latest offline"
                " materialization",
                params=[_NAME, _q("version", _INT)],
            ),
            "post": op(
                "register a feature view version from uploaded offline data; answers the"
                " missing digest, or the view (the same definition answers the same version)",
                register,
                [_NAME],
            ),
        },
        "/api/v1/features/views/{name}/usage": {
            "get": op(
                "the training sets built from a view and the runs that used them", None, [_NAME]
            )
        },
        "/api/v1/features/views/{name}/versions/{version}/online": {
            "get": op(
                "whether a view version was materialized to an online backend",
                params=[_NAME, _VERSION, _q("backend", required=True)],
            ),
            "post": op(
                "log an online materialization of a view version; its log entry's id. Sent"
                " again with the same key: the first entry's id, nothing logged",
                obj(
                    {
                        "backend": _S,
                        "start": _TIME,
                        "end": {"type": "number"},
                        "rows": {"type": "integer", "minimum": 0},
                        "key": {"type": "string", "minLength": 1, "maxLength": 64},
                    },
                    ["backend", "end", "rows"],
                ),
                [_NAME, _VERSION],
            ),
        },
        "/api/v1/features/views/{name}/versions/{version}/online/rows": {
            "post": op(
                "write online values of a view version to the team store's table (newer wins)",
                obj(
                    {
                        "rows": {
                            "type": "array",
                            "items": {"type": "array", "items": {}, "minItems": 3, "maxItems": 3},
                        }
                    },
                    ["rows"],
                ),
                [_NAME, _VERSION],
            )
        },
        "/api/v1/features/views/{name}/versions/{version}/online/read": {
            "post": op(
                "read the stored online values of some entities of a view version",
                obj({"keys": {"type": "array", "items": _S}}, ["keys"]),
                [_NAME, _VERSION],
            )
        },
        "/api/v1/features/data/{sha256}": {
            "get": op("the parquet of a feature materialization", params=[_DIGEST])
        },
        "/api/v1/features/{name}/blobs/{sha256}": {"put": blob},
        "/api/v1/features/training-sets": {
            "post": op(
                "record a training set: its labels' and its own data versions, its lineage and"
                " the run that used it",
                obj(
                    {
                        "name": _S,
                        "labels": record,
                        "output": record,
                        "sources": {"type": "array", "items": source, "minItems": 1},
                        "run": _S,
                    },
                    ["name", "labels", "output", "sources"],
                ),
            )
        },
        "/api/v1/features/training-sets/{ref}/sources": {
            "get": op(
                "what a recorded training set was built from",
                params=[{"name": "ref", "in": "path", "required": True, "schema": _S}],
            )
        },
        "/api/v1/features/online-materializations": {
            "get": op("the log of online materializations, newest first", params=[_q("view")])
        },
    }
