"""The model registry over the tracking server (`/api/v1/models...`), so a remote client's
`mj.register_model`, `load_model`, `model_path`, `promote_model`, aliases, `mj.models()` and
`mj.model_history()` work as on a local store (client: remote/registry.py).

Registering takes the upload steps of run artifacts (run_files.py):
1. `POST /api/v1/models/{name}/versions` with the version's files (name, sha256, size), its
   digest and a random request `key`: answers the contents the artifact store lacks;
2. `PUT /api/v1/models/{name}/blobs/{sha256}` streams each (hashed, stored only if exact);
3. the same POST again: the server lays the files out as the version's folder
   (`models/<name>/<digest16>-<key>`), re-computes the version digest the way a local
   registration does (400 DIGEST_MISMATCH otherwise, nothing recorded) and records the
   version with the registry's store functions. The folder is named by the request key, so
   a request sent again returns the version it made instead of adding a second one.

Scopes: reads need `read`; registering and aliases need `write`; a stage change that
enters or leaves `production` needs `admin` (other stage changes `write`). The audit log
names the token (and the client's login name, as the client reports it)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import registry as reg
from ..artifacts.base import check_key, model_key
from ..errors import ArtifactNotFoundError, InvalidInputError, RunNotFoundError
from ..store import registry as rs
from ..store import runs as rstore
from ..store import tokens as tstore
from ..store.registry import ModelNotFoundError, StageTransitionError
from .app import BaseHandler, HTTPError, check_value
from .run_files import BlobHandler, _files

_KEY = re.compile(r"^[0-9a-f]{12,32}$")
_FLAVORS = ("torch", "mlx", "files", "pickle")
_CHUNK = 1 << 20


class _Handler(BaseHandler):
    """Registry errors as JSON: an unknown model 404, a refused stage change 409."""

    def authorize(self) -> str:
        name = super().authorize()
        self.token_name = name
        return name

    def who(self, body: dict | None = None) -> str:
        """The audit log's user: the token, and the login name the client reports."""
        login = (body or {}).get("user")
        if isinstance(login, str) and 0 < len(login) <= 64 and login.isprintable():
            return f"{login} (token {self.token_name})"
        return f"token {self.token_name}"

    async def go(self, fn) -> None:
        def wrapped() -> Any:
            try:
                return fn()
            except ModelNotFoundError as e:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", str(e)) from None
            except StageTransitionError as e:
                raise HTTPError(409, "INVALID_STATE", str(e)) from None
            except RunNotFoundError as e:
                raise HTTPError(404, "RUN_DOES_NOT_EXIST", str(e)) from None

        await self.handle(wrapped)


def _name(name: str, what: str = "model name") -> str:
    try:
        return reg._check_name(name, what)
    except InvalidInputError as e:
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", str(e)) from None


def _version(v: Any) -> int:
    try:
        return reg._check_version(v)
    except InvalidInputError as e:
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", str(e)) from None


def _public(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k != "id"}


def _list(store: Any, name: str | None) -> dict:
    if name is not None:
        _name(name)
    rows = rs.list_versions(store, name)
    if name is not None and not rows:
        rs.find_version(store, name)  # 404 naming the known models
    return {"versions": [_public(r) for r in rows]}


class ListHandler(_Handler):
    """GET ?name=: every version (of one model, or of all), newest first per model."""

    async def get(self) -> None:
        await self.go(lambda: _list(self.store, self.get_query_argument("name", None)))


