"""Thin tornado handlers: parse the query string, call store.api_queries in a worker
thread, answer JSON. Every verb requires Jupyter's authentication (403 otherwise).

Every error answer, 4xx or 5xx, is JSON: {"error": message, "status": code}."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from ..errors import InvalidInputError, MlopsJupyterError, RunNotFoundError, StoreError
from ..store import api_queries as aq
from ..store import open_store
from ..store import runs as rstore
from ..store.db import Store

PREFIX = "mlops/api/v1"
_INT64 = 2**63 - 1
log = logging.getLogger(__name__)
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mlops-api")


class BaseHandler(APIHandler):
    """Shared parsing, store lookup and JSON error replies."""

    def store(self) -> Store:
        path = self.settings.get("mlops_store_path")
        return open_store(path)

    def arg_int(self, name: str, default: int | None, lo: int | None = None) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            v = int(raw)
        except ValueError:
            raise InvalidInputError(
                f"query parameter {name!r} must be an integer, got {raw!r}"
            ) from None
        if lo is not None and v < lo:
            raise InvalidInputError(f"query parameter {name!r} must be >= {lo}, got {v}")
        if abs(v) > _INT64:
            raise InvalidInputError(f"query parameter {name!r} is out of range, got {raw!r}")
        return v

    def arg_float(self, name: str) -> float | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return None
        try:
            return float(raw)
        except ValueError:
            raise InvalidInputError(
                f"query parameter {name!r} must be a number, got {raw!r}"
            ) from None

    def arg_list(self, name: str) -> list[str] | None:
        vals = [v for raw in self.get_query_arguments(name) for v in raw.split(",") if v.strip()]
        return [v.strip() for v in vals] if vals else None

    def arg_str(self, name: str) -> str | None:
        v = self.get_query_argument(name, None)
        return v if v else None

    def rid(self, ref: str) -> int:
        # tornado has already percent-decoded path arguments
        return rstore.resolve_run(self.store(), ref)

    async def answer(self, fn: Callable[[], Any]) -> None:
        """Run `fn` off the event loop; map errors to JSON 4xx/5xx answers."""
        try:
            result = await asyncio.get_running_loop().run_in_executor(_pool, fn)
        except InvalidInputError as e:
            return self.fail(400, str(e))
        except RunNotFoundError as e:
            return self.fail(404, str(e))
        except StoreError as e:
            log.warning("mlops: %s", e)
            return self.fail(500, str(e))
        except MlopsJupyterError as e:
            return self.fail(500, str(e))
        except Exception as e:  # a bug: still a JSON answer, with the details in the log
            log.exception("mlops: %s failed", self.request.path)
            return self.fail(500, f"internal error: {type(e).__name__}: {e}")
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(result, allow_nan=False, default=str))

    def fail(self, code: int, message: str) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": message, "status": code}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors tornado raises itself (403, 405, bad arguments, ...) are JSON too."""
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message, "status": status_code}))


