"""Tracking around stage executions: the metrics and params a stage's runs logged reach
the pipeline run, runs a stage left open are ended, failures become run events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import tracking
from ..errors import MlopsJupyterError


def copy_metrics(src_uid: str | None, *runs: tracking.Run | None) -> None:
    """Copy a stage run's metrics (not system telemetry) to other runs: a cached stage shows
    the metrics of the execution it reuses, and the pipeline run gathers every stage's
    metrics so it compares one-to-one with the notebook run."""
    targets = [r for r in runs if r is not None]
    if not src_uid or not targets:
        return
    try:
        df = tracking.metrics(src_uid)
    except MlopsJupyterError:
        return
    for key, step, value in df.select("key", "step", "value").iter_rows():
        if not key.startswith("sys/"):
            for r in targets:
                r.log_metric(key, value, step)


def save_state(path: Path, parent: tracking.Run | None, status: str, stage: str | None) -> None:
    if parent is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"run": parent.id, "status": status, "stage": stage}))
    except OSError:
        pass


def end_nested(srun: tracking.Run) -> None:
    """End runs the stage code started and left open, so they do not outlive the stage."""
    import sys as _sys

    failed = _sys.exc_info()[0] is not None
    while (r := tracking.active_run()) is not None and r is not srun and srun.status == "running":
        r.end("failed" if failed else "finished")


def event(run: tracking.Run, msg: str, tb: str) -> None:
    try:
        run.add_event("pipeline.error", msg, "error", {"traceback": tb})
    except Exception:
        pass


def _descendants(store, run_uid: str) -> list[str]:
    """Ids of the runs started under a run (nested runs of a stage), oldest first."""
    try:
        from ..store import runs as rstore

        return rstore.descendant_uids(store, run_uid)
    except Exception:  # tracking must never fail the pipeline
        return []


def gather(
    src_uid: str | None,
    parent: tracking.Run | None,
    known: dict[str, Any],
    stage_run: tracking.Run | None = None,
) -> None:
    """The pipeline run gets what a stage execution logged, as the notebook run had it:
    the metrics of the stage run and of the runs nested under it, and the params logged
    on the stage run (`mj.log_params`, `stage_run(params=...)`). `stage_run`: the run of a
    cached stage, which shows the params of the execution it reuses. `known`: params the
    runs already have (the pipeline's), not written again."""
    if not src_uid:
        return
    if parent is not None:
        for uid in [src_uid, *_descendants(parent.store, src_uid)]:
            copy_metrics(uid, parent)
    targets = [r for r in (parent, stage_run) if r is not None]
    if not targets:
        return
    try:
        got = tracking.get_run(src_uid)["params"]
    except MlopsJupyterError:
        return
    new = {k: v for k, v in got.items() if k not in known or known[k] != v}
    for r in targets:
        if new:
            r.log_params(new)
