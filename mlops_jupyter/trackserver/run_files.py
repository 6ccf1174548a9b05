"""Run events and artifacts over the tracking server (`/api/v1/runs/{id}/events`,
`.../artifacts`, `.../blobs/{sha256}`, `.../artifact?name=`), so a remote client's
`run.add_event`, `run.log_artifact` and `run.artifact_path` work as on a local store.

Artifacts are uploaded in three steps, so a retry never duplicates nor corrupts anything:
1. `POST .../artifacts {"files": [{"name", "sha256", "size"}]}` checks every name and size
   (413 over the upload limit, nothing recorded) and answers the digests the artifact
   store lacks (`missing`); with none missing it records every file at once.
2. `PUT .../blobs/{sha256}` streams one missing file; the server hashes what it received
   and stores it content-addressed only if it is exactly those bytes (400 otherwise).
   The token, the run and the declared size are checked before the body is read.
3. The same POST again: everything is present now, so the files are recorded.
Files live in `store.artifacts` (the artifact-store contract); rows in the store."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from ..artifacts.base import check_digest, check_key
from ..errors import ArtifactNotFoundError, InvalidInputError, RunNotFoundError, StoreError
from ..store import ingest as ing
from ..store import runs as rstore
from ..store.artifact_refs import run_artifacts
from .app import BaseHandler, HTTPError, TooLarge, check_value

MAX_FILES = 10_000  # per artifacts request
MAX_EVENT_KEY = 64
_EARLY = 1 << 20  # a refused upload larger than this is answered before its body is read


def _uid_row(store: Any, uid: str) -> ing.RunRow:
    return ing.run_by_uid(store, uid)


def _number(body: dict, name: str) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    check_value(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e11,
        f"{name!r} must be seconds since the epoch",
    )
    return float(v)


def _text(body: dict, name: str, required: bool = False, default: str | None = None) -> Any:
    v = body.get(name)
    if v is None:
        check_value(not required, f"{name!r} is required")
        return default
    check_value(isinstance(v, str), f"{name!r} must be a string, got {type(v).__name__}")
    rstore.check_text(v, name)
    return v


def add_event_once(
    store: Any, rid: int, key: str | None, fields: tuple[str, str, str, Any, float, float | None]
) -> int:
    """The store's add_event, once per (run, key): a request sent again (a retry after a
    lost answer) returns the first event's id instead of adding a second one."""
    if key is None:
        return rstore.add_event(store, rid, *fields)
    with store.write("record a run event") as c:  # add_event's write nests (a savepoint)
        fresh = c.execute(
            "INSERT INTO run_event_keys(run_id, key, event_id) VALUES(?,?,0)"
            " ON CONFLICT DO NOTHING",
            (rid, key),
        ).rowcount
        if not fresh:
            return c.execute(
                "SELECT event_id FROM run_event_keys WHERE run_id=? AND key=?", (rid, key)
            ).fetchone()[0]
        eid = rstore.add_event(store, rid, *fields)
        c.execute("UPDATE run_event_keys SET event_id=? WHERE run_id=? AND key=?", (eid, rid, key))
        return eid


class EventsHandler(BaseHandler):
    """POST {"kind", "message", "level"?, "data"?, "start"?, "end"?, "key"?} -> {"id"}."""

    async def post(self, uid: str) -> None:
        def go() -> dict:
            body = self.body_json()
            kind = _text(body, "kind", True)
            check_value(bool(kind.strip()), "'kind' must not be empty")
            message = _text(body, "message", True)
            level = _text(body, "level", default="info")
            data = body.get("data")
            check_value(data is None or isinstance(data, dict), "'data' must be an object")
            start = _number(body, "start") or time.time()
            end = _number(body, "end")
            key = _text(body, "key")
            check_value(
                key is None or 0 < len(key) <= MAX_EVENT_KEY, f"'key': 1 to {MAX_EVENT_KEY} chars"
            )
            rid = _uid_row(self.store, uid).rid
            eid = add_event_once(self.store, rid, key, (kind, message, level, data, start, end))
            ing.beat(self.store, rid)
            return {"id": eid}

        await self.handle(go)


