"""The feature store over the tracking server (`/api/v1/features/...`), so a remote
client's `@mj.feature_view`, `mj.register_features`, `mj.feature_views`, `mj.training_set`
and the online store's log work as on a local store (client: remote/features.py).

Registering a view version: the client computes the frame, code hash, schema and profile
exactly as locally and writes the offline parquet; then
1. `POST /api/v1/features/views/{name}` with the definition, the data version record and
   the parquet's digest: answers `{"missing": [digest]}` while the artifact store lacks it;
2. `PUT /api/v1/features/{name}/blobs/{sha256}` streams it (hashed, stored only if exact);
3. the same POST again: the server checks that the parquet has the schema and row count
   sent, computes the definition hash itself and records the version with the store's
   feature functions (store/features.py: same definition -> same version; changed code
   under an explicit version is refused, 409). Every step can be repeated: a retry records
   nothing twice.

Reads: the views (`GET .../views`, `.../views/{name}?version=`), a materialization's
parquet (`GET /api/v1/features/data/{sha256}`, only digests of feature materializations),
training-set lineage and view usage. `POST /api/v1/features/training-sets` records a
training set the client joined: its labels' and its own data versions, lineage rows naming
each view version's materialization, and the link to the run. The online store's log:
`.../views/{name}/versions/{version}/online` (GET: materialized to a backend? POST: log a
materialization; with the client's request key, a log entry sent again after a lost answer
answers the first entry's id and logs nothing), `GET /api/v1/features/online-materializations`, and the team store's
online table: `POST .../online/rows` (write; newer values win, so a repeat changes nothing)
and `POST .../online/read` (a read, `read` scope).

Scopes: reads `read`, the rest `write`."""

from __future__ import annotations

import json
import math
from typing import Any

from ..artifacts.base import check_digest
from ..errors import ArtifactNotFoundError, InvalidInputError, RunNotFoundError, StoreError
from ..features import views
from ..store import data as dstore
from ..store import features as fstore
from ..store import features_online as ostore
from ..store import ingest as ing
from ..store import runs as rstore
from .app import BaseHandler, HTTPError, check_value
from .data_routes import _public as _public_version
from .data_routes import _record
from .run_files import MAX_EVENT_KEY, BlobHandler

MAX_TEXT = 1 << 20  # a view's code and description


class _Handler(BaseHandler):
    """Feature-store errors as JSON: an unknown view 404, a version conflict 409."""

    async def go(self, fn) -> None:
        def wrapped() -> Any:
            try:
                return fn()
            except fstore.FeatureViewNotFoundError as e:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", str(e)) from None
            except fstore.FeatureVersionConflictError as e:
                raise HTTPError(409, "RESOURCE_ALREADY_EXISTS", str(e)) from None
            except RunNotFoundError as e:
                raise HTTPError(404, "RUN_DOES_NOT_EXIST", str(e)) from None

        await self.handle(wrapped)


def _name(name: Any) -> str:
    return views.check_name(name)  # InvalidInputError: 400


def _int(v: Any, what: str, low: int = 1) -> int:
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    check_value(
        isinstance(v, int) and not isinstance(v, bool) and low <= v < 2**62,
        f"{what} must be an integer >= {low}",
    )
    return v


def _time(v: Any, what: str) -> float | None:
    check_value(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
        f"{what} must be seconds since the epoch or null",
    )
    return None if v is None else float(v)


def _text(v: Any, what: str, limit: int = MAX_TEXT) -> str | None:
    check_value(v is None or (isinstance(v, str) and len(v) <= limit), f"{what}: a string")
    rstore.check_text(v, what)
    return v


def _definition(name: str, raw: Any) -> dict[str, Any]:
    """The checked view definition of a request, with the definition hash computed here."""
    check_value(isinstance(raw, dict), "'view' must be an object")
    ents = views._entities(raw.get("entities"))
    ts = raw.get("timestamp")
    check_value(isinstance(ts, str) and bool(ts), "view.timestamp must be a column name")
    check_value(ts not in ents, f"timestamp column {ts!r} is also an entity column")
    ttl = raw.get("ttl_s")
    ttl_s = None if ttl is None else views.parse_ttl(_time(ttl, "view.ttl_s"))
    schema = raw.get("schema")
    check_value(
        isinstance(schema, list)
        and all(
            isinstance(c, dict)
            and set(c) == {"name", "dtype"}
            and isinstance(c["name"], str)
            and isinstance(c["dtype"], str)
            for c in schema
        ),
        "view.schema must be a list of {name, dtype}",
    )
    cols = [c["name"] for c in schema]
    check_value(len(set(cols)) == len(cols), "view.schema names a column twice")
    for c in schema:
        rstore.check_text(c["name"], "a column name")
        rstore.check_text(c["dtype"], "a dtype")
    missing = [c for c in [*ents, ts] if c not in cols]
    check_value(not missing, f"view.schema lacks the key column(s) {missing}")
    check_value(len(cols) > len(ents) + 1, f"feature view {name!r} has no feature columns")
    code_hash = raw.get("code_hash")
    check_value(
        code_hash is None or (isinstance(code_hash, str) and len(code_hash) == 64),
        "view.code_hash must be a sha256 hex digest or null",
    )
    _text(code_hash, "view.code_hash")
    return {
        "name": name,
        "entities": ents,
        "timestamp": ts,
        "ttl_s": ttl_s,
        "schema": schema,
        "def_hash": views.definition_hash(code_hash, ents, ts, ttl_s, schema),
        "code_hash": code_hash,
        "code": _text(raw.get("code"), "view.code"),
        "description": _text(raw.get("description"), "view.description"),
        "owner": _text(raw.get("owner"), "view.owner", 256),
    }


