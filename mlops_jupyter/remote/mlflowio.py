"""MLflow import and export over a tracking server (MLOPS_JUPYTER_STORE=http(s)://...).

- Import (`ImportTarget`): each MLflow run becomes a run started with POST /api/v1/runs
  (params, tags and the MLflow run id in one request), its points go through the batched
  ingest route with their own steps and exact millisecond timestamps (each chunk named by
  its first point's index, so a repeated request stores it once), its artifacts through
  the artifact upload path (digests checked), and last its recorded status and times
  (ingest's "recorded" field): an import interrupted before that is completed by the
  next one, as on a direct store. Needs a write token.
- Export (`ExportSource`): runs, params, tags and metric histories from the read routes,
  artifacts downloaded into the read-through cache with their digests verified.

The MLflow side, the one-run step (mlflowio/reading.py: this class is one of its targets),
the loop, the progress bar and the counts are mlflowio/'s own."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np

from ..errors import StoreError
from ..mlflowio.common import TAG_MLFLOW_RUN
from ..mlflowio.reading import downloaded_artifacts, import_one
from ..tracking.artifacts import artifact_files
from . import files
from .api import remote_store
from .client import ServerRefused, ServerUnavailable, token

CHUNK = 4096  # points per chunk, as a direct import stores them
CHUNKS_PER_REQUEST = 32  # about 4 MB of base64 per request, far under the body limit


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype).tobytes()).decode()


class _RunRef:
    """What files.log_artifact needs of a run: its store and id."""

    def __init__(self, store: Any, uid: str) -> None:
        self.store, self.id = store, uid


class _Remote:
    def __init__(self, url: str, what: str) -> None:
        self.store = remote_store(url)
        self.what = what
        self.location = self.store.client.shown
        if not token():
            raise StoreError(
                f"MLOPS_JUPYTER_TOKEN is not set: the tracking server {self.location} needs a "
                "token for MLflow import/export (mlops-jupyter server token add NAME --scope "
                "write)"
            )

    def call(self, method: str, path: str, body: Any = None, *, retry: bool = True) -> Any:
        """One request; 4xx as a clear error, an unreachable server retried (`retry`)."""

        def step() -> Any:
            try:
                return self.store.client.request(method, path, body, resend=retry)
            except ServerRefused as e:
                raise files._refused(self.store, e, self.what) from None

        if not retry:
            return step()
        return files._retrying(self.store, self.what, step, files.RETRY_S)


class ImportTarget(_Remote):
    """The server's store as the target of `mlflowio.import_runs`."""

    def __init__(self, url: str, client: Any) -> None:
        super().__init__(url, "import MLflow runs")
        self.client = client  # the MLflow client reading the source

    def done(self) -> dict[Any, tuple[str, str, float | None]]:
        """Runs imported before: {MLflow run id: (our run id, status, end time)}."""
        q = urlencode({"key": TAG_MLFLOW_RUN})
        out = self.call("GET", f"/api/v1/tagged-runs?{q}")
        return {r["value"]: (r["id"], r["status"], r["end_time"]) for r in out["runs"]}

    def _create(self, mid: str, body: dict[str, Any]) -> str:
        # a run is not idempotent to create: after a lost answer, ask whether it exists
        deadline = time.monotonic() + files.RETRY_S
        while True:
            try:
                return self.call("POST", "/api/v1/runs", body, retry=False)["id"]
            except ServerUnavailable:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)
            try:
                got = self.done().get(mid)
            except StoreError:
                continue
            if got is not None:
                return got[0]

    def import_one(
        self, run: Any, exp_name: str, uri: str, done: dict, pre: dict
    ) -> tuple[str, int, int]:
        """Import or complete one MLflow run; returns (what happened, points, artifacts)."""
        return import_one(self, run, exp_name, uri, done, pre)

    def create(
        self, mid: str, name: str | None, experiment: str, params: dict, tags: dict, parent: Any
    ) -> str:
        """A new running run (POST /api/v1/runs); its id."""
        body: dict[str, Any] = {
            "experiment": experiment,
            "params": params,
            "tags": tags,
            "host": "mlflow-import",
        }
        if name:
            body["name"] = name
        if parent is not None:
            body["parent"] = parent
        return self._create(mid, body)

    def stored_counts(self, rid: str) -> dict[str, int]:
        """Points per metric key that run `rid` holds on the server."""
        detail = self.call("GET", "/api/v1/runs/" + quote(rid, safe=""))
        return {m["key"]: m["count"] for m in detail["metrics"]}

    def write(
        self,
        rid: str,
        run: Any,
        series: dict[str, tuple],
        have: dict[str, int],
        again: tuple[dict, dict] | None,
        recorded: tuple[str, float, float | None],
    ) -> tuple[int, int]:
        """The points through the ingest route (params/tags `again` with the first chunk),
        the artifacts through the upload path, then the recorded status and times."""
        entry: dict[str, Any] = {"id": rid}
        if again is not None:
            entry["params"], entry["tags"] = again
        chunks, points = [], 0
        for key in sorted(series):
            steps, ts, vals = series[key]
            off = have.get(key, 0)
            for i in range(off, len(vals), CHUNK):
                sl = slice(i, i + CHUNK)
                chunks.append(
                    {
                        "key": key,
                        "seq": i,  # the first point's index: the same chunk again is a repeat
                        "values_b64": _b64(vals[sl], "<f8"),
                        "steps_b64": _b64(steps[sl], "<i8"),
                        "timestamps_ms_b64": _b64(ts[sl], "<i8"),
                    }
                )
                points += len(vals[sl])
        status, start, end = recorded
        times = {"status": status, "start_time": start, "end_time": end}
        with downloaded_artifacts(self.client, run) as root:
            bodies = [
                {**entry, "chunks": chunks[i : i + CHUNKS_PER_REQUEST]}
                for i in range(0, max(len(chunks), 1), CHUNKS_PER_REQUEST)
            ]
            if root is None:  # nothing to upload: the times go with the last points
                bodies[-1]["recorded"] = times
            for b in bodies:
                self.call("POST", "/api/v1/ingest", {"runs": [b]})
            n_art = 0
            if root is not None:
                ref = _RunRef(self.store, rid)
                for item in sorted(root.iterdir()):
                    n_art += len(artifact_files(item, item.name, Path(os.devnull))[0])
                    files.log_artifact(ref, item, item.name)  # type: ignore[arg-type]
                # last: an import interrupted before this is completed by the next one
                self.call("POST", "/api/v1/ingest", {"runs": [{"id": rid, "recorded": times}]})
        return points, n_art