def _files(body: dict, limit: int) -> list[tuple[str, str, int]]:
    raw = body.get("files")
    check_value(isinstance(raw, list) and raw, "'files' must be a non-empty list")
    check_value(len(raw) <= MAX_FILES, f"at most {MAX_FILES} files a request")
    out: dict[str, tuple[str, str, int]] = {}
    for i, f in enumerate(raw):
        where = f"files[{i}]"
        check_value(isinstance(f, dict), f"{where} must be an object")
        name, digest, size = f.get("name"), f.get("sha256"), f.get("size")
        check_value(isinstance(name, str), f"{where}.name must be a string")
        try:
            check_key(name)  # relative POSIX, no '..', no absolute path, no control chars
            check_digest(digest)
        except InvalidInputError as e:
            raise HTTPError(400, "INVALID_PARAMETER_VALUE", f"{where}: {e}") from None
        check_value(
            isinstance(size, int) and not isinstance(size, bool) and size >= 0,
            f"{where}.size must be a non-negative integer",
        )
        if size > limit:
            raise HTTPError(
                413,
                "REQUEST_LIMIT_EXCEEDED",
                f"artifact {name!r} is {size} bytes; this server takes files up to {limit} bytes",
            )
        out[name] = (name, digest, size)
    return list(out.values())


class ArtifactsHandler(BaseHandler):
    """GET: the run's artifacts. POST {"files": [...]}: record them if every blob is stored,
    else answer the missing digests (nothing recorded)."""

    async def get(self, ref: str) -> None:
        def go() -> dict:
            rows = run_artifacts(self.store, rstore.resolve_run(self.store, ref))
            arts = [
                {**{k: a[k] for k in ("name", "size", "created")}, "sha256": a["digest"]}
                for a in rows
            ]
            return {"artifacts": arts, "max_upload": self.settings["max_upload"]}

        await self.handle(go)

    async def post(self, uid: str) -> None:
        def go() -> dict:
            files = _files(self.body_json(), self.settings["max_upload"])
            rid = _uid_row(self.store, uid).rid
            blobs = self.store.artifacts
            missing = sorted({d for _, d, _ in files if not blobs.has_blob(d)})
            if missing:
                return {"recorded": [], "missing": missing}
            now = time.time()
            rstore.add_artifacts(self.store, [(rid, n, d, s, now) for n, d, s in files])
            ing.beat(self.store, rid)
            return {"recorded": [{"name": n, "sha256": d, "size": s} for n, d, s in files]}

        await self.handle(go)


