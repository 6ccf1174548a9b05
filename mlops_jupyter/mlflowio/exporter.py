"""Our store → MLflow: experiments, runs, params, tags, metric histories, artifacts, status
and times, written with `log_batch` within MLflow's limits. Idempotent: each MLflow run is
tagged with our run id; a run exported completely before is skipped, one whose export was
interrupted is deleted in MLflow and exported again. A run imported from the target MLflow
(tag `mlflow.run_id` naming a run it holds) is skipped too: it is there already."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InvalidInputError
from ..progress import progress
from ..store import Store
from ..store import query as q
from ..store import runs as rstore
from .common import (
    STATUS_OUT,
    TAG_EXPORTED,
    TAG_MLFLOW_RUN,
    TAG_OUR_RUN,
    TAG_OUR_STATUS,
    MlflowError,
    mlflow_client,
    mlflow_errors,
    paged,
    parents_first,
    redact,
)

# MLflow's limits (mlflow.utils.validation): per log_batch call, and per value.
MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_REQUEST = 1_000_000


def as_text(v: Any) -> str:
    """A param or tag value as MLflow text: strings as they are, anything else as JSON."""
    return v if isinstance(v, str) else json.dumps(v, allow_nan=True)


def _check(d: dict) -> list[str]:
    """Why MLflow could not hold this run's params and tags (empty: it can)."""
    bad = []
    for what, items, limit in (
        ("param", d["params"], MAX_PARAM_VALUE),
        ("tag", d["tags"], MAX_TAG_VALUE),
    ):
        for k, v in items.items():
            text = as_text(v)
            if len(k) > MAX_KEY:
                bad.append(f"{what} key {k[:40]!r}... is {len(k)} characters (MLflow: {MAX_KEY})")
            if len(text) > limit:
                bad.append(f"{what} {k!r} is {len(text)} characters long (MLflow: {limit})")
    for m in d["metrics"]:
        if len(m["key"]) > MAX_KEY:
            bad.append(f"metric key {m['key'][:40]!r}... is longer than {MAX_KEY} characters")
    bad += _mlflow_checks(d)
    return [f"run {d['id']} ({d['name']}): {b}" for b in bad]


def _mlflow_checks(d: dict) -> list[str]:
    """MLflow's own key checks (characters it refuses in names)."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.utils import validation as v

        checks = [
            *((v._validate_param_name, k) for k in d["params"]),
            *((v._validate_tag_name, k) for k in d["tags"]),
            *((v._validate_metric_name, m["key"]) for m in d["metrics"]),
        ]
    except (ImportError, AttributeError):  # another MLflow version: the server will say
        return []
    bad = []
    for fn, k in checks:
        try:
            fn(k)
        except MlflowException as e:
            bad.append(f"{k[:60]!r}: {e.message.splitlines()[0][:200]}")
    return bad


def _batches(items: list, limit: int, size) -> list[list]:
    """`items` cut into lists of at most `limit` entries and about MAX_REQUEST/2 bytes."""
    out, cur, nbytes = [], [], 0
    for x in items:
        n = size(x)
        if cur and (len(cur) >= limit or nbytes + n > MAX_REQUEST // 2):
            out.append(cur)
            cur, nbytes = [], 0
        cur.append(x)
        nbytes += n
    if cur:
        out.append(cur)
    return out


def _experiment_id(client: Any, name: str, cache: dict[str, str]) -> str:
    if name not in cache:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            cache[name] = client.create_experiment(name)
        elif exp.lifecycle_stage != "active":
            raise MlflowError(
                f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments "
                "restore) or delete it for good before exporting into it"
            )
        else:
            cache[name] = exp.experiment_id
    return cache[name]


def _exported(client: Any, exp_id: str) -> dict[str, Any]:
    """Our run id -> MLflow run, for the runs of one MLflow experiment we exported."""
    runs = paged(
        client.search_runs,
        experiment_ids=[exp_id],
        filter_string=f"tags.`{TAG_OUR_RUN}` LIKE '%'",
        max_results=1000,
    )
    return {r.data.tags[TAG_OUR_RUN]: r for r in runs if TAG_OUR_RUN in r.data.tags}


def _active_run(client: Any, run_id: str) -> bool:
    """Whether the MLflow store holds an active run with this id."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


class LocalSource:
    """Where the export reads a run's points and artifact files: a direct store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.location = store.location

    def series(self, rid: Any, key: str) -> tuple[Any, Any, Any]:
        """(steps, ts ms, values) of one run/key."""
        return q.series(self.store, rid, key)

    def blob_file(self, rid: Any, artifact: dict) -> Path:
        """A local file holding the artifact's bytes."""
        return Path(self.store.artifacts.blob_file(artifact["digest"]))


def _artifacts(client: Any, src: Any, rid: Any, mid: str, arts: list[dict]) -> None:
    if not arts:
        return
    with tempfile.TemporaryDirectory(prefix="mlflow-export-") as tmp:
        root = Path(tmp, "a")
        for a in arts:
            rel = PurePosixPath(a["name"])
            if rel.is_absolute() or ".." in rel.parts:
                raise MlflowError(f"artifact name {a['name']!r} cannot be an MLflow path")
            dst = root.joinpath(*rel.parts)
            dst.parent.mkdir(parents=True, exist_ok=True)
            path = src.blob_file(rid, a)
            try:
                os.symlink(path, dst)  # MLflow copies or uploads the file it points to
            except OSError:
                import shutil

                shutil.copyfile(path, dst)
        client.log_artifacts(mid, str(root))


def _export_one(client: Any, src: Any, rid: Any, d: dict, exp_id: str, parent: str | None):
    from mlflow.entities import Metric, Param, RunTag

    tags = {TAG_OUR_RUN: d["id"], TAG_OUR_STATUS: d["status"]}
    if parent:
        tags["mlflow.parentRunId"] = parent
    mr = client.create_run(
        exp_id, start_time=round(d["start_time"] * 1000), tags=tags, run_name=d["name"]
    )
    mid = mr.info.run_id
    params = [Param(k, as_text(v)) for k, v in d["params"].items()]
    rtags = [RunTag(k, as_text(v)) for k, v in d["tags"].items() if k not in tags]
    for part in _batches(params, MAX_PARAMS, lambda p: len(p.key) + len(p.value) + 16):
        client.log_batch(mid, params=part)
    for part in _batches(rtags, MAX_TAGS, lambda t: len(t.key) + len(t.value) + 16):
        client.log_batch(mid, tags=part)
    points = 0
    for m in d["metrics"]:
        steps, ts, vals = src.series(rid, m["key"])
        key = m["key"]
        ms = [
            Metric(key, float(v), int(t), int(s))
            for s, t, v in zip(steps.tolist(), ts.tolist(), vals.tolist())
        ]
        # 1,000 points with keys of at most 250 characters stay far under 1 MB
        for i in range(0, len(ms), MAX_METRICS):
            client.log_batch(mid, metrics=ms[i : i + MAX_METRICS])
        points += len(ms)
    _artifacts(client, src, rid, mid, d["artifacts"])
    client.set_tag(mid, TAG_EXPORTED, "complete")
    if d["status"] != "running":
        end = d["end_time"] if d["end_time"] is not None else d["start_time"]
        client.set_terminated(mid, STATUS_OUT[d["status"]], end_time=round(end * 1000))
    return mid, points, len(d["artifacts"])


def export_runs(
    to_uri: str,
    experiments: list[str] | str | None = None,
    *,
    store: Store | None = None,
    quiet: bool = False,
) -> dict[str, int]:
    """Export the runs of every (or the named) experiment of the current store to the
    MLflow tracking URI `to_uri`. Everything is checked first: a param or tag MLflow cannot
    hold stops the export before anything is written. Returns counts: exported, skipped,
    redone (interrupted exports done again), points, artifacts. With a tracking-server URL
    as the store, the runs are read through the server (remote/mlflowio.py)."""
    from .. import config
    from ..tracking import api

    if isinstance(experiments, str):
        experiments = [experiments]
    url = api.remote_url() if store is None else None
    src: Any
    if url is not None:  # over a tracking server: its read routes, digests verified
        from ..remote import mlflowio as remote

        src = remote.ExportSource(url)
        details = src.details()
    else:
        api.flush()
        store = store if store is not None else api.current_store()
        rstore.reconcile(store, config.stale_after())
        details = {rid: q.run_detail(store, rid) for rid in rstore.all_run_ids(store)}
        src = LocalSource(store)
    if experiments is not None:
        known = {d["experiment"] for d in details.values()}
        missing = [e for e in experiments if e not in known]
        if missing:
            raise InvalidInputError(f"no experiment named {missing!r} in {src.location}")
        details = {r: d for r, d in details.items() if d["experiment"] in experiments}
    problems = [p for d in details.values() for p in _check(d)]
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise InvalidInputError(
            "MLflow cannot hold these values; nothing was exported: "
            + "; ".join(problems[:10])
            + more
        )
    client = mlflow_client(to_uri, must_exist=False)
    order = parents_first(
        sorted(details, key=lambda r: (details[r]["start_time"], r)),
        lambda r: details[r]["id"],
        lambda r: details[r]["parent_id"],
    )
    exp_ids: dict[str, str] = {}
    seen: dict[str, dict[str, Any]] = {}
    ids: dict[str, str] = {}  # our run id -> MLflow run id
    counts = {"exported": 0, "skipped": 0, "redone": 0, "points": 0, "artifacts": 0}
    bar = progress(total=len(order), desc="mlflow export", unit="run", quiet=quiet)
    with bar, mlflow_errors(f"export to {redact(to_uri)}"):
        for rid in order:
            d = details[rid]
            exp_id = _experiment_id(client, d["experiment"], exp_ids)
            if exp_id not in seen:
                seen[exp_id] = _exported(client, exp_id)
            came_from = d["tags"].get(TAG_MLFLOW_RUN)
            if isinstance(came_from, str) and _active_run(client, came_from):
                ids[d["id"]] = came_from  # imported from this MLflow: it is there already
                counts["skipped"] += 1
                bar.update()
                continue
            old = seen[exp_id].get(d["id"])
            if old is not None and old.data.tags.get(TAG_EXPORTED) == "complete":
                ids[d["id"]] = old.info.run_id
                counts["skipped"] += 1
                bar.update()
                continue
            if old is not None:
                client.delete_run(old.info.run_id)  # an interrupted export: do it again
                counts["redone"] += 1
            mid, points, n_art = _export_one(
                client, src, rid, d, exp_id, ids.get(d["parent_id"] or "")
            )
            ids[d["id"]] = mid
            counts["exported"] += 0 if old is not None else 1
            counts["points"] += points
            counts["artifacts"] += n_art
            bar.update()
    return counts
