"""The feature store through a tracking server (routes: trackserver/feature_routes.py).
mlops_jupyter.features calls these when MLOPS_JUPYTER_STORE is http(s)://.

- `register`: the caller has computed the frame, code hash and schema exactly as locally;
  here the frame is profiled (data version record) and written as parquet, and the server
  is asked to record the view version: it answers the parquet's digest while it lacks it,
  the file is streamed (the server hashes it and keeps it only if exact) and the request is
  sent again. Every step can be repeated, so an unreachable server is retried for RETRY_S.
- `offline_file`: a materialization's parquet, downloaded into the local read-through cache
  (artifacts/cache.py) with its sha256 checked.
- `record_training_set`: the client joined; the server records the labels' and the
  result's data versions, the lineage and the run link.
- The online store's log (`record_online`, `has_online`, `online_materializations`; a
  log entry carries a request key made here, so its retry after a lost answer logs nothing
  twice), and
  `ServerOnline`: the team store's online table through the server (a Redis online store
  is reached by the client itself, features/online.py)."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import polars as pl

from ..artifacts.base import ArtifactStore, ObjectInfo, digest_of_key
from ..errors import ArtifactIntegrityError, InvalidInputError, RunNotFoundError, StoreError
from ..store.features import FeatureVersionConflictError, FeatureViewNotFoundError
from .api import RemoteStore
from .client import ServerRefused, token
from .data import _finite, _run_ref
from .data import has_profile as _has_profile
from .files import RETRY_S, _digest, _put_blob, _refused, _retrying, call, download

_BASE = "/api/v1/features"


def _view_path(name: str, tail: str = "") -> str:
    return f"{_BASE}/views/{quote(name, safe='')}" + (f"/{tail}" if tail else "")


def _error(
    store: RemoteStore, e: ServerRefused, what: str, not_found: type = FeatureViewNotFoundError
) -> Exception:
    """The feature store's own exception for a 4xx answer (never the token)."""
    msg = str(e).partition(f": {e.status} ")[2] or str(e)
    if e.code == "ENDPOINT_NOT_FOUND":
        return StoreError(
            f"the tracking server {store.client.shown} has no feature store routes (an older "
            "version?)"
        )
    if e.code == "RUN_DOES_NOT_EXIST":
        return RunNotFoundError(msg)
    if e.status == 404:
        return not_found(msg)
    if e.status == 409:
        return FeatureVersionConflictError(msg)
    if e.status == 403:
        return StoreError(
            f"the token in MLOPS_JUPYTER_TOKEN may not {what} on the tracking server "
            f"{store.client.shown} (a read token? this needs scope write): {msg}"
        )
    if e.status == 400:
        return InvalidInputError(f"cannot {what}: {msg}")
    return _refused(store, e, what)


def _need_token(store: RemoteStore) -> None:
    if not token():
        raise StoreError(
            f"MLOPS_JUPYTER_TOKEN is not set: the tracking server {store.client.shown} needs a "
            "token for the feature store (mlops-jupyter server token add NAME --scope write)"
        )


def _call(
    store: RemoteStore,
    method: str,
    path: str,
    body: Any,
    what: str,
    not_found: type = FeatureViewNotFoundError,
) -> Any:
    """One request, retried while the server cannot be reached (every route is idempotent
    or a read)."""
    _need_token(store)
    return call(store, method, path, body, what, lambda s, e, w: _error(s, e, w, not_found))


def frame_record(store: RemoteStore, df: pl.DataFrame, name: str) -> dict[str, Any]:
    """The data version record of `df`, as features/views.save_frame makes it locally (a
    frame the server holds with its profile is only named, not profiled again)."""
    from ..data.catalog import identity, object_record
    from ..data.fingerprint import version_id

    kind, fp = identity(df, df)
    if _has_profile(store, fp):
        rec = {"fingerprint": fp, "id": version_id(fp), "kind": kind, "name": name}
    else:
        rec, _ = object_record(df, name, df=df)
    return _finite(json.loads(json.dumps(rec, default=str)))