class BlobHandler(BaseHandler):
    """PUT the bytes of one blob; stored only when they hash to the digest in the path."""

    to_file = True

    def initialize(self, **kw: Any) -> None:
        super().initialize(**kw)
        self._hash = hashlib.sha256()
        self._who: str | None = None
        self._refusal: HTTPError | None = None

    def authorize(self) -> str:
        if self._who is None:
            self._who = super().authorize()
        return self._who

    async def prepare(self) -> None:
        # check before the body is read: a wrong token, run or digest, or a declared size
        # over the limit never costs a whole upload. A large body is refused at once
        # (tornado then closes the connection); a small one is read and dropped first, so
        # the client sees the answer instead of a broken pipe
        super().prepare()
        uid, digest = self.path_args[0], self.path_args[1]
        try:
            if self._over:
                raise TooLarge(self.limit)
            await self.run(self.authorize)
            try:
                check_digest(digest)
            except InvalidInputError as e:
                raise HTTPError(400, "INVALID_PARAMETER_VALUE", str(e)) from None
            await self.run(lambda: self.check_owner(uid))
            return
        except HTTPError as e:
            err = e
        except RunNotFoundError as e:
            err = HTTPError(404, "RESOURCE_DOES_NOT_EXIST", str(e))
        except StoreError as e:
            err = HTTPError(503, "TEMPORARILY_UNAVAILABLE", str(e))
        try:
            # no Content-Length (a chunked body): its size is unknown, so refuse at once
            declared = int(self.request.headers.get("Content-Length", str(_EARLY + 1)))
        except ValueError:
            declared = _EARLY + 1
        if declared > _EARLY or isinstance(err, TooLarge):
            self.send_error_json(err.status, err.code, err.message)
        else:
            self._refusal = err

    def check_owner(self, uid: str) -> None:
        """Refuse (before the body is read) an upload for a run that does not exist; the
        registry's uploads (registry_routes.py) check a model name instead."""
        _uid_row(self.store, uid)

    def _keep(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # refused already: the body is only read, not kept
        super()._keep(data)
        if not self._over:
            self._hash.update(data)

    def received(self, digest: str) -> Path:
        """The received body's file, once it is known to hash to `digest` (else the
        refusal, 413, or a 400 DIGEST_MISMATCH: nothing is stored)."""
        if self._refusal is not None:
            raise self._refusal
        self.body_bytes()  # 413 / bad gzip
        got = self._hash.hexdigest()
        if got != digest:
            raise HTTPError(
                400,
                "DIGEST_MISMATCH",
                f"the body's sha256 is {got}, not {digest}: nothing stored (send it again)",
            )
        if self._file is None:  # an empty file
            import tempfile

            self._file = tempfile.NamedTemporaryFile(prefix="mj-upload-", delete=False)
        self._file.flush()
        return Path(self._file.name)

    async def put(self, uid: str, digest: str) -> None:
        def go() -> dict:
            received = self.received(digest)
            blobs = self.store.artifacts
            size = self._size
            if not blobs.has_blob(digest):  # a retried upload of stored bytes costs nothing
                stored, size = blobs.put_blob(received)
                if stored != digest:  # the temp file changed under us: never record it
                    raise HTTPError(500, "INTERNAL_ERROR", "upload changed while stored")
            return {"sha256": digest, "size": size}

        await self.handle(go)


class ArtifactFileHandler(BaseHandler):
    """GET ?name=N: the bytes of artifact N, with its sha256 in `X-Content-SHA256`."""

    async def get(self, ref: str) -> None:
        def find() -> tuple[Path, str]:
            self.authorize()
            name = self.get_query_argument("name", None)
            check_value(isinstance(name, str) and bool(name), "?name= is required")
            rid = rstore.resolve_run(self.store, ref)
            digest = rstore.artifact_digest(self.store, rid, name)
            if digest is None:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", f"the run has no artifact {name!r}")
            return self.store.artifacts.blob_file(digest), digest

        try:
            local, digest = await self.run(find)
        except HTTPError as e:
            self.send_error_json(e.status, e.code, e.message)
            return
        except (RunNotFoundError, ArtifactNotFoundError) as e:
            self.send_error_json(404, "RESOURCE_DOES_NOT_EXIST", str(e))
            return
        except InvalidInputError as e:
            self.send_error_json(400, "INVALID_PARAMETER_VALUE", str(e))
            return
        except StoreError as e:
            self.send_error_json(503, "TEMPORARILY_UNAVAILABLE", str(e))
            return
        await self.send_file(local, {"X-Content-SHA256": digest})


ROUTES = [
    (r"/api/v1/runs/([^/]+)/events", EventsHandler),
    (r"/api/v1/runs/([^/]+)/artifacts", ArtifactsHandler),
    (r"/api/v1/runs/([^/]+)/artifact", ArtifactFileHandler),
    (r"/api/v1/runs/([^/]+)/blobs/([^/]+)", BlobHandler),
]

_RUN = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_FILE = {
    "type": "object",
    "required": ["name", "sha256", "size"],
    "properties": {
        "name": {"type": "string"},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "size": {"type": "integer", "minimum": 0},
    },
}


def openapi_paths(op: Any, obj: Any) -> dict[str, Any]:
    """This module's routes in the OpenAPI description (`op`, `obj`: openapi's helpers)."""
    blob = op(
        "upload one blob (raw bytes); stored only if they hash to {sha256}",
        params=[
            _RUN,
            {"name": "sha256", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
    )
    blob["requestBody"] = {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
    return {
        "/api/v1/runs/{id}/events": {
            "post": op(
                "add a run event; `key` makes a retried request a no-op",
                obj(
                    {
                        "kind": {"type": "string", "minLength": 1},
                        "message": {"type": "string"},
                        "level": {"type": "string"},
                        "data": {"type": "object", "nullable": True},
                        "start": {"type": "number", "minimum": 0},
                        "end": {"type": "number", "minimum": 0, "nullable": True},
                        "key": {"type": "string", "maxLength": MAX_EVENT_KEY},
                    },
                    ["kind", "message"],
                ),
                [_RUN],
            )
        },
        "/api/v1/runs/{id}/artifacts": {
            "get": op("a run's artifacts (name, sha256, size) and the upload limit", params=[_RUN]),
            "post": op(
                "record artifacts whose blobs are stored; else answer the missing digests",
                obj({"files": {"type": "array", "items": _FILE}}, ["files"]),
                [_RUN],
            ),
        },
        "/api/v1/runs/{id}/artifact": {
            "get": op(
                "the bytes of one artifact (sha256 in X-Content-SHA256)",
                params=[
                    _RUN,
                    {"name": "name", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
            )
        },
        "/api/v1/runs/{id}/blobs/{sha256}": {"put": blob},
    }