class Health(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        from .. import __version__

        await self.answer(lambda: {**aq.health(self.store()), "version": __version__})


class Experiments(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(lambda: aq.experiments(self.store()))


class MetricKeys(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        exp, system = self.arg_str("experiment"), self.arg_str("system") == "1"
        await self.answer(lambda: aq.metric_keys(self.store(), exp, system))


class Runs(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        def run() -> Any:
            return aq.list_runs(
                self.store(),
                experiment=self.arg_str("experiment"),
                status=self.arg_str("status"),
                search=self.arg_str("q"),
                conditions=self.get_query_arguments("where") or None,
                sort=self.arg_str("sort") or "start_time",
                order=self.arg_str("order") or "desc",
                limit=self.arg_int("limit", 100),
                offset=self.arg_int("offset", 0),
                metric=self.arg_str("metric"),
                top_level=self.arg_str("top_level") == "1",
            )

        await self.answer(run)


class RunDetail(BaseHandler):
    @tornado.web.authenticated
    async def get(self, ref: str) -> None:
        def run() -> Any:
            d = aq.run_detail(self.store(), self.rid(ref))
            d["notebook_relpath"] = self.relpath(d.get("notebook_path"))
            return d

        await self.answer(run)

    def relpath(self, path: Any) -> str | None:
        """The notebook path relative to the server root ("open notebook"), or None."""
        root = self.settings.get("server_root_dir")
        if not isinstance(path, str) or not path or not root:
            return None
        base = Path(root).expanduser().resolve()
        p = Path(path).expanduser()
        try:
            # an absolute path must lie under the root; a relative one is taken from the root
            rel = (p if p.is_absolute() else base / p).resolve().relative_to(base)
        except ValueError:
            return None
        return rel.as_posix()


class Series(BaseHandler):
    @tornado.web.authenticated
    async def get(self, ref: str, key: str) -> None:
        def run() -> Any:
            st = self.store()
            rid = self.rid(ref)
            mp = self.arg_int("max_points", 2000)
            since = self.arg_int("since_step", None)
            return {"run_id": aq.uid_of(st, rid), **aq.series(st, rid, key, mp, since)}

        await self.answer(run)


class RunData(BaseHandler):
    @tornado.web.authenticated
    async def get(self, ref: str) -> None:
        await self.answer(lambda: aq.data_versions(self.store(), self.rid(ref)))


class Compare(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        def run() -> Any:
            ids = self.arg_list("ids")
            if not ids:
                raise InvalidInputError("query parameter 'ids' is required (comma-separated)")
            rids = [self.rid(i) for i in ids]
            mp = self.arg_int("max_points", 1000)
            since = self.arg_int("since_step", None)
            return aq.compare(self.store(), rids, self.arg_list("keys"), mp, since)

        await self.answer(run)


class Telemetry(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        def run() -> Any:
            ids = self.arg_list("ids")
            rids = None if ids is None else [self.rid(i) for i in ids]
            return aq.telemetry(self.store(), rids)

        await self.answer(run)


class Alerts(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        def run() -> Any:
            ref = self.arg_str("run")
            rid = None if ref is None else self.rid(ref)
            return aq.alerts(self.store(), rid, self.arg_int("limit", 100), self.arg_float("since"))

        await self.answer(run)


class Drift(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        def run() -> Any:
            ref = self.arg_str("run")
            rid = None if ref is None else self.rid(ref)
            return aq.drift(self.store(), rid, self.arg_int("limit", 50, lo=1))

        await self.answer(run)


class NotFound(BaseHandler):
    @tornado.web.authenticated
    async def get(self, rest: str) -> None:
        self.fail(404, f"no such route: /{PREFIX}/{rest}")


def _store_path(serverapp) -> str:
    """The store the sidebar reads: `c.MlopsJupyter.store` in the server's config (a path or
    a postgresql:// URL; `c.MlopsJupyter.artifacts` names a PostgreSQL store's artifacts
    folder), else MLOPS_JUPYTER_STORE, else the nearest .mlops/ above the root directory."""
    from ..config import find_store_location

    section = serverapp.config.get("MlopsJupyter", {})
    artifacts = section.get("artifacts")
    if isinstance(artifacts, str) and artifacts:
        os.environ.setdefault("MLOPS_JUPYTER_ARTIFACTS", artifacts)
    given = section.get("store")
    if isinstance(given, str) and given:
        return given
    if os.environ.get("MLOPS_JUPYTER_STORE"):
        return str(find_store_location())
    return str(find_store_location(Path(serverapp.root_dir).expanduser()))


def _extra_routes() -> list[tuple[str, Any]]:
    """The dashboard's routes (their own module)."""
    from .dashboard import ROUTES

    return list(ROUTES)


def setup_handlers(serverapp) -> None:
    web_app = serverapp.web_app
    web_app.settings["mlops_store_path"] = _store_path(serverapp)
    base = url_path_join(web_app.settings["base_url"], PREFIX)
    routes = [
        (r"/health", Health),
        (r"/experiments", Experiments),
        (r"/metric-keys", MetricKeys),
        (r"/runs", Runs),
        (r"/runs/([^/]+)", RunDetail),
        (r"/runs/([^/]+)/metrics/(.+)", Series),
        (r"/runs/([^/]+)/data", RunData),
        (r"/compare", Compare),
        (r"/telemetry", Telemetry),
        (r"/alerts", Alerts),
        (r"/drift", Drift),
        *_extra_routes(),
        (r"/(.*)", NotFound),
    ]
    from .artifacts import artifact_routes  # artifact downloads live in their own module
    from .llm import llm_routes  # LLM evaluation routes live in their own module
    from .media import media_routes  # media routes live in their own module
    from .serving import serving_routes  # the Serving view: served models, A/B, drift
    from .sweeps import sweep_routes  # a sweep's progress across its workers

    routes[-1:-1] = [
        *media_routes(),
        *llm_routes(),
        *artifact_routes(),
        *sweep_routes(),
        *serving_routes(),
    ]
    web_app.add_handlers(".*$", [(base + pat, h) for pat, h in routes])
