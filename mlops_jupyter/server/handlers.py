"""Thin tornado handlers: parse the query string, call store.api_queries in a worker
thread, answer JSON. Every verb requires authentication (403 otherwise).

The route classes here and in the sibling modules hold the work only (BaseHandler is a
mixin): `jupyter_handler` makes the jupyter_server handler of one (Jupyter's token or login
cookie), and the tracking server mounts the same classes behind its own tokens
(trackserver/sidebar.py), so both answer the same JSON. When the store is a tracking-server
URL, the Jupyter extension forwards the whole API to that server instead (proxy.py).

Every error answer, 4xx or 5xx, is JSON: {"error": message, "status": code}."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tornado.web

from ..errors import InvalidInputError, MlopsJupyterError, RunNotFoundError, StoreError
from ..store import api_queries as aq
from ..store import open_store
from ..store import runs as rstore
from ..store.db import Store

PREFIX = "mlops/api/v1"
_INT64 = 2**63 - 1
log = logging.getLogger(__name__)
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mlops-api")

# the mixin is used on tornado handlers only; type checkers see their methods
_Handler = tornado.web.RequestHandler if TYPE_CHECKING else object


def url_path_join(*pieces: str) -> str:
    """Join URL path pieces with single slashes, keeping a leading and a trailing one
    (jupyter_server.utils.url_path_join, without needing jupyter_server)."""
    joined = "/".join(s.strip("/") for s in pieces if s.strip("/"))
    if pieces and pieces[0].startswith("/"):
        joined = "/" + joined
    if pieces and pieces[-1].endswith("/"):
        joined += "/"
    return "/" if joined == "//" else joined


def notebook_relpath(root: Any, path: Any) -> str | None:
    """`path` (a run's notebook.path) relative to the server root `root`, or None when it
    lies outside it ("open notebook")."""
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


class BaseHandler(_Handler):
    """Mixin of every route: parsing, store lookup and JSON error replies. A route class
    subclasses it; `jupyter_handler` or the tracking server adds the tornado handler."""

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
        return notebook_relpath(self.settings.get("server_root_dir"), path)


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


def routes() -> list[tuple[str, type]]:
    """Every route of the API, relative to the prefix, with its (mixin) route class."""
    from .artifacts import artifact_routes  # artifact downloads live in their own module
    from .features import feature_routes  # the Features view: views, freshness, drift, usage
    from .llm import llm_routes  # LLM evaluation routes live in their own module
    from .loop import loop_routes  # the Loop view: gates, approvals, signals, lineage
    from .media import media_routes  # media routes live in their own module
    from .serving import serving_routes  # the Serving view: served models, A/B, drift
    from .sweeps import sweep_routes  # a sweep's progress across its workers

    return [
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
        *media_routes(),
        *llm_routes(),
        *artifact_routes(),
        *sweep_routes(),
        *serving_routes(),
        *feature_routes(),
        *loop_routes(),
        (r"/(.*)", NotFound),
    ]


def jupyter_handler(cls: type) -> type:
    """The jupyter_server handler of route class `cls` (Jupyter's authentication)."""
    from jupyter_server.base.handlers import APIHandler

    # the mixin comes first, so its JSON write_error wins over APIHandler's
    return type(cls.__name__, (cls, APIHandler), {"__module__": cls.__module__})


def remote_url(serverapp) -> str | None:
    """The tracking server's URL when the sidebar's store is one (c.MlopsJupyter.store or
    MLOPS_JUPYTER_STORE is http(s)://...), else None."""
    from ..remote import is_remote

    given = serverapp.config.get("MlopsJupyter", {}).get("store")
    loc = given if isinstance(given, str) and given else os.environ.get("MLOPS_JUPYTER_STORE")
    return loc if is_remote(loc) else None


def setup_handlers(serverapp) -> None:
    web_app = serverapp.web_app
    base = url_path_join(web_app.settings["base_url"], PREFIX)
    url = remote_url(serverapp)
    if url is not None:
        from .proxy import setup_proxy  # the whole API is answered by the tracking server

        setup_proxy(serverapp, url, base)
        return
    web_app.settings["mlops_store_path"] = _store_path(serverapp)
    web_app.add_handlers(".*$", [(base + pat, jupyter_handler(h)) for pat, h in routes()])
