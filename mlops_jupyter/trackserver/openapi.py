"""OpenAPI 3.0 description of our routes (`GET /api/v1/openapi.json`)."""

from __future__ import annotations

from typing import Any

_ERR = {"$ref": "#/components/schemas/Error"}
_JSON_ERR = {"content": {"application/json": {"schema": _ERR}}}
_ERRORS = {
    "400": {"description": "bad input", **_JSON_ERR},
    "401": {"description": "missing, invalid or expired token", **_JSON_ERR},
    "403": {"description": "the token's scope does not allow this", **_JSON_ERR},
    "404": {"description": "no such run", **_JSON_ERR},
    "413": {"description": "body over the size limit", **_JSON_ERR},
}
_NUMS = {"type": "array", "items": {"type": "number", "nullable": True}}
_CHUNK = {
    "type": "object",
    "required": ["key", "seq"],
    "properties": {
        "key": {"type": "string", "minLength": 1},
        "seq": {"type": "integer", "minimum": 0, "description": "idempotency: per run and key"},
        "values": _NUMS,
        "steps": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "timestamps": {"type": "array", "items": {"type": "number", "minimum": 0}},
        "values_b64": {"type": "string", "description": "base64 of float64 little-endian"},
        "steps_b64": {"type": "string", "description": "base64 of int64 little-endian"},
        "timestamps_b64": {"type": "string", "description": "base64 of float64 seconds"},
        "timestamps_ms_b64": {"type": "string", "description": "base64 of int64 milliseconds"},
    },
}
_KV = {"type": "object", "additionalProperties": True}
# status and times another tracker recorded (MLflow imports), applied after the points
_RECORDED = {
    "type": "object",
    "required": ["status", "start_time"],
    "properties": {
        "status": {"type": "string"},
        "start_time": {"type": "number", "minimum": 0},
        "end_time": {"type": "number", "minimum": 0, "nullable": True},
    },
}
# notebook capture records (trackserver/cells.py): cells keyed by their seq
_CELL = {
    "type": "object",
    "required": ["source_hash", "start_time", "status"],
    "properties": {
        "cell_id": {"type": "string", "nullable": True},
        "execution_count": {"type": "integer", "minimum": 0, "nullable": True},
        "source_hash": {"type": "string", "minLength": 1},
        "start_time": {"type": "number", "minimum": 0},
        "duration_s": {"type": "number", "minimum": 0, "nullable": True},
        "status": {"type": "string", "enum": ["ok", "error", "interrupted"]},
        "error": {"type": "string", "nullable": True},
    },
}
_CAPTURE = {
    "cells": {"type": "object", "additionalProperties": _CELL},
    "cell_sources": {"type": "object", "additionalProperties": {"type": "string"}},
    "cell_link": {
        "type": "object",
        "required": ["notebook", "cell_key"],
        "properties": {"notebook": {"type": "string"}, "cell_key": {"type": "string"}},
    },
}
_RUN_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(summary: str, body: dict | None = None, params: list | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "ok", "content": {"application/json": {}}}, **_ERRORS},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        d["required"] = required
    return d


def _files_paths() -> dict[str, Any]:
    from .run_files import openapi_paths  # run events and artifacts

    return openapi_paths(_op, _obj)


def _data_paths() -> dict[str, Any]:
    from .data_routes import openapi_paths  # data versions, telemetry episodes

    return openapi_paths(_op, _obj)


def _data_more_paths() -> dict[str, Any]:
    from .data_more_openapi import openapi_paths  # drift, preflight, data lineage, resolve

    return openapi_paths(_op, _obj)


def _media_paths() -> dict[str, Any]:
    from .media_openapi import openapi_paths  # rich media, checkpoints

    return openapi_paths(_op, _obj)


def _registry_paths() -> dict[str, Any]:
    from .registry_openapi import openapi_paths  # the model registry

    return openapi_paths(_op, _obj)


def _optuna_paths() -> dict[str, Any]:
    from .optuna_openapi import paths  # optuna's storage contract, for sweeps

    return paths(_op, _obj)


def _feature_paths() -> dict[str, Any]:
    from .feature_openapi import openapi_paths  # the feature store

    return openapi_paths(_op, _obj)


def _mlflowio_paths() -> dict[str, Any]:
    from .mlflowio_routes import openapi_paths  # MLflow import: runs by tag

    return openapi_paths(_op, _obj)


def _loop_watch_paths() -> dict[str, Any]:
    from .loop_watch_routes import openapi_paths  # the watcher: recovery, rollouts, canaries

    return openapi_paths(_op, _obj)


def _serving_paths() -> dict[str, Any]:
    from .serving_openapi import openapi_paths  # serving: prediction logs, rollouts, A/B, drift

    return openapi_paths(_op, _obj)


