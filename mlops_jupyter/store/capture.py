"""SQL of notebook capture: executed cells of a run (sources stored once, by hash) and the
run <-> notebook-cell link used to chain re-run attempts."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError
from .db import Store
from .runs import resolve_run
from .sql import upsert

# (run_id, seq, cell_id, execution_count, source_hash, start_time, duration_s, status, error)
CellRow = tuple[int, int, "str | None", "int | None", str, float, "float | None", str, "str | None"]


def record_cells(store: Store, rows: list[CellRow], sources: dict[str, str]) -> None:
    """Insert executed-cell rows, plus any cell sources not stored yet, in one transaction."""
    if not rows and not sources:
        return
    with store.write() as c:
        if sources:
            c.executemany(
                "INSERT INTO cell_sources(hash, source) VALUES(?,?) ON CONFLICT DO NOTHING",
                list(sources.items()),
            )
        if rows:
            c.executemany(
                "INSERT INTO cell_executions(run_id, seq, cell_id, execution_count, source_hash,"
                " start_time, duration_s, status, error) VALUES(?,?,?,?,?,?,?,?,?)",
                rows,
            )


def record_cells_once(store: Store, rid: int, rows: list[CellRow], sources: dict[str, str]) -> int:
    """`record_cells` for rows of run `rid` that a client may send again (a retried request
    over the tracking server): a row whose (run, seq) is stored already is skipped. Returns
    the number of rows inserted."""
    with store.write() as c:
        # lock the run's row first: two copies of one request on two server processes
        # then insert the rows once (SQLite's write lock does this anyway)
        c.execute("UPDATE runs SET heartbeat = heartbeat WHERE id=?", (rid,))
        if sources:
            c.executemany(
                "INSERT INTO cell_sources(hash, source) VALUES(?,?) ON CONFLICT DO NOTHING",
                list(sources.items()),
            )
        if not rows:
            return 0
        seqs = sorted({r[1] for r in rows})
        have = {
            r[0]
            for r in c.execute(
                "SELECT seq FROM cell_executions WHERE run_id=? AND seq BETWEEN ? AND ?",
                (rid, seqs[0], seqs[-1]),
            ).fetchall()
        }
        new, seen = [], set(have)
        for r in rows:
            if r[1] not in seen:
                seen.add(r[1])
                new.append(r)
        if new:
            c.executemany(
                "INSERT INTO cell_executions(run_id, seq, cell_id, execution_count, source_hash,"
                " start_time, duration_s, status, error) VALUES(?,?,?,?,?,?,?,?,?)",
                new,
            )
        return len(new)


def next_seq(store: Store, rid: int) -> int:
    """The sequence number the next recorded cell of run `rid` gets (1 for the first)."""
    row = store.read("SELECT max(seq) FROM cell_executions WHERE run_id=?", (rid,))
    return (row[0][0] or 0) + 1


def _run_rowid(store: Store, run: Any) -> int:
    """The row id of `run`: a row id (int), a public run id or name (str), or a Run."""
    rid = getattr(run, "store_id", run)  # a Run (duck-typed: the store layer never imports it)
    if isinstance(rid, int) and not isinstance(rid, bool):
        return rid
    if isinstance(rid, str):
        return resolve_run(store, rid)
    raise InvalidInputError(
        f"run must be a run id (str), a Run or a row id (int), got {type(run).__name__}"
    )


def cells_for_run(store: Store, rid: int | str) -> list[dict[str, Any]]:
    """Cells executed while run `rid` was active, in execution order. `rid` is the run's
    public id (`run.id`, as `mj.runs()` shows it), its name, a Run, or its row id; an
    unknown id or name raises RunNotFoundError."""
    rid = _run_rowid(store, rid)
    rows = store.read(
        "SELECT c.seq, c.cell_id, c.execution_count, c.source_hash, s.source, c.start_time,"
        " c.duration_s, c.status, c.error FROM cell_executions c"
        " LEFT JOIN cell_sources s ON s.hash = c.source_hash"
        " WHERE c.run_id=? ORDER BY c.seq, c.id",
        (rid,),
    )
    keys = (
        "seq",
        "cell_id",
        "execution_count",
        "source_hash",
        "source",
        "start_time",
        "duration_s",
        "status",
        "error",
    )
    return [dict(zip(keys, r)) for r in rows]


def cell_source(store: Store, digest: str) -> str | None:
    """The stored text of a cell source hash, or None."""
    rows = store.read("SELECT source FROM cell_sources WHERE hash=?", (digest,))
    return rows[0][0] if rows else None


def link_run_cell(store: Store, rid: int, notebook: str, cell_key: str) -> None:
    """Remember that run `rid` was started by cell `cell_key` of `notebook` ('' if unknown)."""
    with store.write() as c:
        c.execute(
            upsert("run_cells", ("run_id", "notebook", "cell_key"), ("run_id",)),
            (rid, notebook, cell_key),
        )


def last_run_for_cell(store: Store, notebook: str, cell_key: str) -> int | None:
    """The latest run started by this notebook cell, or None."""
    rows = store.read(
        "SELECT max(run_id) FROM run_cells WHERE notebook=? AND cell_key=?", (notebook, cell_key)
    )
    return rows[0][0] if rows and rows[0][0] is not None else None


def run_uid(store: Store, rid: int) -> str | None:
    """Public id of a run row."""
    rows = store.read("SELECT uid FROM runs WHERE id=?", (rid,))
    return rows[0][0] if rows else None
