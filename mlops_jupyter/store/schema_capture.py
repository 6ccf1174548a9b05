"""Notebook-capture tables: executed cells per run, cell sources stored once, and the
link from a run to the notebook cell that started it (for re-run attempts)."""

from __future__ import annotations

MIGRATIONS = [
    (
        3,
        "capture: cell sources, cell executions per run, run <-> starting cell",
        """
        CREATE TABLE cell_sources(
            hash TEXT PRIMARY KEY,
            source TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE cell_executions(
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            seq INTEGER NOT NULL,
            cell_id TEXT,
            execution_count INTEGER,
            source_hash TEXT NOT NULL,
            start_time REAL NOT NULL,
            duration_s REAL,
            status TEXT NOT NULL,
            error TEXT
        );
        CREATE INDEX cell_executions_by_run ON cell_executions(run_id, seq);
        CREATE TABLE run_cells(
            run_id INTEGER PRIMARY KEY REFERENCES runs(id),
            notebook TEXT NOT NULL,
            cell_key TEXT NOT NULL
        );
        CREATE INDEX run_cells_by_key ON run_cells(notebook, cell_key, run_id);
        """,
    ),
]
