"""The sidebar over a tracking server: with MLOPS_JUPYTER_STORE=http(s)://host:port (and
MLOPS_JUPYTER_TOKEN), every `/mlops/api/v1/...` request the browser makes to Jupyter is
forwarded (method, path, query, body) to the same route of that server, which answers it
from its store (trackserver/sidebar.py), with `Authorization: Bearer <token>` added here:
the token never reaches the browser.

Answers keep the sidebar's shapes: JSON is passed on (a run's `notebook_relpath` is made
against this Jupyter server's root, where the notebook is opened); downloads (artifacts,
media, CSV) are streamed through with back-pressure, their status and safe headers kept.
An unreachable server is a 503 JSON answer after at most CONNECT_TIMEOUT_S, one that does
not answer in time a 504, a refused token a 401/403 naming MLOPS_JUPYTER_TOKEN."""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
from typing import Any
from urllib.parse import unquote

import tornado.web
from jupyter_server.base.handlers import APIHandler
from tornado import httputil
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError

from ..config import redact_url
from .handlers import PREFIX, notebook_relpath

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0  # a JSON answer (MLOPS_JUPYTER_SIDEBAR_TIMEOUT)
DOWNLOAD_TIMEOUT_S = 3600.0  # artifact, media and CSV bytes, streamed
MAX_JSON = 256 << 20  # a JSON answer is held whole (to check its shape): bounded
MAX_FORWARD_BODY = 16 << 20  # the tracking server's own limit for JSON bodies
_DOWNLOAD = re.compile(r"runs/[^/]+/(artifacts|media)/.+|export\.csv")
_RUN_DETAIL = re.compile(r"runs/[^/]+")
# headers of an answer passed on to the browser; others (cookies, server) are not
_PASS = ("Content-Type", "Content-Disposition", "Cache-Control", "X-Content-Type-Options")
BASE_URL_HEADER = "X-Mlops-Base-Url"  # trackserver.sidebar.BASE_URL_HEADER


def _timeout_from_env() -> float:
    raw = os.environ.get("MLOPS_JUPYTER_SIDEBAR_TIMEOUT", "")
    try:
        value = float(raw) if raw else REQUEST_TIMEOUT_S
    except ValueError:
        value = 0.0
    if not 0 < value <= DOWNLOAD_TIMEOUT_S:
        log.warning("mlops: MLOPS_JUPYTER_SIDEBAR_TIMEOUT=%r is not 0 < s <= 3600: using 30", raw)
        return REQUEST_TIMEOUT_S
    return value


