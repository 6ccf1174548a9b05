"""Shared by the closed-loop tests: the tiny torch models they register and a real local
HTTP receiver for the webhook notifications."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


def linear(w0: float, w1: float) -> Any:
    """A torch Linear(2, 2) scoring class 1 by w0 * x0 + w1 * x1 (class 0 by 0)."""
    import torch

    m = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        m.weight[:] = torch.tensor([[0.0, 0.0], [w0, w1]])
    return m


def clf(w1: float) -> Any:
    """Scores class 1 by x0 + w1 * x1 (x1 is noise): w1 = 0 is best, large |w1| worse."""
    return linear(1.0, w1)


class Receiver(BaseHTTPRequestHandler):
    """A webhook endpoint: each POSTed JSON body is appended to `got` (clear it per test)."""

    got: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass
