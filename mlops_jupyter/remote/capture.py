"""Notebook capture (`%%mlops_run`) over a tracking server: what the recorder writes into a
local store (executed cells, their sources, the run <-> starting-cell link) is queued on
the run's sender instead and travels with its points in POST /api/v1/ingest. So a cell never
waits for the server: while it is away the records are spooled with the points and sent
when it is back; a retried request stores each cell once (cells are named by run and seq).
The server writes them with the store's capture functions (trackserver/cells.py)."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlencode

from ..errors import InvalidInputError
from ..store import runs as rstore
from .api import RemoteRun, RemoteStore
from .client import ServerRefused, ServerUnavailable

_seq: dict[tuple[str, str], int] = {}  # (server, run id) -> last seq given
_seq_lock = threading.Lock()


def is_remote(store: Any) -> bool:
    """Whether `store` is a tracking server's handle (not the storage contract)."""
    return isinstance(store, RemoteStore)


def next_seq(run: RemoteRun) -> int:
    """The seq of the next cell recorded into `run` by this process (1 for the first).

    Only this process records cells into a run it logs through the server (a run is
    recorded by the kernel that started it), so a counter here is the store's max + 1."""
    with _seq_lock:
        return _seq.get((run.store.key, run.id), 0) + 1


def _queue(run: RemoteRun, field: str, items: dict[str, Any]) -> None:
    # the sender's per-run params/tags queue takes any field of an ingest run entry
    run.queue_entry(field, items)


def link_run_cell(run: RemoteRun, notebook: str, cell_key: str) -> None:
    """Remember (on the server) that `run` was started by cell `cell_key` of `notebook`."""
    if _storable(notebook) and _storable(cell_key):
        _queue(run, "cell_link", {"notebook": notebook, "cell_key": cell_key})


def _storable(text: str | None) -> bool:
    try:
        rstore.check_text(text, "text")
    except InvalidInputError:
        return False
    return True


def record_cells(rows: list[tuple], sources: dict[str, str]) -> None:
    """Queue executed-cell rows (the local CellRow with the RemoteRun in place of the row
    id) and the sources not sent yet (with the first run's records).

    Text the server would refuse (a NUL or a lone surrogate: PostgreSQL cannot keep it)
    is left out here, because a refused request would drop the points that travel with it:
    such a source is not sent (the cell is, without its text), such a cell id is sent as
    none."""
    sources = {h: src for h, src in sources.items() if _storable(src)}
    first = True
    for run, seq, cell_id, count, digest, start, duration, status, error in rows:
        cell = {
            "cell_id": cell_id if _storable(cell_id) else None,
            "execution_count": count,
            "source_hash": digest,
            "start_time": start,
            "duration_s": duration,
            "status": status,
            "error": error,
        }
        _queue(run, "cells", {str(seq): cell})
        with _seq_lock:
            k = (run.store.key, run.id)
            _seq[k] = max(_seq.get(k, 0), seq)
        if first and sources:
            _queue(run, "cell_sources", dict(sources))
        first = False


def last_run_for_cell(store: RemoteStore, notebook: str, cell_key: str) -> str | None:
    """The id of the latest run this notebook cell started (a kernel restarted since), or
    None, also when the server cannot be asked now (the new run then starts a new chain)."""
    q = urlencode({"notebook": notebook, "cell_key": cell_key})
    try:
        out = store.client.request("GET", "/api/v1/cell-runs?" + q)
    except (ServerUnavailable, ServerRefused):
        return None
    uid = out.get("id") if isinstance(out, dict) else None
    return uid if isinstance(uid, str) else None
