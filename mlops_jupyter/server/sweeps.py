"""REST route of a sweep run's progress across its workers:

    GET /mlops/api/v1/sweeps/{run_id}

answers the trials (child runs) with state, params, objective value and worker
(host:pid), trials/s over the sweep and recently, best so far, per-worker counts and the
axes of a parallel-coordinates chart (see mlops_jupyter.store.sweep_queries)."""

from __future__ import annotations

from typing import Any

import tornado.web

from .handlers import BaseHandler


class SweepProgress(BaseHandler):
    @tornado.web.authenticated
    async def get(self, ref: str) -> None:
        def run() -> dict[str, Any]:
            from ..store.api_queries import clean, maybe_reconcile
            from ..store.sweep_queries import sweep_summary

            st = self.store()
            maybe_reconcile(st)  # a dead worker's trial shows as crashed, not running
            return clean(sweep_summary(st, self.rid(ref)))

        await self.answer(run)


def sweep_routes() -> list[tuple[str, type]]:
    """Routes (relative to the API prefix) to register before the catch-all."""
    return [(r"/sweeps/([^/]+)", SweepProgress)]