def register(
    store: RemoteStore, rec: dict[str, Any], version: int | None, df: pl.DataFrame
) -> tuple[dict[str, Any], bool]:
    """Register view version `rec` (as features/views.register_features builds it) with
    offline data `df`; returns (the view as store/features.get_view gives it, whether the
    version is new)."""
    from ..features.views import _epoch

    name, ts = rec["name"], rec["timestamp"]
    view = {k: rec[k] for k in rec if k not in ("name", "def_hash")}
    data = frame_record(store, df, f"features/{name}")
    col = df.get_column(ts).drop_nulls()
    what = f"register feature view {name!r}"
    with tempfile.TemporaryDirectory(prefix="mj-features-") as tmp:
        path = Path(tmp) / "features.parquet"
        df.write_parquet(path, statistics=True)
        digest, size = _digest(path)
        body: dict[str, Any] = {
            "view": view,
            "data": data,
            "materialization": {
                "digest": digest,
                "size": size,
                "n_rows": df.height,
                "oldest": _epoch(col.min()) if len(col) else None,
                "newest": _epoch(col.max()) if len(col) else None,
            },
        }
        if version is not None:
            body["version"] = version

        def step() -> dict:
            try:
                out = store.client.request("POST", _view_path(name), body)
                if out.get("missing"):
                    route = f"{_BASE}/{quote(name, safe='')}/blobs/{digest}"
                    _put_blob(store, "", path, digest, size, route=route)
                    out = store.client.request("POST", _view_path(name), body)
            except ServerRefused as e:
                raise _error(store, e, what) from None
            return out

        _need_token(store)
        out = _retrying(store, what, step, RETRY_S)
    if out.get("missing") or "view" not in out:
        raise ArtifactIntegrityError(
            f"the tracking server {store.client.shown} did not store the offline data of "
            f"{what} (missing: {out.get('missing')})"
        )
    return out["view"], bool(out["new"])


def get_view(store: RemoteStore, name: str, version: int | None) -> dict[str, Any]:
    """One view version (the current one when `version` is None), as store/features.get_view."""
    path = _view_path(name) + (f"?{urlencode({'version': version})}" if version is not None else "")
    return _call(store, "GET", path, None, f"read feature view {name!r}")


def list_views(store: RemoteStore, all_versions: bool) -> list[dict[str, Any]]:
    """The views, as store/features.list_views."""
    q = urlencode({"all": "true" if all_versions else "false"})
    return _call(store, "GET", f"{_BASE}/views?{q}", None, "list feature views")["views"]


class _FeatureData(ArtifactStore):
    """The server's feature parquet files, as the read side of an artifact store: what the
    read-through cache downloads from (and then verifies)."""

    kind = "server"

    def __init__(self, store: RemoteStore) -> None:
        self.remote = store
        self.location = f"{store.client.shown} (feature data)"

    def get_file(self, key: str, dest: Path) -> int:
        digest = digest_of_key(key)

        def stored(resp: Any) -> str:
            if resp.getheader("X-Content-SHA256") != digest:
                raise ArtifactIntegrityError(f"feature data {digest[:12]} changed while read")
            return digest

        path = f"{_BASE}/data/{digest}"
        return download(self.remote, path, Path(dest), f"feature data {digest[:12]}", sha256=stored)

    def _read_only(self, *a: Any, **kw: Any) -> Any:
        raise StoreError("feature data on a tracking server is written by registering a view")

    put_file = put_stream = iter_bytes = delete = _read_only

    def head(self, key: str) -> ObjectInfo | None:
        return None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(())


def offline_file(store: RemoteStore, digest: str) -> Path:
    """A verified local copy (in the read-through cache) of the parquet `digest`."""
    from ..artifacts import cache

    what = f"download feature data {digest[:12]}"

    def step() -> Path:
        try:
            return cache.fetch(_FeatureData(store), digest)
        except ServerRefused as e:
            raise _error(store, e, what) from None

    return _retrying(store, what, step, RETRY_S)


