"""Notebook capture over the server: the executed-cell records of `%%mlops_run` (cells,
their sources, the run <-> starting-cell link), written with the store's capture functions.

The records travel in a run's entry of POST /api/v1/ingest (so the client's sender spools
and retries them with the run's points) or in POST /api/v1/runs/{id}/cells; both take

    {"cells": {"<seq>": {"cell_id", "execution_count", "source_hash", "start_time",
                         "duration_s", "status", "error"}},
     "cell_sources": {"<hash>": "<source>"},
     "cell_link": {"notebook": "...", "cell_key": "..."}}

A cell is named by its run and `seq`: a retried request never stores it twice."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..capture.recorder import source_hash
from ..store import capture as cstore
from ..store import ingest as ing
from ..store import runs as rstore
from .app import BaseHandler, check_value

MAX_CELLS = 10_000  # per request
MAX_TEXT = 10_000  # a cell id, error name, notebook path or cell key
STATUSES = ("ok", "error", "interrupted")
_I64 = 2**63 - 1
KEYS = ("cells", "cell_sources", "cell_link")


@dataclass
class Capture:
    """Checked capture records of one run."""

    rows: list[tuple] = field(default_factory=list)  # CellRow without the run id
    sources: dict[str, str] = field(default_factory=dict)
    link: tuple[str, str] | None = None

    def __bool__(self) -> bool:
        return bool(self.rows or self.sources or self.link)


def _text(v: Any, what: str, optional: bool = True, limit: int = MAX_TEXT) -> str | None:
    if v is None:
        check_value(optional, f"{what} is required")
        return None
    check_value(isinstance(v, str), f"{what} must be a string, got {type(v).__name__}")
    check_value(len(v) <= limit, f"{what} is longer than {limit} characters")
    rstore.check_text(v, what)
    return v


def _number(v: Any, what: str, optional: bool, hi: float) -> float | None:
    if v is None:
        check_value(optional, f"{what} is required")
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    check_value(ok and math.isfinite(v) and 0 <= v < hi, f"{what} must be a number, 0 to {hi:g}")
    return float(v)


def _cell(seq_text: Any, obj: Any, where: str) -> tuple:
    check_value(
        isinstance(seq_text, str) and seq_text.isascii() and seq_text.isdigit(),
        f"{where}: cells are keyed by their seq (a decimal integer), got {seq_text!r}",
    )
    seq = int(seq_text)
    check_value(1 <= seq <= _I64, f"{where}: seq must be 1 to 2**63-1")
    check_value(isinstance(obj, dict), f"{where} must be an object")
    count = obj.get("execution_count")
    check_value(
        count is None or (type(count) is int and 0 <= count <= _I64),
        f"{where}.execution_count must be a non-negative integer or null",
    )
    digest = _text(obj.get("source_hash"), f"{where}.source_hash", optional=False, limit=128)
    check_value(bool(digest), f"{where}.source_hash must not be empty")
    status = obj.get("status")
    check_value(status in STATUSES, f"{where}.status must be one of {STATUSES}")
    return (
        seq,
        _text(obj.get("cell_id"), f"{where}.cell_id"),
        count,
        digest,
        _number(obj.get("start_time"), f"{where}.start_time", False, 1e11),
        _number(obj.get("duration_s"), f"{where}.duration_s", True, 1e11),
        status,
        _text(obj.get("error"), f"{where}.error"),
    )


def parse(obj: dict, where: str = "") -> Capture:
    """The capture records in `obj` (an ingest run entry or a /cells body); 400 on bad input.
    Everything is checked before anything is written."""
    out = Capture()
    cells = obj.get("cells")
    if cells is not None:
        check_value(isinstance(cells, dict), f"{where}cells must be an object keyed by seq")
        check_value(len(cells) <= MAX_CELLS, f"at most {MAX_CELLS} cells a request")
        out.rows = [_cell(k, v, f"{where}cells[{k!r}]") for k, v in cells.items()]
    sources = obj.get("cell_sources")
    if sources is not None:
        check_value(isinstance(sources, dict), f"{where}cell_sources must be an object")
        for h, src in sources.items():
            what = f"{where}cell_sources[{h!r}]"
            check_value(isinstance(src, str), f"{what} must be a string")
            rstore.check_text(src, "cell source")
            # sources are shared by every run (stored once by hash): a wrong text for a
            # hash would show in other runs, so the hash must be the text's own
            check_value(source_hash(src) == h, f"{what}: the key is not the source's hash")
            out.sources[h] = src
    link = obj.get("cell_link")
    if link is not None:
        check_value(isinstance(link, dict), f"{where}cell_link must be an object")
        nb = _text(link.get("notebook"), f"{where}cell_link.notebook", optional=False)
        key = _text(link.get("cell_key"), f"{where}cell_link.cell_key", optional=False)
        check_value(bool(key), f"{where}cell_link.cell_key must not be empty")
        out.link = (nb or "", key or "")
    return out


def apply(store: Any, rid: int, cap: Capture) -> int:
    """Write checked records of run `rid`; the number of cells newly stored."""
    n = 0
    if cap.rows or cap.sources:
        rows = [(rid, *r) for r in cap.rows]
        n = cstore.record_cells_once(store, rid, rows, cap.sources)
    if cap.link is not None:
        cstore.link_run_cell(store, rid, *cap.link)
    return n


class CellsHandler(BaseHandler):
    """GET: the cells of a run (id, id prefix or name); POST: record cells (write scope)."""

    async def get(self, ref: str) -> None:
        def go() -> dict:
            return {"cells": cstore.cells_for_run(self.store, rstore.resolve_run(self.store, ref))}

        await self.handle(go)

    async def post(self, uid: str) -> None:
        def go() -> dict:
            cap = parse(self.body_json())
            rid = ing.run_by_uid(self.store, uid).rid
            return {"cells": apply(self.store, rid, cap)}

        await self.handle(go)


class CellRunHandler(BaseHandler):
    """GET ?notebook=&cell_key=: the latest run that this notebook cell started."""

    async def get(self) -> None:
        def go() -> dict:
            nb = _text(self.get_query_argument("notebook", ""), "notebook") or ""
            key = _text(self.get_query_argument("cell_key", ""), "cell_key") or ""
            check_value(bool(key), "cell_key is required")
            rid = cstore.last_run_for_cell(self.store, nb, key)
            return {"id": None if rid is None else cstore.run_uid(self.store, rid)}

        await self.handle(go)


ROUTES = [
    (r"/api/v1/runs/([^/]+)/cells", CellsHandler),
    (r"/api/v1/cell-runs", CellRunHandler),
]
