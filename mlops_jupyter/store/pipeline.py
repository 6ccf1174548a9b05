"""Store queries of the notebook-to-pipeline export: which run a notebook was exported from."""

from __future__ import annotations

import json

from .db import Store


def notebook_run(store: Store, notebook_path: str) -> tuple[str, str] | None:
    """(run id, experiment) of the newest top-level run recorded for this notebook file
    (tag `notebook.path`), finished runs first; None when the notebook has no run."""
    rows = store.read(
        "SELECT r.uid, e.name FROM runs r"
        " JOIN tags t ON t.run_id = r.id AND t.key = 'notebook.path'"
        " JOIN experiments e ON e.id = r.experiment_id"
        " WHERE t.value = ? AND r.parent_id IS NULL"
        " ORDER BY (r.status = 'finished') DESC, r.start_time DESC LIMIT 1",
        (json.dumps(notebook_path),),
    )
    return (rows[0][0], rows[0][1]) if rows else None


def process_run(store: Store, host: str, pid: int) -> tuple[str, str] | None:
    """(run id, experiment) of the newest top-level run started by process `pid` on `host`
    (the notebook kernel exporting itself), excluding pipeline runs."""
    rows = store.read(
        "SELECT r.uid, e.name FROM runs r JOIN experiments e ON e.id = r.experiment_id"
        " WHERE r.host = ? AND r.pid = ? AND r.parent_id IS NULL AND NOT EXISTS("
        "   SELECT 1 FROM tags t WHERE t.run_id = r.id AND t.key = 'mlops.kind')"
        " ORDER BY r.start_time DESC LIMIT 1",
        (host, pid),
    )
    return (rows[0][0], rows[0][1]) if rows else None


def run_experiment(store: Store, uid: str) -> str | None:
    """Experiment name of the run with public id `uid`."""
    rows = store.read(
        "SELECT e.name FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.uid = ?",
        (uid,),
    )
    return rows[0][0] if rows else None
