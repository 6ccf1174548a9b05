"""Routes for MLflow import over the tracking server (remote/mlflowio.py): which runs
already carry a tag (the MLflow run id an import leaves), so a second import skips them
and an interrupted one is completed. Everything else goes through the batched ingest and
artifact routes."""

from __future__ import annotations

from typing import Any

from ..store import runs as rstore
from .app import BaseHandler, check_value


class TaggedRunsHandler(BaseHandler):
    """GET ?key=K: {"runs": [{"value", "id", "status", "end_time"}]}, the newest run per
    tag value (as locally, store/runs.runs_by_tag)."""

    async def get(self) -> None:
        def go() -> dict[str, Any]:
            key = self.get_query_argument("key", "")
            check_value(bool(key.strip()), "key (a tag key) is required")
            rstore.check_text(key, "tag key")
            found = rstore.runs_by_tag(self.store, key)
            uids = {
                rid: uid
                for rid, uid in self.store.read(
                    "SELECT id, uid FROM runs WHERE id IN (SELECT run_id FROM tags WHERE key=?)",
                    (key,),
                )
            }
            return {
                "runs": [
                    {"value": v, "id": uids[rid], "status": st, "end_time": end}
                    for v, (rid, st, end) in found.items()
                    if rid in uids
                ]
            }

        await self.handle(go)


ROUTES = [(r"/api/v1/tagged-runs", TaggedRunsHandler)]


def openapi_paths(op: Any, obj: Any) -> dict[str, Any]:
    """This module's routes in the OpenAPI description (`op`, `obj`: openapi's helpers)."""
    key = {"name": "key", "in": "query", "required": True, "schema": {"type": "string"}}
    return {
        "/api/v1/tagged-runs": {
            "get": op("runs carrying a tag, newest per value (MLflow imports)", None, [key])
        }
    }
