"""REST route of LLM evaluation runs compared per score and per example:

    GET /mlops/api/v1/llm/compare?runs=ID1,ID2[,...]&metric=M&limit=N

answers {"runs", "metric", "lower_is_better", "metrics_available", "scores", "examples"}
(see mlops_jupyter.llm.compare.compare_report). The per-example tables are read through
each run's artifact index (by digest): the client names runs, never a file."""

from __future__ import annotations

from typing import Any

import tornado.web

from ..errors import ArtifactNotFoundError, InvalidInputError, RunNotFoundError
from .handlers import BaseHandler

DEFAULT_LIMIT = 100


class LlmCompare(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        def run() -> dict[str, Any]:
            from ..llm.compare import compare_report

            runs = self.arg_list("runs")
            if not runs:
                raise InvalidInputError("query parameter 'runs' is required (comma-separated)")
            limit = self.arg_int("limit", DEFAULT_LIMIT, lo=1)
            assert limit is not None
            try:
                return compare_report(
                    runs, metric=self.arg_str("metric"), limit=limit, store=self.store()
                )
            except ArtifactNotFoundError as e:
                # a run without an evaluation: "not found", like an unknown run
                raise RunNotFoundError(str(e)) from None

        await self.answer(run)


def llm_routes() -> list[tuple[str, type]]:
    """Routes (relative to the API prefix) to register before the catch-all."""
    return [(r"/llm/compare", LlmCompare)]
