"""MLflow → our store: experiments, runs, params, tags, metric histories (steps and
timestamps), artifacts, status and times. Idempotent: a run imported before (tag
`mlflow.run_id`) is skipped when unchanged, and completed when it changed since (a run that
was still running, an import that was interrupted). Reading MLflow and the one-run step
are reading.py's, shared with the import over a tracking server (remote/mlflowio.py)."""

from __future__ import annotations

import time
import warnings
from typing import Any

from ..errors import InvalidInputError
from ..progress import progress
from ..store import Store
from ..store import metrics as mstore
from ..store import query as q
from ..store import runs as rstore
from ..tracking.artifacts import artifact_files
from .common import (
    TAG_MLFLOW_RUN,
    MlflowError,
    mlflow_client,
    mlflow_errors,
    paged,
    parents_first,
    redact,
)
from .reading import (  # noqa: F401  (re-exported: callers import them from here)
    Target,
    _prefetch,
    _unchanged,
    check_status,
    downloaded_artifacts,
    import_one,
    read_run,
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


class StoreTarget:
    """A store (this process's own) as the target of `reading.import_one`."""

    def __init__(self, client: Any, store: Store) -> None:
        self.client, self.store = client, store

    def create(
        self, mid: str, name: str | None, experiment: str, params: dict, tags: dict, parent: Any
    ) -> int:
        """A new running run; its row id."""
        return rstore.create_run(self.store, name, experiment, params, tags, parent_id=parent)[0]

    def stored_counts(self, rid: int) -> dict[str, int]:
        """Points per metric key that run `rid` holds."""
        return {m["key"]: m["count"] for m in q.run_detail(self.store, rid)["metrics"]}

    def write(
        self,
        rid: int,
        run: Any,
        series: dict[str, tuple],
        have: dict[str, int],
        again: tuple[dict, dict] | None,
        recorded: tuple[str, float, float | None],
    ) -> tuple[int, int]:
        """Params/tags again, the new points, the artifacts, then the recorded times."""
        store = self.store
        if again is not None:
            rstore.set_kv(store, "params", rid, again[0])
            rstore.set_kv(store, "tags", rid, again[1])
        series = {k: tuple(a[have.get(k, 0) :] for a in s) for k, s in series.items()}
        series = {k: s for k, s in series.items() if len(s[0])}
        points = mstore.append_series(store, rid, series) if series else 0
        n_art = _artifacts(self.client, store, rid, run)
        # last: an import interrupted before this line is completed by the next one
        rstore.set_recorded_times(store, rid, *recorded)
        return points, n_art


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

        target: Target = remote.ImportTarget(url, client)
        done = target.done()
    else:
        store = store if store is not None else api.current_store()
        api.flush()
        done = rstore.runs_by_tag(store, TAG_MLFLOW_RUN)
        target = StoreTarget(client, store)

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
                what, points, n_art = import_one(
                    target, r, names[r.info.experiment_id], from_uri, done, pre
                )
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
