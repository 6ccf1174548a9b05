"""HTTP client of the tracking server: token, gzip bodies, timeouts, TLS (standard library
only). One persistent connection per Client; a Client is used by one thread at a time."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from .. import config
from ..errors import StoreError

TIMEOUT_S = 30.0


class ServerUnavailable(StoreError):
    """The server cannot be reached now (connection refused, timeout, 5xx): try again later."""


class ServerRefused(StoreError):
    """The server answered 4xx: the request itself (or the token) is wrong."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def token() -> str | None:
    """The client token (MLOPS_JUPYTER_TOKEN)."""
    return os.environ.get("MLOPS_JUPYTER_TOKEN") or None


def ssl_context() -> ssl.SSLContext:
    """System CAs, or the private CA file named by MLOPS_JUPYTER_CA."""
    ca = os.environ.get("MLOPS_JUPYTER_CA") or None
    return ssl.create_default_context(cafile=ca)


class Client:
    """Requests to one server URL (http:// or https://)."""

    def __init__(self, url: str, timeout: float = TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(f"{config.redact_url(url)!r} is not an http(s):// server URL")
        self.url = url.rstrip("/")
        self.shown = config.redact_url(self.url)  # for messages: never the token
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=ssl_context()
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout
                )
        return self._conn

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_gzip: bytes | None = None,
        resend: bool = True,
    ) -> Any:
        """Send one request; the decoded JSON answer. Raises ServerUnavailable (retry
        later) or ServerRefused (4xx). `raw_gzip`: an already gzip-compressed JSON body.
        `resend=False`: a kept-alive connection found closed is ServerUnavailable too,
        never sent again here (for requests the caller must mark as repeats)."""
        headers = {"Accept": "application/json"}
        tok = token()
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        data = raw_gzip
        if data is None and body is not None:
            data = gzip.compress(json.dumps(body, allow_nan=False).encode(), 1)
        if data is not None:
            headers["Content-Type"] = "application/json"
            headers["Content-Encoding"] = "gzip"
        with self._lock:
            for attempt in (0, 1):
                conn = self._connect()
                try:
                    conn.request(method, self._prefix + path, body=data, headers=headers)
                    resp = conn.getresponse()
                    status, text = resp.status, resp.read()
                    break
                except ssl.SSLCertVerificationError as e:
                    self.close()
                    raise StoreError(f"tracking server {self.shown}: TLS: {e}") from None
                except (OSError, http.client.HTTPException) as e:
                    self.close()
                    # a kept-alive connection the server closed meanwhile: one fresh try
                    stale = isinstance(
                        e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
                    )
                    if attempt == 0 and stale and resend and not isinstance(e, socket.timeout):
                        continue
                    raise ServerUnavailable(
                        f"tracking server {self.shown} cannot be reached ({type(e).__name__}: {e})"
                    ) from None
        try:
            out = json.loads(text) if text else None
        except ValueError:
            out = None
        if status >= 500:
            self.close()
            raise ServerUnavailable(f"tracking server {self.shown} answered {status}")
        if status >= 400:
            code = out.get("error_code", "") if isinstance(out, dict) else ""
            msg = out.get("message", "") if isinstance(out, dict) else ""
            raise ServerRefused(status, code, f"tracking server {self.shown}: {status} {msg}")
        return out