def _check_parquet(blobs: Any, digest: str, schema: list[dict], n_rows: int) -> None:
    """The stored parquet must have the schema and row count the client sent."""
    import polars as pl

    try:
        path = blobs.blob_file(digest)
        got = [{"name": c, "dtype": str(t)} for c, t in pl.read_parquet_schema(path).items()]
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    except (ArtifactNotFoundError, StoreError):
        raise
    except Exception as e:  # not a parquet file
        raise HTTPError(
            400, "INVALID_PARAMETER_VALUE", f"the uploaded offline data is not parquet: {e}"
        ) from None
    if got != schema or rows != n_rows:
        raise HTTPError(
            400,
            "INVALID_PARAMETER_VALUE",
            f"the uploaded offline data has {rows} rows and columns {got}, not {n_rows} rows "
            "and the schema sent: nothing recorded",
        )


class ViewsHandler(_Handler):
    """GET ?all=true: the views (the current version of each, or every version)."""

    async def get(self) -> None:
        def go() -> dict:
            raw = self.get_query_argument("all", "false")
            check_value(raw in ("true", "false"), "all: true or false")
            rows = fstore.list_views(self.store, raw == "true")
            return {"views": rows}  # row ids included: the client keeps them as cache keys

        await self.go(go)


class ViewHandler(_Handler):
    """GET ?version=: one view version. POST: register one (the module docstring)."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            raw = self.get_query_argument("version", None)
            version = None if raw is None else _int(raw, "version")
            return fstore.get_view(self.store, _name(name), version)

        await self.go(go)

    async def post(self, name: str) -> None:
        await self.go(lambda: self._register(_name(name), self.body_json()))

    def _register(self, name: str, body: dict) -> dict:
        rec = _definition(name, body.get("view"))
        version = body.get("version")
        if version is not None:
            version = _int(version, "version")
        data = _record(body.get("data"))
        mat = body.get("materialization")
        check_value(isinstance(mat, dict), "'materialization' must be an object")
        digest = mat.get("digest")
        try:
            check_digest(digest)
        except InvalidInputError as e:
            raise HTTPError(
                400, "INVALID_PARAMETER_VALUE", f"materialization.digest: {e}"
            ) from None
        size = _int(mat.get("size"), "materialization.size", 0)
        n_rows = _int(mat.get("n_rows"), "materialization.n_rows", 0)
        check_value(data.get("n_rows") in (None, n_rows), "data.n_rows differs from n_rows")
        oldest = _time(mat.get("oldest"), "materialization.oldest")
        newest = _time(mat.get("newest"), "materialization.newest")
        blobs = self.store.artifacts
        if not blobs.has_blob(digest):
            return {"missing": [digest]}
        _check_parquet(blobs, digest, rec["schema"], n_rows)
        view_id, ver, is_new = fstore.register_view(self.store, rec, version)
        dv_rid, _ = dstore.save_version(self.store, data)
        fstore.add_materialization(
            self.store,
            view_id,
            {
                "data_version_id": dv_rid,
                "digest": digest,
                "size": size,
                "n_rows": n_rows,
                "oldest": oldest,
                "newest": newest,
            },
        )
        return {"view": fstore.get_view(self.store, name, ver), "new": is_new}


class UsageHandler(_Handler):
    """GET: the training sets built from a view (any version) and the runs that used them."""

    async def get(self, name: str) -> None:
        await self.go(lambda: {"usage": fstore.view_usage(self.store, _name(name))})


class DataHandler(_Handler):
    """GET: the parquet of a feature materialization (by its sha256, in X-Content-SHA256)."""

    async def get(self, digest: str) -> None:
        def find() -> Any:
            self.authorize()
            try:
                check_digest(digest)
            except InvalidInputError as e:
                raise HTTPError(400, "INVALID_PARAMETER_VALUE", str(e)) from None
            rows = self.store.read(
                "SELECT 1 FROM feature_materializations WHERE digest=? LIMIT 1", (digest,)
            )
            if not rows:
                raise HTTPError(
                    404, "RESOURCE_DOES_NOT_EXIST", f"no feature data with sha256 {digest}"
                )
            return self.store.artifacts.blob_file(digest)

        try:
            local = await self.run(find)
        except HTTPError as e:
            self.send_error_json(e.status, e.code, e.message)
            return
        except ArtifactNotFoundError as e:
            self.send_error_json(404, "RESOURCE_DOES_NOT_EXIST", str(e))
            return
        except StoreError as e:
            self.send_error_json(503, "TEMPORARILY_UNAVAILABLE", str(e))
            return
        await self.send_file(local, {"X-Content-SHA256": digest})


class FeatureBlobHandler(BlobHandler):
    """PUT the offline parquet of a view being registered (content-addressed)."""

    def check_owner(self, name: str) -> None:
        try:
            _name(name)
        except InvalidInputError as e:
            raise HTTPError(400, "INVALID_PARAMETER_VALUE", str(e)) from None


def _source(store: Any, raw: Any, i: int) -> dict[str, Any]:
    """A checked lineage source: the view version and the materialization it was read at."""
    where = f"sources[{i}]"
    check_value(isinstance(raw, dict), f"{where} must be an object")
    d = fstore.get_view(store, _name(raw.get("view")), _int(raw.get("version"), "version"))
    dv = raw.get("data_version")
    check_value(isinstance(dv, str) and 0 < len(dv) <= 200, f"{where}.data_version: a string")
    feats = raw.get("features")
    cols = {c["name"] for c in d["schema"]}
    check_value(
        isinstance(feats, list) and feats and all(isinstance(f, str) and f in cols for f in feats),
        f"{where}.features must list columns of {d['name']} v{d['version']}",
    )
    mats = fstore.materializations(store, d["_id"])
    dv_id = next((m["_data_version_id"] for m in mats if m["data_version"] == dv), None)
    check_value(
        dv_id is not None, f"{where}: {dv!r} is not offline data of {d['name']} v{d['version']}"
    )
    return {"view_id": d["_id"], "data_version_id": dv_id, "features": feats}


class TrainingSetsHandler(_Handler):
    """POST {"name", "labels", "output", "sources", "run"?}: record a training set."""

    async def post(self) -> None:
        def go() -> dict:
            body = self.body_json()
            name = body.get("name")
            check_value(isinstance(name, str) and 0 < len(name) <= 500, "'name': a string")
            rstore.check_text(name, "name")
            labels, output = _record(body.get("labels")), _record(body.get("output"))
            raw = body.get("sources")
            check_value(isinstance(raw, list) and 0 < len(raw) <= 1000, "'sources': a list")
            sources = [_source(self.store, s, i) for i, s in enumerate(raw)]
            run = body.get("run")
            check_value(run is None or (isinstance(run, str) and run), "'run' must be a run id")
            # the run first: an unknown run is a 404 with nothing stored
            rid = rstore.resolve_run(self.store, run) if run is not None else None
            labels_rid, _ = dstore.save_version(self.store, labels)
            out_rid, _ = dstore.save_version(self.store, output)
            fstore.record_training_set(self.store, out_rid, labels_rid, sources)
            if rid is not None:
                dstore.link_version(self.store, rid, out_rid, "input", name)
                ing.beat(self.store, rid)
            return {"version": _public_version(dstore.get_version(self.store, out_rid))}

        await self.go(go)


class SourcesHandler(_Handler):
    """GET: what a recorded training set (data version id or name) was built from."""

    async def get(self, ref: str) -> None:
        def go() -> dict:
            try:
                vid = dstore.resolve_version(self.store, ref)
            except LookupError as e:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", str(e)) from None
            return {"sources": fstore.training_set_sources(self.store, vid)}

        await self.go(go)


def _backend(raw: Any) -> str:
    check_value(isinstance(raw, str) and 0 < len(raw) <= 500, "'backend': a string")
    rstore.check_text(raw, "backend")
    return raw


class OnlineHandler(_Handler):
    """GET ?backend=: was the view version materialized to it? POST {"backend", "start",
    "end", "rows", "key"?}: log an online materialization; {"id"} of the log entry (the
    first entry's, and nothing logged, when `key` was sent before)."""

    async def get(self, name: str, version: str) -> None:
        def go() -> dict:
            d = fstore.get_view(self.store, _name(name), _int(version, "version"))
            be = _backend(self.get_query_argument("backend", None))
            return {"materialized": ostore.has_online(self.store, d["_id"], be)}

        await self.go(go)

    async def post(self, name: str, version: str) -> None:
        def go() -> dict:
            body = self.body_json()
            d = fstore.get_view(self.store, _name(name), _int(version, "version"))
            be = _backend(body.get("backend"))
            end = _time(body.get("end"), "end")
            check_value(end is not None, "'end' is required")
            start = _time(body.get("start"), "start")
            rows = _int(body.get("rows"), "rows", 0)
            key = body.get("key")
            check_value(
                key is None or (isinstance(key, str) and 0 < len(key) <= MAX_EVENT_KEY),
                f"'key': 1 to {MAX_EVENT_KEY} characters",
            )
            rstore.check_text(key, "key")
            mid = ostore.record_online_materialization(
                self.store, d["_id"], be, start, end, rows, key
            )
            return {"id": mid}

        await self.go(go)


MAX_ONLINE = 20_000  # entities a request writes or reads


def _online_rows(raw: Any) -> list[tuple[str, float, str]]:
    """Checked (entity key, feature ts, JSON object of values) rows of a write."""
    check_value(isinstance(raw, list) and len(raw) <= MAX_ONLINE, f"'rows': up to {MAX_ONLINE}")
    out = []
    for i, r in enumerate(raw):
        ok = isinstance(r, list) and len(r) == 3 and isinstance(r[0], str) and 0 < len(r[0]) < 4096
        check_value(ok and isinstance(r[2], str), f"rows[{i}]: [entity key, ts, values JSON]")
        ts = _time(r[1], f"rows[{i}] ts")
        check_value(ts is not None, f"rows[{i}]: the feature timestamp is required")
        try:  # a reader parses every stored value: only JSON objects go in
            ok = isinstance(json.loads(r[2]), dict)
        except ValueError:
            ok = False
        check_value(ok, f"rows[{i}]: the values must be a JSON object")
        rstore.check_text(r[0], "entity key")
        rstore.check_text(r[2], "values")
        out.append((r[0], ts, r[2]))
    return out


class OnlineRowsHandler(_Handler):
    """POST {"rows": [[key, ts, values JSON], ...]}: write a view version's online values
    to the team store's table (one transaction; an older ts never replaces a newer one, so
    a repeated request changes nothing)."""

    async def post(self, name: str, version: str) -> None:
        def go() -> dict:
            body = self.body_json()
            d = fstore.get_view(self.store, _name(name), _int(version, "version"))
            rows = _online_rows(body.get("rows"))
            return {"rows": ostore.upsert_online(self.store, d["name"], d["version"], rows)}

        await self.go(go)


class OnlineReadHandler(_Handler):
    """POST {"keys": [...]}: the stored (key, ts, values JSON) of those entities (a read:
    POST only because a batch of keys may not fit a URL)."""

    def needed_scope(self) -> str:
        return "read"

    async def post(self, name: str, version: str) -> None:
        def go() -> dict:
            body = self.body_json()
            d = fstore.get_view(self.store, _name(name), _int(version, "version"))
            keys = body.get("keys")
            check_value(
                isinstance(keys, list)
                and len(keys) <= MAX_ONLINE
                and all(isinstance(k, str) and len(k) < 4096 for k in keys),
                f"'keys': up to {MAX_ONLINE} entity keys",
            )
            for k in keys:
                rstore.check_text(k, "entity key")
            got = ostore.read_online(self.store, d["name"], d["version"], keys)
            return {"rows": [[k, ts, v] for k, (ts, v) in got.items()]}

        await self.go(go)


class OnlineLogHandler(_Handler):
    """GET ?view=: the log of online materializations, newest first."""

    async def get(self) -> None:
        def go() -> dict:
            view = self.get_query_argument("view", None)
            if view is not None:
                _name(view)
            return {"materializations": ostore.online_materializations(self.store, view)}

        await self.go(go)


ROUTES = [
    (r"/api/v1/features/views", ViewsHandler),
    (r"/api/v1/features/views/([^/]+)", ViewHandler),
    (r"/api/v1/features/views/([^/]+)/usage", UsageHandler),
    (r"/api/v1/features/views/([^/]+)/versions/([^/]+)/online", OnlineHandler),
    (r"/api/v1/features/views/([^/]+)/versions/([^/]+)/online/rows", OnlineRowsHandler),
    (r"/api/v1/features/views/([^/]+)/versions/([^/]+)/online/read", OnlineReadHandler),
    (r"/api/v1/features/data/([^/]+)", DataHandler),
    (r"/api/v1/features/([^/]+)/blobs/([^/]+)", FeatureBlobHandler),
    (r"/api/v1/features/training-sets", TrainingSetsHandler),
    (r"/api/v1/features/training-sets/([^/]+)/sources", SourcesHandler),
    (r"/api/v1/features/online-materializations", OnlineLogHandler),
]