class ExportSource(_Remote):
    """The server's store as the source of `mlflowio.export_runs`."""

    def __init__(self, url: str) -> None:
        super().__init__(url, "export runs to MLflow")
        from .sender import remote_writer

        # what this process logged through the server is there before it is read
        remote_writer(self.store).flush()
        self._frame: tuple[Any, Any] | None = None  # (run index, its points), one run at a time
        self._details: dict[int, dict[str, Any]] = {}

    def details(self) -> dict[int, dict[str, Any]]:
        """Every run as run_detail gives it, keyed by its place in start order."""
        listed: list[dict[str, Any]] = []
        while True:
            q = urlencode({"limit": 1000, "offset": len(listed)})
            page = self.call("GET", f"/api/v1/runs?{q}")
            listed += page["runs"]
            if not page["runs"] or len(listed) >= page["total"]:
                break
        listed.sort(key=lambda r: (r["start_time"], r["id"]))
        self._details = {
            i: self.call("GET", "/api/v1/runs/" + quote(r["id"], safe=""))
            for i, r in enumerate(listed)
        }
        return self._details

    def series(self, rid: int, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, ts ms, values) of one run/key, in step order (as a direct store)."""
        import polars as pl

        from .api import _frame

        if self._frame is None or self._frame[0] != rid:
            q = urlencode({"run": self._details[rid]["id"]})
            self._frame = (rid, _frame(self.call("GET", f"/api/v1/frames/metrics?{q}")))
        df = self._frame[1].filter(pl.col("key") == key)
        return (
            df["step"].to_numpy().astype(np.int64),
            df["ts"].dt.epoch("ms").to_numpy().astype(np.int64),
            df["value"].to_numpy().astype(np.float64),
        )

    def blob_file(self, rid: int, artifact: dict) -> Path:
        """A verified local copy (in the read-through cache) of one artifact."""
        return files.artifact_path(self.store, self._details[rid]["id"], artifact["name"])