def _loop_paths() -> dict[str, Any]:
    from .loop_openapi import openapi_paths  # gates, policies, approvals, cards, lineage

    return openapi_paths(_op, _obj)


def spec() -> dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "mlops-jupyter tracking server", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _obj(
                    {"error_code": {"type": "string"}, "message": {"type": "string"}},
                    ["error_code", "message"],
                )
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {"get": {**_op("liveness (no token, no data)"), "security": []}},
            "/api/v1/experiments": {
                "get": _op("list experiments"),
                "post": _op("create an experiment", _obj({"name": {"type": "string"}}, ["name"])),
            },
            "/api/v1/runs": {
                "get": _op(
                    "list runs",
                    params=[
                        {"name": "experiment", "in": "query", "schema": {"type": "string"}},
                        {"name": "status", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                        {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                    ],
                ),
                "post": _op(
                    "start a run",
                    _obj(
                        {
                            "experiment": {"type": "string"},
                            "name": {"type": "string"},
                            "params": _KV,
                            "tags": _KV,
                            "parent": {"type": "string"},
                            "prev_run": {"type": "string"},
                            "host": {"type": "string"},
                        }
                    ),
                ),
            },
            "/api/v1/runs/{id}": {"get": _op("one run (id, id prefix or name)", params=[_RUN_ID])},
            "/api/v1/runs/{id}/cells": {
                "get": _op("the executed cells of a run (id, id prefix or name)", params=[_RUN_ID]),
                "post": _op(
                    "record executed notebook cells (idempotent per run and seq)",
                    _obj(_CAPTURE),
                    [_RUN_ID],
                ),
            },
            "/api/v1/cell-runs": {
                "get": _op(
                    "the latest run started by a notebook cell",
                    params=[
                        {"name": "notebook", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "cell_key",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                )
            },
            "/api/v1/frames/runs": {
                "get": _op(
                    "the runs table (mj.runs()) as a base64 Arrow IPC stream",
                    params=[
                        {"name": "experiment", "in": "query", "schema": {"type": "string"}},
                        {"name": "status", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "include_system",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        },
                    ],
                )
            },
            "/api/v1/frames/metrics": {
                "get": _op(
                    "metric points (mj.metrics()) as a base64 Arrow IPC stream",
                    params=[
                        {
                            "name": "run",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "string"}},
                            "style": "form",
                            "explode": True,
                        },
                        {
                            "name": "key",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "string"}},
                            "style": "form",
                            "explode": True,
                        },
                    ],
                )
            },
            "/api/v1/runs/{id}/metrics": {
                "post": _op(
                    "append points: {points: [{key, value, step?, timestamp?}]} or"
                    " {chunks: [...]} (idempotent)",
                    _obj(
                        {
                            "points": {
                                "type": "array",
                                "items": _obj(
                                    {
                                        "key": {"type": "string"},
                                        "value": {"type": "number"},
                                        "step": {"type": "integer", "minimum": 0},
                                        "timestamp": {"type": "number", "minimum": 0},
                                    },
                                    ["key", "value"],
                                ),
                            },
                            "chunks": {"type": "array", "items": _CHUNK},
                        }
                    ),
                    [_RUN_ID],
                )
            },
            "/api/v1/runs/{id}/params": {
                "post": _op("set params", _obj({"params": _KV}, ["params"]), [_RUN_ID])
            },
            "/api/v1/runs/{id}/tags": {
                "post": _op("set tags", _obj({"tags": _KV}, ["tags"]), [_RUN_ID])
            },
            "/api/v1/runs/{id}/end": {
                "post": _op(
                    "end a run",
                    _obj(
                        {
                            "status": {
                                "type": "string",
                                "enum": ["finished", "failed", "killed", "crashed", "stopped"],
                            },
                            "end_time": {"type": "number"},
                        }
                    ),
                    [_RUN_ID],
                )
            },
            "/api/v1/ingest": {
                "post": _op(
                    "batched ingest of many runs and keys (gzip accepted); idempotent per"
                    " (run, key, seq)",
                    _obj(
                        {
                            "runs": {
                                "type": "array",
                                "items": _obj(
                                    {
                                        "id": {"type": "string"},
                                        "params": _KV,
                                        "tags": _KV,
                                        "chunks": {"type": "array", "items": _CHUNK},
                                        "status": {"type": "string"},
                                        "end_time": {"type": "number", "minimum": 0},
                                        "recorded": _RECORDED,
                                        **_CAPTURE,
                                    },
                                    ["id"],
                                ),
                            }
                        },
                        ["runs"],
                    ),
                )
            },
            **_files_paths(),
            **_registry_paths(),
            **_loop_paths(),
            **_loop_watch_paths(),
            **_optuna_paths(),
            **_serving_paths(),
            **_data_paths(),
            **_data_more_paths(),
            **_media_paths(),
            **_feature_paths(),
            **_mlflowio_paths(),
        },
    }