class VersionsHandler(_Handler):
    """GET: the model's versions. POST: register one (see the module docstring)."""

    async def get(self, name: str) -> None:
        await self.go(lambda: _list(self.store, name))

    async def post(self, name: str) -> None:
        await self.go(lambda: self._register(_name(name), self.body_json()))

    def _register(self, name: str, body: dict) -> dict:
        key = body.get("key")
        check_value(isinstance(key, str) and bool(_KEY.match(key)), "'key': 12-32 hex chars")
        digest = body.get("digest")
        check_value(
            isinstance(digest, str) and bool(re.fullmatch(r"[0-9a-f]{64}", digest)),
            "'digest' must be a sha256 hex digest",
        )
        flavor = body.get("flavor")
        check_value(flavor in _FLAVORS, f"'flavor' must be one of {_FLAVORS}")
        files = _files(body, self.settings["max_upload"])
        meta = body.get("meta") or {}
        check_value(isinstance(meta, dict), "'meta' must be an object")
        check_value(
            isinstance(meta.get("metadata") or {}, dict), "'meta.metadata' must be an object"
        )
        if meta.get("signature") is not None:  # checked as register_model checks it
            from ..serving.signature import normalize

            meta = {**meta, "signature": normalize(meta["signature"])}
        metrics = body.get("metrics")
        check_value(metrics is None or isinstance(metrics, dict), "'metrics' must be an object")
        try:
            metrics = None if metrics is None else {str(k): float(v) for k, v in metrics.items()}
        except (TypeError, ValueError):
            raise HTTPError(
                400, "INVALID_PARAMETER_VALUE", "metrics values must be numbers"
            ) from None
        description, run, alias = body.get("description"), body.get("run"), body.get("alias")
        for k, v in (("description", description), ("run", run), ("alias", alias)):
            check_value(v is None or isinstance(v, str), f"{k!r} must be a string")
        rstore.check_text(description, "description")
        if alias is not None:
            _name(alias, "alias")
        user = self.who(body)
        prefix = model_key(name, f"{digest[:16]}-{key}")
        done = _existing(self.store, name, prefix)
        if done is not None:  # the same request again (its answer was lost)
            return _public(done)
        blobs = self.store.artifacts
        missing = sorted({d for _, d, _ in files if not blobs.has_blob(d)})
        if missing:
            return {"missing": missing}
        rid = rstore.resolve_run(self.store, run) if run is not None else None
        size = _lay_out(blobs, prefix, files, digest)
        if rid is not None:
            from ..privacy.guarantee import from_run_detail
            from ..store import metrics as mstore
            from ..store import query

            if metrics is None:
                metrics = mstore.last_values(self.store, rid)
            metadata = dict(meta.get("metadata") or {})
            if "privacy" not in metadata:
                if (g := from_run_detail(query.run_detail(self.store, rid))) is not None:
                    meta = {**meta, "metadata": {**metadata, "privacy": g}}
        with self.store.write("register a model version") as c:
            # a retry racing its first request: the model row's lock orders them, and the
            # second sees the first's version (PostgreSQL: read committed, per statement)
            c.execute(
                "INSERT INTO models(name, created) VALUES(?, ?) ON CONFLICT(name) DO NOTHING",
                (name, _now()),
            )
            c.execute("UPDATE models SET description = description WHERE name=?", (name,))
            done = _existing(self.store, name, prefix, c)
            if done is None:
                version = rs.create_version(
                    self.store,
                    name,
                    flavor,
                    prefix,
                    digest,
                    size,
                    rid,
                    metrics,
                    meta,
                    user,
                    description,
                )
                if alias is not None:
                    rs.set_alias(self.store, name, alias, version, user)
        return _public(done or rs.find_version(self.store, name, version))


def _now() -> float:
    import time

    return time.time()


def _existing(store: Any, name: str, prefix: str, c: Any = None) -> dict | None:
    sql = (
        "SELECT v.version FROM model_versions v JOIN models m ON m.id = v.model_id"
        " WHERE m.name=? AND v.path=?"
    )
    rows = (
        c.execute(sql, (name, prefix)).fetchall()
        if c is not None
        else store.read(sql, (name, prefix))
    )
    return rs.find_version(store, name, rows[0][0]) if rows else None