class Remote:
    """Where the API is forwarded: the server URL, the token, the TLS settings."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        self.token = token
        self.timeout = _timeout_from_env()
        ca = os.environ.get("MLOPS_JUPYTER_CA") or None  # a private CA, as the client's
        self.ssl: ssl.SSLContext | None = None
        if self.url.lower().startswith("https://"):
            self.ssl = ssl.create_default_context(cafile=ca)
        self._client: AsyncHTTPClient | None = None

    def client(self) -> AsyncHTTPClient:
        # its own client, made on the server's event loop: downloads do not queue the
        # sidebar's polls behind Jupyter's other outgoing requests
        if self._client is None:
            self._client = AsyncHTTPClient(force_instance=True, max_clients=32)
        return self._client


class Proxy(APIHandler):
    """Every verb of every `/mlops/api/v1/...` path: forwarded to the tracking server."""

    def initialize(self, remote: Remote, base: str) -> None:
        self.remote, self.base = remote, base
        self._up_status: int | None = None
        self._up_reason = ""
        self._up_headers = httputil.HTTPHeaders()
        self._mode: str | None = None  # "json" (held) or "stream", set at the first bytes
        self._held: list[bytes] = []
        self._held_size = 0
        self._sent = 0

    @tornado.web.authenticated
    async def get(self, rest: str) -> None:
        await self._forward()

    @tornado.web.authenticated
    async def post(self, rest: str) -> None:
        await self._forward()

    @tornado.web.authenticated
    async def put(self, rest: str) -> None:
        await self._forward()

    @tornado.web.authenticated
    async def patch(self, rest: str) -> None:
        await self._forward()

    @tornado.web.authenticated
    async def delete(self, rest: str) -> None:
        await self._forward()

    # -- the request ---------------------------------------------------------------------
    def _rest(self) -> str:
        # the raw path after the prefix: still percent-encoded, as the browser sent it
        path = self.request.path
        return path[len(self.base) :].lstrip("/") if path.startswith(self.base) else ""

    async def _forward(self) -> None:
        r = self.remote
        if not r.token:
            return self.fail(
                401,
                f"MLOPS_JUPYTER_TOKEN is not set: the tracking server {r.shown} needs a "
                "token (mlops-jupyter server token add NAME --scope read)",
            )
        rest = self._rest()
        if any(unquote(seg) in (".", "..") for seg in rest.split("/")):
            # a proxy in front of the server might resolve them: reach nothing but the API
            return self.fail(400, "'.' and '..' path segments are not allowed")
        body = self.request.body or None
        if body is not None and len(body) > MAX_FORWARD_BODY:
            return self.fail(413, f"request body over {MAX_FORWARD_BODY} bytes")
        query = self.request.query
        url = f"{r.url}/{PREFIX}/{rest}" + (f"?{query}" if query else "")
        headers = {
            "Authorization": f"Bearer {r.token}",
            "Accept": self.request.headers.get("Accept", "application/json"),
            BASE_URL_HEADER: self.base_url,
        }
        if body is not None:
            headers["Content-Type"] = self.request.headers.get("Content-Type", "application/json")
        req = HTTPRequest(
            url,
            method=self.request.method or "GET",
            headers=headers,
            body=body if body is not None or self.request.method == "GET" else b"",
            connect_timeout=CONNECT_TIMEOUT_S,
            request_timeout=DOWNLOAD_TIMEOUT_S if _DOWNLOAD.fullmatch(rest) else r.timeout,
            follow_redirects=False,  # a presigned URL is the browser's to follow
            decompress_response=True,
            allow_nonstandard_methods=True,
            header_callback=self._on_header,
            streaming_callback=self._on_chunk,
            ssl_options=r.ssl,
        )
        try:
            await r.client().fetch(req, raise_error=False)
        except _TooBig:
            return None
        except HTTPClientError as e:  # 599: a timeout, or the connection closed mid-answer
            return self._broken(e, str(e))
        except (OSError, StreamClosedError) as e:  # refused, no route, DNS, TLS, client gone
            return self._broken(e, "")
        self._complete(rest)

    # -- the answer, as it comes -----------------------------------------------------------
    def _on_header(self, line: str) -> None:
        if line.startswith("HTTP/"):
            # a new status line (after a 100 Continue too): start the headers afresh
            start = httputil.parse_response_start_line(line.strip())
            self._up_status, self._up_reason = start.code, start.reason
            self._up_headers = httputil.HTTPHeaders()
        elif line.strip():
            self._up_headers.parse_line(line)

    def _on_chunk(self, chunk: bytes) -> Any:
        if self._mode is None:
            ctype = self._up_headers.get("Content-Type", "")
            code = self._up_status or 502
            json_like = ctype.startswith("application/json") or code >= 300
            self._mode = "json" if json_like else "stream"
            if self._mode == "stream":
                self._start_stream(code)
        if self._mode == "json":
            self._held.append(chunk)
            self._held_size += len(chunk)
            if self._held_size > MAX_JSON:
                self._held.clear()
                shown = self.remote.shown
                self.fail(502, f"the tracking server {shown} sent an answer over {MAX_JSON} bytes")
                raise _TooBig
            return None
        self.write(chunk)
        self._sent += len(chunk)
        return self.flush()  # awaited by the client: the browser's pace bounds memory

    def _start_stream(self, code: int) -> None:
        self.set_status(code, self._up_reason or None)
        for name in _PASS:
            value = self._up_headers.get(name)
            if value is not None:
                self.set_header(name, value)
        length = self._up_headers.get("Content-Length")
        if length is not None and "Content-Encoding" not in self._up_headers:
            # the exact size (not after gzip was undone): a cut answer stays visibly short
            self.set_header("Content-Length", length)

    def _complete(self, rest: str) -> None:
        code = self._up_status or 502
        if self._mode == "stream":
            ctype = self._up_headers.get("Content-Type", "application/octet-stream")
            return self.finish(set_content_type=ctype)
        raw = b"".join(self._held)
        if 300 <= code < 400 and self._up_headers.get("Location"):
            self.set_header("Cache-Control", self._up_headers.get("Cache-Control", "no-store"))
            return self.redirect(self._up_headers["Location"], status=code)
        if code >= 400:
            return self.fail(code, self._error_message(code, raw))
        ctype = self._up_headers.get("Content-Type", "application/json")
        if _RUN_DETAIL.fullmatch(rest) and ctype.startswith("application/json"):
            raw = self._relpath(raw)
        self.set_status(code, self._up_reason or None)
        for name in _PASS:
            value = self._up_headers.get(name)
            if value is not None:
                self.set_header(name, value)
        self.finish(raw, set_content_type=ctype)

    def _relpath(self, raw: bytes) -> bytes:
        # the notebook is opened in this Jupyter server: its path is made against this root
        try:
            detail = json.loads(raw)
        except ValueError:
            return raw
        if not isinstance(detail, dict) or "notebook_path" not in detail:
            return raw
        root = self.settings.get("server_root_dir")
        detail["notebook_relpath"] = notebook_relpath(root, detail.get("notebook_path"))
        return json.dumps(detail, allow_nan=False, default=str).encode()

    def _error_message(self, code: int, raw: bytes) -> str:
        shown = self.remote.shown
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        message = None
        if isinstance(obj, dict):
            message = obj.get("error") if isinstance(obj.get("error"), str) else None
            if message is None and obj.get("error_code") == "ENDPOINT_NOT_FOUND":
                return (
                    f"the tracking server {shown} does not serve the sidebar's API "
                    f"(/{PREFIX}): upgrade it to this version of mlops-jupyter"
                )
            if message is None and isinstance(obj.get("message"), str):
                message = obj["message"]
        if message is None:
            message = f"the tracking server {shown} answered {code} {self._up_reason}".rstrip()
        elif code in (401, 403):
            return f"the tracking server {shown} refused MLOPS_JUPYTER_TOKEN: {message}"
        return message

    def _broken(self, e: BaseException, client_error: str) -> None:
        shown = self.remote.shown
        if self._mode == "stream":
            # bytes already went out: end without completing, so the client sees a short
            # answer (an error), never a whole-looking file
            log.warning("mlops: %s: forwarding stopped after %d bytes: %s", shown, self._sent, e)
            if self.request.connection is not None:
                self.request.connection.close()
            self._finished = True  # tornado has no public way to abandon a response
            return None
        low = client_error.lower()
        if "timeout" in low and "connect" in low:
            return self.fail(
                503,
                f"the tracking server {shown} cannot be reached: no connection within "
                f"{CONNECT_TIMEOUT_S:g} s",
            )
        if "timeout" in low:
            return self.fail(504, f"the tracking server {shown} did not answer in time ({e})")
        if client_error:
            return self.fail(502, f"the tracking server {shown} broke off its answer ({e})")
        return self.fail(503, f"the tracking server {shown} cannot be reached: {e}")

    def fail(self, code: int, message: str) -> None:
        """A JSON error answer in the sidebar's shape."""
        if self._finished:
            return
        self.clear()
        self.set_status(code)
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": message, "status": code}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors tornado raises itself (403 for a missing login, ...) are JSON too."""
        self.finish(json.dumps({"error": self._reason, "status": status_code}))


class _TooBig(Exception):
    """A held answer went over MAX_JSON (already answered 502)."""


def setup_proxy(serverapp, url: str, base: str) -> None:
    """Forward `base/...` (the API prefix under Jupyter's base URL) to the server at `url`."""
    from ..remote.client import token

    remote = Remote(url, token())
    serverapp.web_app.add_handlers(
        ".*$", [(base + r"/(.*)", Proxy, {"remote": remote, "base": base})]
    )
    serverapp.log.info("mlops-jupyter: the sidebar's API is answered by %s", remote.shown)
    if not remote.token:
        serverapp.log.warning(
            "mlops-jupyter: MLOPS_JUPYTER_TOKEN is not set: the sidebar's requests to %s "
            "will be refused",
            remote.shown,
        )
