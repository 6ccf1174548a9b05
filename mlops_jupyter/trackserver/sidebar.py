"""The sidebar's REST API (`/mlops/api/v1/...`, mlops_jupyter.server) on the tracking
server, behind its tokens: read scope for GET and HEAD, write for anything else.

The route classes are the Jupyter extension's own (server/*.py hold the work as mixins),
put on a token-checking tornado handler here, so a Jupyter server whose store is this
server's URL forwards the sidebar's requests and gets the same JSON as over a local store.
Errors keep the sidebar's shape, {"error": message, "status": code}."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import tornado.web

from ..errors import StoreError
from ..store import tokens as tstore
from ..store.db import Store

PREFIX = "/mlops/api/v1"
# the Jupyter server's base URL (for the media URLs in answers), sent by its proxy
BASE_URL_HEADER = "X-Mlops-Base-Url"
_SAFE_BASE = re.compile(r"/(?:[A-Za-z0-9._~%!$&'()*+,;=:@-]+/)*")


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TokenHandler(tornado.web.RequestHandler):
    """A tornado handler that checks the tracking server's token before any verb and
    offers what the route mixins use of jupyter_server's APIHandler."""

    _token_name: str | None = None

    def store(self) -> Store:
        return self.settings["mj_store"]

    @property
    def base_url(self) -> str:
        given = self.request.headers.get(BASE_URL_HEADER, "/")
        return given if _SAFE_BASE.fullmatch(given) else "/"

    def check_xsrf_cookie(self) -> None:
        return None  # bearer tokens only: no cookie, so no cross-site forgery

    def get_current_user(self) -> str | None:
        return self._token_name

    async def prepare(self) -> None:
        from .app import _pool

        need = "read" if self.request.method in ("GET", "HEAD") else "write"
        header = self.request.headers.get("Authorization", "")
        try:
            loop = asyncio.get_running_loop()
            self._token_name = await loop.run_in_executor(_pool, self._authorize, header, need)
        except _Refused as e:
            self._reply_error(e.status, str(e))
        except StoreError as e:  # the token table cannot be read
            self._reply_error(503, f"the tracking server cannot read its store: {e}")

    def _authorize(self, header: str, need: str) -> str:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(401, "missing 'Authorization: Bearer TOKEN'")
        got = tstore.check(self.store(), token.strip())
        if got is None:
            raise _Refused(401, "invalid or expired token")
        name, scope = got
        if not tstore.scope_allows(scope, need):
            raise _Refused(403, f"token {name!r} has scope {scope}, not {need}")
        seen = self.settings["token_seen"]
        now = time.time()
        if now - seen.get(name, 0) > 60:  # last-use time: one write a minute per token
            seen[name] = now
            try:
                tstore.touch(self.store(), name, now)
            except StoreError:
                pass
        return name

    def _reply_error(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": message, "status": status}))

    def finish(self, chunk: Any = None, set_content_type: str = "application/json") -> Any:
        # as APIHandler.finish: JSON unless the route names another type
        self.set_header("Content-Type", set_content_type)
        return super().finish(chunk)


def _token_handler(cls: type) -> type:
    # the route mixin first: its JSON write_error and its verbs
    return type(cls.__name__, (cls, TokenHandler), {"__module__": __name__})


def routes() -> list[tuple[str, type]]:
    """The sidebar's routes for the tracking server's application (the route classes
    need tornado only, not jupyter_server)."""
    from ..server.handlers import routes as sidebar_routes

    return [(PREFIX + pat, _token_handler(h)) for pat, h in sidebar_routes()]


ROUTES = routes()
