"""OpenAPI entries of trackserver/data_more_routes.py (drift reports, preflight, data
lineage, run resolution)."""

from __future__ import annotations

from typing import Any

_PATH = {"in": "path", "required": True, "schema": {"type": "string"}}


def openapi_paths(op: Any, obj: Any) -> dict[str, Any]:
    """This module's routes in the OpenAPI description (`op`, `obj`: openapi's helpers)."""
    count = {"type": "integer", "minimum": 0}
    report = obj(
        {
            "id": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
            "reference": {"type": "string", "minLength": 1},
            "current": {"type": "string", "minLength": 1},
            "run": {"type": "string", "minLength": 1},
            "n_columns": count,
            "n_drifted": count,
            "drift_share": {"type": "number", "minimum": 0, "maximum": 1},
            "dataset_drift": {"type": "boolean"},
            "mode": {"type": "string", "enum": ["raw", "profile"]},
            "result": {"type": "object"},
        },
        [
            "id",
            "reference",
            "current",
            "n_columns",
            "n_drifted",
            "drift_share",
            "dataset_drift",
            "mode",
            "result",
        ],
    )
    preflight = obj(
        {
            "key": {"type": "string", "minLength": 1, "maxLength": 64},
            "level": {"type": "string", "enum": ["info", "warning", "error"]},
            "message": {"type": "string", "minLength": 1},
            "data": {"type": "object"},
            "passed": {"type": "boolean"},
        },
        ["key", "level", "message", "data", "passed"],
    )
    q = lambda name: {"name": name, "in": "query", "schema": {"type": "string"}}  # noqa: E731
    return {
        "/api/v1/data/drift": {
            "get": op(
                "stored drift reports, newest first (all, or those of `run`)",
                params=[q("run"), {"name": "limit", "in": "query", "schema": {"type": "integer"}}],
            ),
            "post": op(
                "store a drift report computed by the client under its `id` (a retry stores "
                "nothing new); with `run`, the run's drift event",
                report,
            ),
        },
        "/api/v1/data/lineage": {
            "get": op(
                "a run's data lineage: its inputs and outputs with the runs on the other side "
                "(default: the latest run)",
                params=[q("run")],
            )
        },
        "/api/v1/data/versions/{ref}/runs": {
            "get": op(
                "runs that used or produced a data version (id, id prefix, fingerprint or name)",
                params=[{"name": "ref", **_PATH}],
            )
        },
        "/api/v1/runs/{id}/preflight": {
            "post": op(
                "record a preflight result on the run: its event (once per `key`) and the "
                "`preflight` tag",
                preflight,
                params=[{"name": "id", **_PATH}],
            )
        },
        "/api/v1/alerts": {
            "get": op(
                "alert (and throttling) events of the given runs, or of all, newest first",
                params=[
                    {
                        "name": "run",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string"}},
                    },
                    {"name": "throttle", "in": "query", "schema": {"type": "boolean"}},
                ],
            )
        },
        "/api/v1/notebook-run": {
            "get": op(
                "the newest top-level run recorded for a notebook file (finished first)",
                params=[
                    {"name": "path", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
            )
        },
        "/api/v1/runs/{id}/resolve": {
            "get": op(
                "a run id, unique id prefix or name resolved to the run's id and store id",
                params=[{"name": "id", **_PATH}],
            )
        },
    }
