"""A tiny real TCP proxy on 127.0.0.1 in front of a tracking server that loses answers: the
first `drop` connections each forward one whole request to the server, wait until the
server starts answering (so the request was applied), then close without passing the
answer on, as a network that fails between request and answer does. Later connections
are piped through. Every request the proxy read is kept, so a test can check what a
client sent again (its idempotency key)."""

from __future__ import annotations

import gzip
import json
import socket
import threading
from typing import Any
from urllib.parse import urlsplit


def _read_request(sock: socket.socket) -> bytes | None:
    """One whole HTTP request (head and Content-Length body), or None at end of stream."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def parse_requests(raw: bytes) -> list[dict[str, Any]]:
    """The requests in a client's byte stream: method, path, headers, JSON body (or None)."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        n = int(headers.get("content-length", "0"))
        body, raw = rest[:n], rest[n:]
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        out.append(
            {
                "method": method,
                "path": path,
                "headers": headers,
                "body": json.loads(body) if body else None,
            }
        )
    return out


class LossyProxy:
    """`with LossyProxy(server_url, drop=2) as p:` then point the client at `p.url`."""

    def __init__(self, upstream: str, drop: int = 1) -> None:
        parts = urlsplit(upstream)
        self.target = (parts.hostname, parts.port)
        self.drop = drop
        self.raw: list[bytes] = []  # what each client connection sent, in order
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []

    def requests(self) -> list[dict[str, Any]]:
        """Every request the proxy read, in the order of the connections."""
        with self._lock:
            streams = list(self.raw)
        return [r for s in streams for r in parse_requests(s)]

    def __enter__(self) -> LossyProxy:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._listener.close()
        for s in list(self._open):
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                index = len(self.raw)
                self.raw.append(b"")
            t = threading.Thread(target=self._serve, args=(client, index), daemon=True)
            t.start()

    def _record(self, index: int, data: bytes) -> None:
        with self._lock:
            self.raw[index] += data

    def _serve(self, client: socket.socket, index: int) -> None:
        upstream = socket.create_connection(self.target)
        self._open += [client, upstream]
        if index < self.drop:
            try:
                req = _read_request(client)
                if req is not None:
                    self._record(index, req)
                    upstream.sendall(req)
                    upstream.recv(1)  # the server answers: the request was applied
            finally:
                upstream.close()
                client.close()  # the answer is lost
            return

        def pump(src: socket.socket, dst: socket.socket, record: bool) -> None:
            try:
                while chunk := src.recv(65536):
                    if record:
                        self._record(index, chunk)
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pump, args=(upstream, client, False), daemon=True)
        back.start()
        pump(client, upstream, True)
        back.join(30)
        client.close()
        upstream.close()
