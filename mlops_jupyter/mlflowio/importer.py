"""MLflow → our store: experiments, runs, params, tags, metric histories (steps and
timestamps), artifacts, status and times. Idempotent: a run imported before (tag
`mlflow.run_id`) is skipped when unchanged, and completed when it changed since (a run that
was still running, an import that was interrupted)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..progress import progress
from ..store import Store
from ..store import metrics as mstore
from ..store import query as q
from ..store import runs as rstore
from ..tracking.artifacts import artifact_files
from .common import (
    STATUS_IN,
    TAG_MLFLOW_RUN,
    TAG_MLFLOW_URI,
    MlflowError,
    mlflow_client,
    mlflow_errors,
    paged,
    parents_first,
    redact,
)

PREFETCH = 100  # runs whose histories are read together from an MLflow SQL store


def _experiments(client: Any, names: list[str] | None) -> list[Any]:
    exps = paged(client.search_experiments, max_results=1000)
    if names is None:
        return exps
    by_name = {e.name: e for e in exps}
    missing = [n for n in names if n not in by_name]
    if missing:
        known = ", ".join(sorted(by_name)) or "none"
        raise MlflowError(f"no MLflow experiment named {missing!r} (there are: {known})")
    return [by_name[n] for n in names]


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


def _artifacts(client: Any, store: Store, rid: int, run: Any) -> int:
    """Download the run's artifacts and store them under their MLflow paths."""
    with downloaded_artifacts(client, run) as root:
        if root is None:
            return 0
        rows = []
        blobs = store.artifacts
        for entry in sorted(root.iterdir()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLflow never stores special files
                files, _ = artifact_files(entry, entry.name, store.root)
            rows += [(rid, n, *blobs.put_blob(f), time.time()) for n, f in files]
        if rows:
            rstore.add_artifacts(store, rows)
        return len(rows)


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


def _import_one(
    client: Any, store: Store, run: Any, exp_name: str, uri: str, done: dict, pre: dict
) -> tuple[str, int, int]:
    """Import or complete one MLflow run; returns (what happened, points, artifacts)."""
    info = run.info
    mid = info.run_id
    status, start, end = check_status(run)
    if _unchanged(run, done):
        return "skipped", 0, 0
    old = done.get(mid)
    series, params, tags = read_run(client, run, uri, pre)
    if old is None:
        parent = done.get(tags.get("mlflow.parentRunId"))
        rid, _, _ = rstore.create_run(
            store,
            info.run_name or None,
            exp_name,
            params,
            tags,
            parent_id=parent[0] if parent else None,
        )
        done[mid] = (rid, "running", None)
        what = "imported"
    else:
        rid = old[0]
        rstore.set_kv(store, "params", rid, params)
        rstore.set_kv(store, "tags", rid, tags)
        # points already here (an earlier, partial import) are not written again
        have = {m["key"]: m["count"] for m in q.run_detail(store, rid)["metrics"]}
        series = {k: tuple(a[have.get(k, 0) :] for a in s) for k, s in series.items()}
        what = "completed"
    series = {k: s for k, s in series.items() if len(s[0])}
    points = mstore.append_series(store, rid, series) if series else 0
    n_art = _artifacts(client, store, rid, run)
    # last: an import interrupted before this line is completed by the next one
    rstore.set_recorded_times(store, rid, status, start, end)
    done[mid] = (rid, status, end)
    return what, points, n_art


def import_runs(
    from_uri: str,
    experiments: list[str] | str | None = None,
    *,
    store: Store | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Import the runs of every (or the named) active experiment at the MLflow tracking URI
    `from_uri` (a SQL store such as sqlite:///mlflow.db, a file store folder, or a running
    `mlflow server` at http://...) into the current store. Returns counts (imported,
    completed, skipped, points, artifacts) and `refused`: why runs our store cannot hold
    (negative steps) were left out, each also warned; the other runs are imported. With a
    tracking-server URL as the store, the runs go through the server (remote/mlflowio.py)."""
    from ..tracking import api

    if isinstance(experiments, str):
        experiments = [experiments]
    client = mlflow_client(from_uri, must_exist=True)
    url = api.remote_url() if store is None else None
    if url is not None:  # over a tracking server: its ingest and artifact routes
        from ..remote import mlflowio as remote

        target = remote.ImportTarget(url, client)
        done, one = target.done(), target.import_one
    else:
        store = store if store is not None else api.current_store()
        api.flush()
        done = rstore.runs_by_tag(store, TAG_MLFLOW_RUN)

        def one(*a: Any) -> tuple[str, int, int]:
            return _import_one(client, store, *a)

    with mlflow_errors(f"list the runs at {redact(from_uri)}"):
        exps = _experiments(client, experiments)
        names = {e.experiment_id: e.name for e in exps}
        runs: list[Any] = []
        for i in range(0, len(names), 100):  # search_runs takes a bounded id list
            ids = list(names)[i : i + 100]
            runs += paged(client.search_runs, experiment_ids=ids, max_results=1000)
    runs.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
    runs = parents_first(
        runs, lambda r: r.info.run_id, lambda r: r.data.tags.get("mlflow.parentRunId")
    )
    counts: dict[str, Any] = {
        "imported": 0,
        "completed": 0,
        "skipped": 0,
        "points": 0,
        "artifacts": 0,
    }
    refused: list[str] = []
    bar = progress(total=len(runs), desc="mlflow import", unit="run", quiet=quiet)
    with bar, mlflow_errors(f"import from {redact(from_uri)}"):
        for i, r in enumerate(runs):
            if i % PREFETCH == 0:  # the next histories, bounded in memory
                window = runs[i : i + PREFETCH]
                pre = _prefetch(client, [x for x in window if not _unchanged(x, done)])
            try:
                what, points, n_art = one(r, names[r.info.experiment_id], from_uri, done, pre)
            except InvalidInputError as e:  # this run only: the others are imported
                warnings.warn(f"mlops-jupyter: {e}", RuntimeWarning, stacklevel=2)
                refused.append(str(e))
                bar.update()
                continue
            counts[what] += 1
            counts["points"] += points
            counts["artifacts"] += n_art
            bar.update()
    counts["refused"] = refused
    return counts
