"""The tracking server's tornado application: request bodies (size limits, gzip), tokens,
JSON errors, and the routes of our API (api_v1.py) and MLflow's (mlflow_routes.py).

Stateless: every answer comes from the store and the artifact store, so any number of
processes or machines can serve one store behind a load balancer."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.web

from ..errors import InvalidInputError, MlopsJupyterError, RunNotFoundError, StoreError
from ..store import tokens as tstore
from ..store.db import Store

log = logging.getLogger("mlops_jupyter.trackserver")

MAX_BODY = 16 << 20  # JSON bodies, after gzip is undone
MAX_UPLOAD = 5 << 30  # one artifact file
FILE_CHUNK = 1 << 20  # files are streamed in pieces this large
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mj-server")


class HTTPError(Exception):
    """An answer with a status and an error code (MLflow's names where they exist)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class TooLarge(HTTPError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "REQUEST_LIMIT_EXCEEDED", f"request body over {limit} bytes")


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Streams the body (bounded, gunzipped), checks the token, answers JSON."""

    scope_get = "read"
    scope_write = "write"
    public = False
    to_file = False  # stream the body to a temporary file (artifact uploads)

    def initialize(self, **kw: Any) -> None:
        self._buf: list[bytes] = []
        self._size = 0
        self._over = False
        self._bad_gzip = False
        self._gz: Any = None
        self._file: Any = None

    @property
    def store(self) -> Store:
        return self.settings["mj_store"]

    @property
    def limit(self) -> int:
        return self.settings["max_upload" if self.to_file else "max_body"]

    # -- body --------------------------------------------------------------------------
    def prepare(self) -> None:
        enc = self.request.headers.get("Content-Encoding", "").strip().lower()
        if enc in ("gzip", "x-gzip"):
            self._gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc not in ("", "identity"):
            self._bad_gzip = True
        try:
            declared = int(self.request.headers.get("Content-Length", "0"))
        except ValueError:
            declared = 0
        if declared > (self.limit if self._gz is None else self.settings["max_wire"]):
            self._over = True  # read and drop the body, then answer 413

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.limit:
            self._over = True
            self._buf.clear()
            return
        if self.to_file:
            if self._file is None:
                self._file = tempfile.NamedTemporaryFile(prefix="mj-upload-", delete=False)
            self._file.write(data)
        else:
            self._buf.append(data)

    def data_received(self, chunk: bytes) -> None:
        if self._over or self._bad_gzip:
            return
        if self._gz is None:
            self._keep(chunk)
            return
        try:
            # bounded output per step: a small gzip bomb cannot blow up memory
            data = self._gz.decompress(chunk, self.limit + 1 - self._size)
            self._keep(data)
            while self._gz.unconsumed_tail and not self._over:
                data = self._gz.decompress(self._gz.unconsumed_tail, self.limit + 1 - self._size)
                self._keep(data)
        except zlib.error:
            self._bad_gzip = True

    def body_bytes(self) -> bytes:
        if self._over:
            raise TooLarge(self.limit)
        if self._bad_gzip:
            raise HTTPError(400, "BAD_REQUEST", "body is not valid gzip (or an unknown encoding)")
        return b"".join(self._buf)

    def body_json(self) -> dict[str, Any]:
        raw = self.body_bytes()
        if not raw.strip():
            return {}
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise HTTPError(400, "MALFORMED_REQUEST", f"body is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise HTTPError(400, "MALFORMED_REQUEST", "body must be a JSON object")
        return obj

    def on_finish(self) -> None:
        if self._file is not None:
            self._file.close()
            try:
                os.unlink(self._file.name)
            except OSError:
                pass

    # -- auth --------------------------------------------------------------------------
    def needed_scope(self) -> str:
        return self.scope_get if self.request.method in ("GET", "HEAD") else self.scope_write

    def authorize(self) -> str:
        """The caller's token name; raises 401/403."""
        auth = self.request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPError(401, "UNAUTHENTICATED", "missing 'Authorization: Bearer TOKEN'")
        got = tstore.check(self.store, token.strip())
        if got is None:
            raise HTTPError(401, "UNAUTHENTICATED", "invalid or expired token")
        name, scope = got
        need = self.needed_scope()
        if not tstore.scope_allows(scope, need):
            raise HTTPError(
                403, "PERMISSION_DENIED", f"token {name!r} has scope {scope}, not {need}"
            )
        seen = self.settings["token_seen"]
        now = time.time()
        if now - seen.get(name, 0) > 60:  # one write a minute per token and process at most
            seen[name] = now
            try:
                tstore.touch(self.store, name, now)
            except StoreError:
                pass
        return name

    # -- answers -----------------------------------------------------------------------
    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        # one shape for every route, MLflow's: its clients parse exactly this
        return {"error_code": code, "message": message}

    def send_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(obj, allow_nan=False, default=str))

    def send_error_json(self, status: int, code: str, message: str) -> None:
        if self._finished:
            return
        self.clear()
        self.send_json(self.error_body(status, code, message), status)

    async def send_file(
        self, local: str | os.PathLike, headers: dict[str, str] | None = None
    ) -> None:
        """Stream a local file as the answer (octet-stream, its length, extra `headers`),
        a chunk at a time so a large artifact never sits in memory."""
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(os.path.getsize(local)))
        for k, v in (headers or {}).items():
            self.set_header(k, v)
        with open(local, "rb") as f:
            while chunk := f.read(FILE_CHUNK):
                self.write(chunk)
                await self.flush()
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # tornado's own errors (405, a bad request line...) as JSON too
        codes = {404: "ENDPOINT_NOT_FOUND", 405: "ENDPOINT_NOT_FOUND"}
        self.set_header("Content-Type", "application/json")
        msg = self._reason or "error"
        self.finish(json.dumps(self.error_body(status_code, codes.get(status_code, "ERROR"), msg)))

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run a blocking store call off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(_pool, fn)

    async def handle(self, fn: Callable[[], Any]) -> None:
        """Authorize, run `fn` in a worker thread, answer its result as JSON or map the
        error to a JSON 4xx (5xx only for the store being unreachable or a bug)."""
        try:
            if self._over:
                raise TooLarge(self.limit)
            if not self.public:
                await self.run(self.authorize)
            out = await self.run(fn)
            if not self._finished:
                self.send_json(out if out is not None else {})
        except HTTPError as e:
            self.send_error_json(e.status, e.code, e.message)
        except RunNotFoundError as e:
            self.send_error_json(404, "RESOURCE_DOES_NOT_EXIST", str(e))
        except InvalidInputError as e:
            self.send_error_json(400, "INVALID_PARAMETER_VALUE", str(e))
        except StoreError as e:
            log.warning("store error: %s", e)
            self.send_error_json(503, "TEMPORARILY_UNAVAILABLE", str(e))
        except MlopsJupyterError as e:
            self.send_error_json(400, "INVALID_PARAMETER_VALUE", str(e))
        except Exception:
            log.exception("internal error on %s %s", self.request.method, self.request.path)
            self.send_error_json(500, "INTERNAL_ERROR", "internal error (see the server log)")


