"""The model registry through a tracking server (routes: trackserver/registry_routes.py).
mlops_jupyter.registry calls these when MLOPS_JUPYTER_STORE is http(s)://.

- `register` serializes the model locally exactly as on a local store (flavors.py), hashes
  the files, and uploads them the way run artifacts are uploaded (remote/files.py: the
  server answers the contents it lacks, each is streamed and checked against its sha256),
  then the server lays out the version's folder, checks the version digest and records
  it. The request carries a random key, so a retry after a lost answer returns the same
  version instead of adding a second one; an unreachable server is retried for RETRY_S.
- `version_files` is the read side the registry's loader uses: the version's folder is
  downloaded into the local read-through cache (artifacts/cache.py, refreshed when the
  stored files change) and the registry verifies its digest, as with object storage.
- Reads and alias changes are retried while the server cannot be reached; a promotion is
  sent once (repeating it after a lost answer would be refused as already done)."""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from ..artifacts.base import ArtifactStore, ObjectInfo, check_key, tree_files
from ..errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    InvalidInputError,
    RunNotFoundError,
    StoreError,
)
from ..store.registry import ModelNotFoundError, StageTransitionError
from .api import RemoteStore, remote_store
from .client import ServerRefused, token
from .files import (
    RETRY_S,
    _digest,
    _put_blob,
    _retrying,
    call,
    download,
    token_refused,
)

_BLOCK = 1 << 20


def _model(name: str, tail: str = "") -> str:
    return f"/api/v1/models/{quote(name, safe='')}" + (f"/{tail}" if tail else "")


def _store(url: str) -> RemoteStore:
    store = remote_store(url)
    if not token():
        raise StoreError(
            f"MLOPS_JUPYTER_TOKEN is not set: the tracking server {store.client.shown} needs a "
            "token for the model registry (mlops-jupyter server token add NAME --scope write)"
        )
    return store


def _detail(e: ServerRefused) -> str:
    """The server's message without the 'tracking server URL: status' prefix."""
    return str(e).partition(f": {e.status} ")[2] or str(e)


def _error(store: RemoteStore, e: ServerRefused, what: str) -> Exception:
    """The registry's own exception for a 4xx answer (never the token)."""
    shown, msg = store.client.shown, _detail(e)
    if e.status == 401:
        return token_refused(shown, msg)
    if e.status == 403:
        return StoreError(
            f"the token in MLOPS_JUPYTER_TOKEN may not {what} on the tracking server {shown}: "
            f"{msg}. Registering and aliases need scope write; moving a version into or out "
            "of production needs scope admin"
        )
    if e.code == "ENDPOINT_NOT_FOUND":
        return StoreError(
            f"the tracking server {shown} has no model registry routes (an older version?)"
        )
    if e.code == "RUN_DOES_NOT_EXIST":
        return RunNotFoundError(msg)
    if e.status == 404:
        return ModelNotFoundError(msg)
    if e.status == 409:
        return StageTransitionError(msg)
    if e.code == "DIGEST_MISMATCH":
        return ArtifactIntegrityError(f"cannot {what}: {msg}")
    return InvalidInputError(f"cannot {what}: {msg}")


def _call(
    store: RemoteStore, method: str, path: str, body: Any, what: str, retry: bool = True
) -> Any:
    return call(store, method, path, body, what, _error, retry)


# -- register --------------------------------------------------------------------------


def _run_ref(run: Any) -> str | None:
    """The id of the run to link (its points sent first), or a run id/name, or None."""
    from ..tracking import Run
    from ..tracking.api import active_run

    if run is None:
        run = active_run()
        if run is None:
            return None
    if isinstance(run, Run):
        if "mlops_jupyter.privacy.guarantee" in sys.modules:  # the newest epsilon first
            sys.modules["mlops_jupyter.privacy.guarantee"].flush_run(run.id)
        run.flush()  # metrics default to the run's last values: the server must have them
        return run.id
    if isinstance(run, str) and run:
        return run
    raise InvalidInputError(f"run must be a Run or a run id/name, got {type(run).__name__}")


def register(
    url: str,
    name: str,
    flavor: str,
    save: Callable[[Path], dict],
    run: Any,
    metrics: dict[str, float] | None,
    alias: str | None,
    description: str | None,
    metadata: dict[str, Any] | None,
    signature: dict[str, Any] | None,
) -> int:
    """register_model through the server (arguments checked by the caller); the version."""
    from .. import registry as reg
    from ..config import cache_dir

    store = _store(url)
    if metrics is not None:
        try:
            metrics = {str(k): float(v) for k, v in metrics.items()}
        except (TypeError, ValueError):
            raise InvalidInputError("metrics values must be numbers") from None
    ref = _run_ref(run)
    (cache_dir() / "incoming").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="model-", dir=cache_dir() / "incoming"))
    try:
        meta = save(tmp)
        digest, size = reg._digest(tmp)
        entries = [(rel, f, *_digest(f)) for rel, f in tree_files(tmp)]
        if not entries:
            raise InvalidInputError(f"model {name!r}: there are no files to register")
        if metadata:
            meta = {**meta, "metadata": metadata}
        if signature is not None:
            meta = {**meta, "signature": signature}
        body: dict[str, Any] = {
            "key": secrets.token_hex(8),
            "digest": digest,
            "flavor": flavor,
            "files": [{"name": n, "sha256": d, "size": s} for n, _, d, s in entries],
            "meta": meta,
            "user": reg._user(),
        }
        for k, v in (("metrics", metrics), ("run", ref), ("alias", alias)):
            if v is not None:
                body[k] = v
        if description is not None:
            body["description"] = description
        what = f"register model {name!r}"

        def step() -> dict:
            try:
                out = store.client.request("POST", _model(name, "versions"), body)
                for d in out.get("missing", []):
                    f, s = next((f, s) for _, f, dd, s in entries if dd == d)
                    _put_blob(store, "", f, d, s, route=_model(name, f"blobs/{d}"))
                if out.get("missing"):
                    out = store.client.request("POST", _model(name, "versions"), body)
            except ServerRefused as e:
                raise _error(store, e, what) from None
            return out

        out = _retrying(store, what, step, RETRY_S)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if out.get("missing") or out.get("digest") != digest or out.get("size") != size:
        raise ArtifactIntegrityError(
            f"the tracking server {store.client.shown} did not record {what} as sent "
            f"(missing: {out.get('missing')})"
        )
    return int(out["version"])


