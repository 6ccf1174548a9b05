"""The OpenAPI description of a model server, with the model's input signature as the
request schema."""

from __future__ import annotations

from typing import Any

_NUM = {"float16": "number", "float32": "number", "float64": "number", "bool": "boolean"}


def _item(dtype: str, shape: list[int]) -> dict[str, Any]:
    t: dict[str, Any] = {"type": _NUM.get(dtype, "string" if dtype == "string" else "integer")}
    for size in reversed(shape):
        t = {"type": "array", "items": t}
        if size >= 0:
            t["minItems"] = t["maxItems"] = size
    return t


def _inputs_schema(sig: dict[str, Any] | None) -> dict[str, Any]:
    if sig is None:
        return {"type": "array", "description": "a batch: one entry per instance"}
    if sig["kind"] == "columns":
        props = {c["name"]: _item(c["dtype"], []) for c in sig["columns"]}
    else:
        props = {f["name"]: _item(f["dtype"], f["shape"]) for f in sig["fields"]}
    return {
        "type": "array",
        "items": {"type": "object", "properties": props, "required": list(props)},
    }


def spec(name: str, version: int, predictor: Any) -> dict[str, Any]:
    """OpenAPI 3.1 document of the server of `name` v`version`."""
    sig = predictor.signature if predictor is not None else None
    err = {
        "description": "error",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    predict = {
        "summary": f"predictions of {name} v{version}",
        "parameters": [
            {
                "name": "X-Request-Id",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "echoed back; generated when absent; feedback refers to it",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "'instances' (rows) or 'inputs' (a batch, or an "
                        "object of fields); MLflow's dataframe_split/dataframe_records too",
                        "properties": {"instances": _inputs_schema(sig), "inputs": {}},
                    }
                },
                "application/vnd.apache.arrow.stream": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        },
        "responses": {
            "200": {
                "description": "one prediction per instance",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "predictions": {},
                                "dtype": {},
                                "model": {"type": "string"},
                                "version": {"type": "integer"},
                                "variant": {"type": "string"},
                                "request_id": {"type": "string"},
                            },
                        }
                    }
                },
            },
            "422": err,
            "503": err,
        },
    }
    simple = {"responses": {"200": {"description": "ok"}, "503": err}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"mlops-jupyter model server: {name}", "version": str(version)},
        "paths": {
            "/predict": {"post": predict},
            "/invocations": {"post": {**predict, "summary": "same as /predict (MLflow's path)"}},
            "/feedback": {
                "post": {
                    "summary": "ground truth for an earlier request",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["request_id", "value"],
                                    "properties": {"request_id": {"type": "string"}, "value": {}},
                                }
                            }
                        }
                    },
                    "responses": {"200": {"description": "stored"}, "422": err},
                }
            },
            "/health": {"get": {"summary": "the process is up", **simple}},
            "/ready": {"get": {"summary": "the model is loaded (503 with the reason)", **simple}},
            "/stats": {
                "get": {"summary": "batching and logging counters of this worker", **simple}
            },
            "/openapi.json": {"get": {"summary": "this document", **simple}},
        },
    }
