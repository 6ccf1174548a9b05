"""Routes behind the dashboard tab: the runs table with chosen columns, the columns a set
of runs has, group-by statistics and CSV export (store.api_table does the SQL)."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import tornado.web

from ..errors import InvalidInputError
from ..store import api_table as at
from .handlers import BaseHandler, _pool


class _Filtered(BaseHandler):
    def filters(self) -> dict[str, Any]:
        return {
            "experiment": self.arg_str("experiment"),
            "status": self.arg_str("status"),
            "search": self.arg_str("q"),
            "conditions": self.get_query_arguments("where") or None,
        }


class Columns(_Filtered):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(lambda: at.columns(self.store(), self.arg_str("experiment")))


class Table(_Filtered):
    @tornado.web.authenticated
    async def get(self) -> None:
        def run() -> Any:
            return at.table(
                self.store(),
                columns=self.arg_list("columns"),
                sort=self.arg_str("sort") or "start_time",
                order=self.arg_str("order") or "desc",
                limit=self.arg_int("limit", 200),
                offset=self.arg_int("offset", 0),
                **self.filters(),
            )

        await self.answer(run)


class Groups(_Filtered):
    @tornado.web.authenticated
    async def get(self) -> None:
        def run() -> Any:
            by = self.arg_str("by")
            if not by:
                raise InvalidInputError("query parameter 'by' is required (params.<key>)")
            return at.groups(self.store(), by, self.arg_list("metrics") or [], **self.filters())

        await self.answer(run)


class ExportCsv(_Filtered):
    @tornado.web.authenticated
    async def get(self) -> None:
        def run() -> str:
            buf = io.StringIO()
            w = csv.writer(buf)
            for row in at.export_rows(
                self.store(),
                columns=self.arg_list("columns"),
                sort=self.arg_str("sort") or "start_time",
                order=self.arg_str("order") or "desc",
                **self.filters(),
            ):
                w.writerow([at.dumps_cell(v) for v in row])
            return buf.getvalue()

        try:
            text = await asyncio.get_running_loop().run_in_executor(_pool, run)
        except Exception:
            # the JSON error answers of the other routes
            return await self.answer(run)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", 'attachment; filename="runs.csv"')
        self.set_header("Cache-Control", "no-store")
        self.finish(text)


ROUTES = [
    (r"/columns", Columns),
    (r"/table", Table),
    (r"/groups", Groups),
    (r"/export\.csv", ExportCsv),
]