def _lay_out(blobs: Any, prefix: str, files: list[tuple[str, str, int]], digest: str) -> int:
    """Write the version's folder at `prefix` from the uploaded blobs, after checking that
    it has the version digest the client computed; returns its size."""
    home = blobs.local_path(prefix)
    if home is not None:
        tmp = home.parent / f".incoming-{os.urandom(6).hex()}"
        tmp.mkdir(parents=True)
    else:
        from ..config import cache_dir

        (cache_dir() / "incoming").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="model-", dir=cache_dir() / "incoming"))
    try:
        for rel, d, _ in files:
            target = tmp / check_key(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(blobs.blob_file(d), target)
        got, size = reg._digest(tmp)
        if got != digest:
            raise HTTPError(
                400,
                "DIGEST_MISMATCH",
                f"the uploaded files have the version digest {got}, not {digest}: nothing recorded",
            )
        if home is not None:
            try:
                os.replace(tmp, home)
            except OSError:
                if not home.is_dir():
                    raise
                # laid out by an earlier (or a concurrent) try of this same request
        else:
            blobs.put_tree(prefix, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return size


class FindHandler(_Handler):
    """GET ?version=|stage=|alias=: one version (as mj.load_model chooses it)."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            q = {k: self.get_query_argument(k, None) for k in ("version", "stage", "alias")}
            check_value(
                sum(v is not None for v in q.values()) <= 1, "at most one of version, stage, alias"
            )
            v = _version(q["version"]) if q["version"] is not None else None
            check_value(
                q["stage"] is None or q["stage"] in reg.STAGES, f"stage: one of {reg.STAGES}"
            )
            if q["alias"] is not None:
                _name(q["alias"], "alias")
            return _public(rs.find_version(self.store, _name(name), v, q["stage"], q["alias"]))

        await self.go(go)


class FilesHandler(_Handler):
    """GET: the files of one version (name relative to its folder, size, modified)."""

    async def get(self, name: str, version: str) -> None:
        def go() -> dict:
            info = rs.find_version(self.store, _name(name), _version(version))
            p = info["path"]
            out = [
                {"name": i.key[len(p) + 1 :], "size": i.size, "modified": i.modified}
                for i in self.store.artifacts.list(p)
            ]
            return {"path": p, "digest": info["digest"], "files": out}

        await self.go(go)


class FileHandler(_Handler):
    """GET ?name=: the bytes of one file of a version."""

    async def get(self, name: str, version: str) -> None:
        def find() -> tuple[str, int]:
            self.authorize()
            try:
                info = rs.find_version(self.store, _name(name), _version(version))
                rel = self.get_query_argument("name", None)
                check_value(isinstance(rel, str) and bool(rel), "?name= is required")
                key = f"{info['path']}/{check_key(rel)}"
                head = self.store.artifacts.head(key)
            except ModelNotFoundError as e:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", str(e)) from None
            except InvalidInputError as e:
                raise HTTPError(400, "INVALID_PARAMETER_VALUE", str(e)) from None
            if head is None:
                raise HTTPError(
                    404, "RESOURCE_DOES_NOT_EXIST", f"no file {rel!r} in {name} v{version}"
                )
            return key, head.size

        try:
            key, size = await self.run(find)
            chunks = self.store.artifacts.iter_bytes(key)
        except HTTPError as e:
            self.send_error_json(e.status, e.code, e.message)
            return
        except ArtifactNotFoundError as e:
            self.send_error_json(404, "RESOURCE_DOES_NOT_EXIST", str(e))
            return
        except Exception as e:  # the store unreachable
            self.send_error_json(503, "TEMPORARILY_UNAVAILABLE", str(e))
            return
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(size))
        it = iter(chunks)
        while True:
            chunk = await self.run(lambda: next(it, None))
            if chunk is None:
                break
            self.write(chunk)
            await self.flush()
        self.finish()


class StageHandler(_Handler):
    """POST {"stage", "reason"?, "archive_existing"?}: promote_model. Entering or leaving
    production needs an admin token."""

    def needed_scope(self) -> str:
        return "read"  # checked in post(), once the stages are known

    async def post(self, name: str, version: str) -> None:
        def go() -> dict:
            body = self.body_json()
            n, v = _name(name), _version(version)
            stage, reason = body.get("stage"), body.get("reason")
            check_value(stage in reg.STAGES, f"'stage' must be one of {reg.STAGES}")
            check_value(reason is None or isinstance(reason, str), "'reason' must be a string")
            rstore.check_text(reason, "reason")
            archive = body.get("archive_existing", True)
            check_value(isinstance(archive, bool), "'archive_existing' must be true or false")
            current = rs.find_version(self.store, n, v)["stage"]
            need = "admin" if "production" in (stage, current) else "write"
            scope = self._scope()
            if not tstore.scope_allows(scope, need):
                raise HTTPError(
                    403,
                    "PERMISSION_DENIED",
                    f"token {self.token_name!r} has scope {scope}; moving a version "
                    f"{'into' if stage == 'production' else 'out of'} production needs {need}"
                    if need == "admin"
                    else f"token {self.token_name!r} has scope {scope}, not {need}",
                )
            changes = reg.promote_in(self.store, n, v, stage, reason, archive, self.who(body))
            return {"changes": changes}

        await self.go(go)

    def _scope(self) -> str:
        auth = self.request.headers.get("Authorization", "")
        got = tstore.check(self.store, auth.partition(" ")[2].strip())
        return got[1] if got else "read"


class AliasHandler(_Handler):
    """PUT {"version"}: point the alias at it; DELETE: remove it. Answers the version it
    pointed to before."""

    async def put(self, name: str, alias: str) -> None:
        def go() -> dict:
            body = self.body_json()
            a = _name(alias, "alias")
            check_value(a not in reg.STAGES, f"{a!r} is a stage name; choose another alias")
            v = _version(body.get("version"))
            return {"previous": rs.set_alias(self.store, _name(name), a, v, self.who(body))}

        await self.go(go)

    async def delete(self, name: str, alias: str) -> None:
        def go() -> dict:
            user = self.who({"user": self.get_query_argument("user", None)})
            return {
                "previous": rs.set_alias(self.store, _name(name), _name(alias, "alias"), None, user)
            }

        await self.go(go)


class AuditHandler(_Handler):
    """GET ?name=: the audit log (oldest first), as rows."""

    async def get(self) -> None:
        def go() -> dict:
            name = self.get_query_argument("name", None)
            if name is not None:
                _name(name)
            return {"rows": [list(r) for r in rs.audit_log(self.store, name)]}

        await self.go(go)


class ModelBlobHandler(BlobHandler):
    """PUT one file of a version being registered (content-addressed, as run artifacts)."""

    def check_owner(self, name: str) -> None:
        _name(name)


ROUTES = [
    (r"/api/v1/models", ListHandler),
    (r"/api/v1/model-audit", AuditHandler),
    (r"/api/v1/models/([^/]+)/versions", VersionsHandler),
    (r"/api/v1/models/([^/]+)/find", FindHandler),
    (r"/api/v1/models/([^/]+)/versions/([^/]+)/files", FilesHandler),
    (r"/api/v1/models/([^/]+)/versions/([^/]+)/file", FileHandler),
    (r"/api/v1/models/([^/]+)/versions/([^/]+)/stage", StageHandler),
    (r"/api/v1/models/([^/]+)/aliases/([^/]+)", AliasHandler),
    (r"/api/v1/models/([^/]+)/blobs/([^/]+)", ModelBlobHandler),
]