# -- reads -----------------------------------------------------------------------------


def find_version(
    url: str,
    name: str,
    version: int | None = None,
    stage: str | None = None,
    alias: str | None = None,
) -> dict[str, Any]:
    """One version's details (as store.registry.find_version)."""
    q = {
        k: v for k, v in (("version", version), ("stage", stage), ("alias", alias)) if v is not None
    }
    path = _model(name, "find") + (f"?{urlencode(q)}" if q else "")
    return _call(_store(url), "GET", path, None, f"read model {name!r}")


def list_versions(url: str, name: str | None = None) -> list[dict[str, Any]]:
    """Every version (of one model, or of all), as store.registry.list_versions."""
    path = "/api/v1/models" + (f"?{urlencode({'name': name})}" if name is not None else "")
    return _call(_store(url), "GET", path, None, "list models")["versions"]


def audit_log(url: str, name: str | None = None) -> list[tuple]:
    """The audit log rows, as store.registry.audit_log."""
    path = "/api/v1/model-audit" + (f"?{urlencode({'name': name})}" if name is not None else "")
    return [tuple(r) for r in _call(_store(url), "GET", path, None, "read the audit log")["rows"]]


# -- changes ---------------------------------------------------------------------------


def promote(
    url: str, name: str, version: int, stage: str, reason: str | None, archive_existing: bool
) -> list[dict[str, Any]]:
    """promote_model through the server; the transitions made."""
    from .. import registry as reg

    body = {"stage": stage, "archive_existing": archive_existing, "user": reg._user()}
    if reason is not None:
        body["reason"] = reason
    path = _model(name, f"versions/{version}/stage")
    what = f"move {name} v{version} to {stage!r}"
    return _call(_store(url), "POST", path, body, what, retry=False)["changes"]


def set_alias(url: str, name: str, alias: str, version: int | None) -> int | None:
    """Point `alias` at `version` (None: remove it); the version it pointed to."""
    from .. import registry as reg

    store = _store(url)
    path = _model(name, f"aliases/{quote(alias, safe='')}")
    if version is None:
        path += "?" + urlencode({"user": reg._user()})
        return _call(store, "DELETE", path, None, f"remove alias {alias!r}")["previous"]
    body = {"version": version, "user": reg._user()}
    return _call(store, "PUT", path, body, f"set alias {alias!r}")["previous"]


# -- downloads -------------------------------------------------------------------------


class VersionFiles(ArtifactStore):
    """The stored folder of one version on the server, as the read side of an artifact
    store: what the read-through cache lists and downloads (then the registry verifies the
    version digest)."""

    kind = "server"

    def __init__(self, store: RemoteStore, info: dict[str, Any]) -> None:
        self.remote, self.info = store, info
        self.name, self.version, self.prefix = info["name"], info["version"], info["path"]
        self.location = f"{store.client.shown} (model {self.name})"

    def _path(self, tail: str) -> str:
        return _model(self.name, f"versions/{self.version}/{tail}")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if prefix != self.prefix:
            return iter(())
        try:
            out = self.remote.client.request("GET", self._path("files"))
        except ServerRefused as e:
            if e.status == 404:
                raise ArtifactNotFoundError(_detail(e)) from None
            raise _error(self.remote, e, f"read {self.name} v{self.version}") from None
        return iter(
            ObjectInfo(f"{prefix}/{check_key(f['name'])}", int(f["size"]), float(f["modified"]))
            for f in out["files"]
        )

    def get_file(self, key: str, dest: Path) -> int:
        rel = check_key(key[len(self.prefix) + 1 :] if key.startswith(self.prefix + "/") else "")
        path = self._path("file?" + urlencode({"name": rel}))
        try:
            return download(self.remote, path, Path(dest), repr(rel))
        except ServerRefused as e:
            if e.status == 404:
                raise ArtifactNotFoundError(_detail(e)) from None
            raise _error(self.remote, e, f"download {rel!r}") from None

    def tree_local(self, prefix: str) -> Path:
        what = f"download {self.name} v{self.version}"
        return _retrying(
            self.remote, what, lambda: super(VersionFiles, self).tree_local(prefix), RETRY_S
        )

    def _read_only(self, *a: Any, **kw: Any) -> Any:
        raise StoreError("model versions on a tracking server are written with register_model")

    put_file = put_stream = iter_bytes = delete = _read_only

    def head(self, key: str) -> ObjectInfo | None:
        return None


def version_files(url: str, info: dict[str, Any]) -> VersionFiles:
    """The read side of version `info`'s stored folder on server `url`."""
    return VersionFiles(_store(url), info)
