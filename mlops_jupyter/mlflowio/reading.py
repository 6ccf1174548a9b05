"""The MLflow side of an import, and the one-run step both targets share.

Reading: a run's metric histories (several runs' at once from an MLflow SQL store), its
params and tags with the two that make the import idempotent, its status and times, its
artifacts downloaded into a temporary folder. `import_one` then imports or completes one
run into a `Target`: the local store (importer.py) or a tracking server
(remote/mlflowio.py), which differ only in how a run is created and written. No store
access here, so the server's client does not reach store internals through it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import InvalidInputError
from .common import STATUS_IN, TAG_MLFLOW_RUN, TAG_MLFLOW_URI, MlflowError, redact


def _arrays(hist: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # MLflow keeps no logging order: time order (then step) is the closest to it
    hist = sorted(hist, key=lambda m: (m.timestamp, m.step))
    steps = np.fromiter((m.step for m in hist), np.int64, len(hist))
    ts = np.fromiter((m.timestamp for m in hist), np.int64, len(hist))
    vals = np.fromiter((m.value for m in hist), np.float64, len(hist))
    return steps, ts, vals


@contextlib.contextmanager
def _no_mlflow_bars() -> Iterator[None]:
    """MLflow's own per-download bar off: the import's bar counts runs."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _prefetch(client: Any, runs: list[Any]) -> dict[tuple[str, str], tuple]:
    """Metric histories of several runs at once, per key, where the source is an MLflow SQL
    store: one query per key instead of one per run and key, each of which scans every
    point of that key in MLflow's SQLite schema. {} elsewhere (servers, file stores): the
    caller then reads each history with get_metric_history."""
    # the client's store object is not public API: any surprise means per-run reads
    bulk = getattr(
        getattr(getattr(client, "_tracking_client", None), "store", None),
        "get_metric_history_bulk",
        None,
    )
    if bulk is None or not runs:
        return {}
    keys = sorted({k for r in runs for k in r.data.metrics})
    ids = [r.info.run_id for r in runs]
    grouped: dict[tuple[str, str], list] = {}
    try:
        for key in keys:
            for m in bulk(ids, key, 1 << 62):
                grouped.setdefault((m.run_id, key), []).append(m)
    except Exception:
        return {}
    return {k: _arrays(v) for k, v in grouped.items()}


@contextlib.contextmanager
def downloaded_artifacts(client: Any, run: Any) -> Iterator[Path | None]:
    """The run's artifacts downloaded into a temporary folder (None: it has none)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    # the run's repository directly: the client's calls would read the run again each time
    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
    if not repo.list_artifacts():
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="mlflow-import-") as tmp, _no_mlflow_bars():
        yield Path(repo.download_artifacts("", dst_path=tmp))


def _times(run: Any) -> tuple[str | None, float, float | None]:
    """(our status, start s, end s) of an MLflow run."""
    info = run.info
    status = STATUS_IN.get(str(info.status).upper())
    start = info.start_time / 1000.0 if info.start_time is not None else 0.0
    end = info.end_time / 1000.0 if info.end_time is not None else None
    return status, start, None if status == "running" else end


def _unchanged(run: Any, done: dict) -> bool:
    """Imported before, ended, and with the same status and end since."""
    status, _, end = _times(run)
    old = done.get(run.info.run_id)
    return old is not None and status != "running" and old[1] == status and old[2] == end


def read_run(client: Any, run: Any, uri: str, pre: dict) -> tuple[dict, dict, dict]:
    """(series by key, params, tags) of one MLflow run, its tags with the two that make
    the import idempotent. InvalidInputError for what our store cannot hold."""
    info = run.info
    mid = info.run_id
    series = {
        k: pre.pop((mid, k), None) or _arrays(client.get_metric_history(mid, k))
        for k in sorted(run.data.metrics)
    }
    for k, (steps, _, _) in series.items():
        if len(steps) and (int(steps.min()) < 0):
            # our store keeps steps >= 0; shifting them would change the data: refuse
            raise InvalidInputError(
                f"MLflow run {mid} ({info.run_name}): metric {k!r} has negative steps "
                f"(min {int(steps.min())}); steps must be >= 0 here, so nothing of this "
                "run was imported"
            )
    params = dict(run.data.params)
    tags = dict(run.data.tags)
    tags[TAG_MLFLOW_RUN] = mid
    tags[TAG_MLFLOW_URI] = redact(uri)
    return series, params, tags


def check_status(run: Any) -> tuple[str, float, float | None]:
    """(our status, start s, end s) of an MLflow run; MlflowError for an unknown status."""
    status, start, end = _times(run)
    if status is None:
        raise MlflowError(f"MLflow run {run.info.run_id} has an unknown status {run.info.status!r}")
    return status, start, end


class Target(Protocol):
    """Where `import_one` puts an MLflow run: the local store or a tracking server."""

    client: Any  # the MLflow client reading the source

    def create(
        self, mid: str, name: str | None, experiment: str, params: dict, tags: dict, parent: Any
    ) -> Any:
        """Start a running run with its params and tags (under run `parent`, if not None);
        returns its id. `mid` is the MLflow run id (tagged), for a retry to find it."""

    def stored_counts(self, rid: Any) -> dict[str, int]:
        """Points per metric key that run `rid` holds already (an earlier, partial import)."""

    def write(
        self,
        rid: Any,
        run: Any,
        series: dict[str, tuple],
        have: dict[str, int],
        again: tuple[dict, dict] | None,
        recorded: tuple[str, float, float | None],
    ) -> tuple[int, int]:
        """Write the points of `series` after the first `have[key]` of each key, the run's
        artifacts, the params and tags `again` (a run completed), and last the recorded
        (status, start, end): an import interrupted before that is completed by the next.
        Returns (points written, artifacts)."""


def import_one(
    target: Target, run: Any, exp_name: str, uri: str, done: dict, pre: dict
) -> tuple[str, int, int]:
    """Import or complete one MLflow run into `target`; returns (what happened, points,
    artifacts). `done`: {MLflow run id: (our run id, status, end)} of the runs imported
    before, updated here; `pre`: histories read ahead by `_prefetch`."""
    info = run.info
    mid = info.run_id
    status, start, end = check_status(run)
    if _unchanged(run, done):
        return "skipped", 0, 0
    old = done.get(mid)
    series, params, tags = read_run(target.client, run, uri, pre)
    again: tuple[dict, dict] | None = None
    if old is None:
        parent = done.get(tags.get("mlflow.parentRunId"))
        rid = target.create(
            mid, info.run_name or None, exp_name, params, tags, parent[0] if parent else None
        )
        done[mid] = (rid, "running", None)
        what, have = "imported", {}
    else:
        rid = old[0]
        # points already there (an earlier, partial import) are not written again
        what, have, again = "completed", target.stored_counts(rid), (params, tags)
    points, n_art = target.write(rid, run, series, have, again, (status, start, end))
    done[mid] = (rid, status, end)
    return what, points, n_art