def record_training_set(
    store: RemoteStore,
    name: str,
    labels: pl.DataFrame,
    out: pl.DataFrame,
    sources: list[dict[str, Any]],
    run: Any,
) -> dict[str, Any]:
    """Record a training set joined here: data versions `name:labels` and `name`, the
    lineage (each view version and the materialization read) and the link to `run` (the
    active run when None; False: none). Returns the training set's data version."""
    from ..tracking.api import active_run

    if run is None:
        run = active_run()
    body: dict[str, Any] = {
        "name": name,
        "labels": frame_record(store, labels, f"{name}:labels"),
        "output": frame_record(store, out, name),
        "sources": [
            {k: s[k] for k in ("view", "version", "data_version", "features")} for s in sources
        ],
    }
    if run is not None and run is not False:
        body["run"] = _run_ref(run)
    what = f"record training set {name!r}"
    return _call(store, "POST", f"{_BASE}/training-sets", body, what)["version"]


def training_set_sources(store: RemoteStore, ref: str) -> list[dict[str, Any]]:
    """What a recorded training set was built from, as store/features.training_set_sources."""
    from ..store.data import DataVersionNotFoundError

    path = f"{_BASE}/training-sets/{quote(str(ref), safe='')}/sources"
    what = "read training-set lineage"
    return _call(store, "GET", path, None, what, DataVersionNotFoundError)["sources"]


def view_usage(store: RemoteStore, name: str) -> list[dict[str, Any]]:
    """Training sets built from view `name` and their runs, as store/features.view_usage."""
    return _call(store, "GET", _view_path(name, "usage"), None, "read feature view usage")["usage"]


def record_online(
    store: RemoteStore,
    name: str,
    version: int,
    backend: str,
    start: float | None,
    end: float,
    rows: int,
) -> None:
    """Log an online materialization of a view version (written to `backend` already).
    One request key for every try: a retry after a lost answer logs nothing twice."""
    body = {"backend": backend, "start": start, "end": end, "rows": rows, "key": uuid.uuid4().hex}
    path = _view_path(name, f"versions/{int(version)}/online")
    _call(store, "POST", path, body, f"log the online materialization of {name!r}")


def has_online(store: RemoteStore, name: str, version: int, backend: str) -> bool:
    """Whether a view version was materialized to `backend`."""
    path = _view_path(name, f"versions/{int(version)}/online?") + urlencode({"backend": backend})
    return bool(_call(store, "GET", path, None, "read the online store's log")["materialized"])


def online_materializations(store: RemoteStore, view: str | None) -> list[dict[str, Any]]:
    """The online materializations, newest first, as store/features_online's."""
    q = f"?{urlencode({'view': view})}" if view is not None else ""
    path = f"{_BASE}/online-materializations{q}"
    return _call(store, "GET", path, None, "read the online store's log")["materializations"]


class ServerOnline:
    """The team store's online table through the server (features/online.py's backend
    when MLOPS_JUPYTER_ONLINE_STORE is unset or 'store'): the same table, and the same
    backend name, as a client of the store itself writes and reads."""

    name = "store"
    CHUNK = 5_000  # entities a request carries (each request is one transaction)

    def __init__(self, store: RemoteStore) -> None:
        self.remote = store

    def _path(self, view: str, version: int, tail: str) -> str:
        return _view_path(view, f"versions/{int(version)}/online/{tail}")

    def write(self, view: str, version: int, rows: list[tuple[str, float, dict[str, Any]]]) -> int:
        enc = [[k, ts, json.dumps(v, default=str)] for k, ts, v in rows]
        what = f"write online features of {view!r}"
        # a repeated chunk changes nothing (an older ts never replaces a newer one)
        for i in range(0, len(enc), self.CHUNK):
            body = {"rows": enc[i : i + self.CHUNK]}
            _call(self.remote, "POST", self._path(view, version, "rows"), body, what)
        return len(rows)

    def read(
        self, view: str, version: int, keys: list[str], features: list[str]
    ) -> dict[str, tuple[float, list[Any]]]:
        uniq = list(dict.fromkeys(keys))
        got: list[list[Any]] = []
        what = f"read online features of {view!r}"
        for i in range(0, len(uniq), self.CHUNK):
            body = {"keys": uniq[i : i + self.CHUNK]}
            got += _call(self.remote, "POST", self._path(view, version, "read"), body, what)["rows"]
        dicts = json.loads("[" + ",".join(r[2] for r in got) + "]")
        return {r[0]: (r[1], [d.get(f) for f in features]) for r, d in zip(got, dicts)}