class HealthHandler(BaseHandler):
    public = True

    async def get(self) -> None:
        self.send_json({"status": "ok"})


class OpenAPIHandler(BaseHandler):
    async def get(self) -> None:
        from .openapi import spec

        await self.handle(spec)


class NotFoundHandler(BaseHandler):
    """Any other path: 404 in MLflow's error shape (ENDPOINT_NOT_FOUND)."""

    async def _nf(self, *a: Any) -> None:
        if self._over:
            e: HTTPError = TooLarge(self.limit)
        else:
            e = HTTPError(404, "ENDPOINT_NOT_FOUND", f"no endpoint {self.request.path}")
        self.send_error_json(e.status, e.code, e.message)

    get = post = put = delete = patch = _nf


def make_app(store: Store, *, max_body: int = MAX_BODY, max_upload: int = MAX_UPLOAD):
    """The tornado Application serving `store`."""
    from . import api_v1, mlflow_artifacts, mlflow_routes

    routes = [
        (r"/health", HealthHandler),
        (r"/api/v1/openapi\.json", OpenAPIHandler),
        *api_v1.ROUTES,
        *mlflow_routes.ROUTES,
        *mlflow_artifacts.ROUTES,
        *_module_routes("run_files"),
        *_module_routes("registry_routes"),  # the model registry for remote clients
        *_module_routes("loop_routes"),  # gates, policies, approvals, cards, lineage
        *_module_routes("loop_watch_routes"),  # the watcher: recovery, rollouts, canaries
        *_module_routes("data_routes"),  # data versions, telemetry episodes
        *_module_routes("data_more_routes"),  # drift, preflight, data lineage, run resolution
        *_module_routes("media_routes"),  # rich media of runs
        *_module_routes("ckpt_routes"),  # checkpoint series
        *_module_routes("optuna_routes"),  # optuna's storage, for sweeps
        *_module_routes("serving_routes"),  # serving: prediction logs, rollouts, A/B, drift
        *_module_routes("feature_routes"),  # the feature store
        *_module_routes("mlflowio_routes"),  # MLflow import: runs by tag
        *_module_routes("sidebar"),  # the JupyterLab sidebar's API, for proxying Jupyter servers
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        mj_store=store,
        max_body=max_body,
        max_upload=max_upload,
        max_wire=max(max_body, max_upload),
        token_seen={},
        compress_response=True,
        xsrf_cookies=False,
    )


def _module_routes(name: str) -> list:
    """ROUTES of the module `name` of this package (imported when the app is made)."""
    import importlib

    return importlib.import_module(f"{__package__}.{name}").ROUTES


def check_value(ok: bool, message: str) -> None:
    """Raise a 400 INVALID_PARAMETER_VALUE unless `ok`."""
    if not ok:
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", message)
