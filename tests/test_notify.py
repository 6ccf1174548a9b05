"""Notifications against real local receivers: an HTTP server in a thread (the webhook), a
small SMTP server speaking the protocol over a socket (email through smtplib), and a real
command. Unreachable or silent receivers give a warning, never an exception, in bounded
time."""

from __future__ import annotations

import email
import json
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.loop import Command, Email, Webhook, channels_from_env, notify


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.got.append((self.path, self.headers["Content-Type"], json.loads(body)))
        code = 500 if self.path.startswith("/fail") else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):  # keep test output clean
        pass


@pytest.fixture(scope="module")
def hook():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    srv.got = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class _Smtp(socketserver.StreamRequestHandler):
    """Enough of RFC 5321 for smtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self._say("220 localhost test SMTP")
        sender, rcpts = None, []
        while line := self.rfile.readline():
            cmd = line.decode().strip()
            verb = cmd[:4].upper()
            if verb == "EHLO":
                self._say("250-localhost")
                self._say("250 8BITMIME")
            elif verb == "HELO":
                self._say("250 localhost")
            elif verb == "MAIL":
                sender, rcpts = cmd.split(":", 1)[1].strip(), []
                self._say("250 OK")
            elif verb == "RCPT":
                rcpts.append(cmd.split(":", 1)[1].strip())
                self._say("250 OK")
            elif verb == "DATA":
                self._say("354 end with <CRLF>.<CRLF>")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                self.server.got.append((sender, rcpts, b"".join(data)))
                self._say("250 queued")
            elif verb in ("RSET", "NOOP"):
                self._say("250 OK")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            else:
                self._say("502 not implemented")


@pytest.fixture(scope="module")
def smtp():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
    srv.daemon_threads = True
    srv.got = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv, path="/hook/T0KEN-secret"):
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_webhook_email_and_command(hook, smtp, tmp_path):
    hook.got.clear()
    smtp.got.clear()
    out = tmp_path / "event.json"
    cmd = [sys.executable, "-c", f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"]
    event = {"kind": "gate_failed", "model": "clf", "version": 3, "text": "FAIL: clf v3"}
    res = notify(
        event,
        [
            Webhook(_url(hook)),
            Email(["ops@example.org", "ml@example.org"], "127.0.0.1", smtp.server_address[1]),
            Command(cmd),
        ],
    )
    assert [r["ok"] for r in res] == [True, True, True], res
    path, ctype, body = hook.got[0]
    assert path == "/hook/T0KEN-secret" and ctype == "application/json"
    assert body["text"] == "FAIL: clf v3"  # what Slack and Teams show
    assert body["event"]["model"] == "clf" and body["event"]["version"] == 3
    sender, rcpts, raw = smtp.got[0]
    assert sorted(rcpts) == ["<ml@example.org>", "<ops@example.org>"]
    msg = email.message_from_bytes(raw)
    assert msg["Subject"] == "[mlops-jupyter] gate_failed: clf"
    assert "FAIL: clf v3" in msg.get_payload(decode=True).decode()
    got = json.loads(out.read_text())
    assert got["kind"] == "gate_failed" and got["text"] == "FAIL: clf v3" and "time" in got
    assert "T0KEN" not in res[0]["channel"]  # a webhook's token is never shown


def test_channels_from_env_and_config(hook, tmp_path, monkeypatch):
    hook.got.clear()
    cfg = tmp_path / "notify.toml"
    cfg.write_text(f'[[webhook]]\nurl = "{_url(hook, "/from-config")}"\ntimeout = 2\n')
    monkeypatch.setenv("MLOPS_JUPYTER_NOTIFY_CONFIG", str(cfg))
    monkeypatch.setenv("MLOPS_JUPYTER_NOTIFY_WEBHOOK", _url(hook, "/from-env"))
    chans = channels_from_env()
    assert [type(c).__name__ for c in chans] == ["Webhook", "Webhook"]
    res = mj.notify("model clf needs an approval")
    assert all(r["ok"] for r in res)
    assert sorted(p for p, _, _ in hook.got) == ["/from-config", "/from-env"]
    assert hook.got[0][2]["text"] == "model clf needs an approval"
    # secrets stay out of the file; a broken config is warned about, not raised
    cfg.write_text('[[email]]\nto = ["a@b.c"]\npassword = "hunter2"\n')
    with pytest.raises(InvalidInputError, match="MLOPS_JUPYTER_SMTP_PASSWORD"):
        channels_from_env()
    with pytest.warns(RuntimeWarning, match="not sent"):
        assert notify({"kind": "x"}) == []
    monkeypatch.delenv("MLOPS_JUPYTER_NOTIFY_CONFIG")
    monkeypatch.setenv("MLOPS_JUPYTER_NOTIFY_EMAIL", "a@b.c")
    monkeypatch.setenv("MLOPS_JUPYTER_SMTP_PORT", "smtp")
    with pytest.warns(RuntimeWarning, match="SMTP_PORT"):
        assert notify({"kind": "x"}) == []
    with pytest.raises(InvalidInputError, match="http"):
        Webhook("ftp://example.org/x")
    with pytest.raises(InvalidInputError, match="recipient"):
        Email([])


def test_failures_warn_without_raising_in_bounded_time(hook, smtp):
    # a closed port, a receiver that accepts and never answers, an HTTP 500, an SMTP
    # server without STARTTLS, a command that exits 3 and one that hangs
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        chans = [
            Webhook(f"http://127.0.0.1:{port}/x", timeout=1),
            Webhook(f"http://127.0.0.1:{silent.getsockname()[1]}/x", timeout=0.5),
            Webhook(_url(hook, "/fail/T0KEN"), timeout=2),
            Email(["a@b.c"], "127.0.0.1", smtp.server_address[1], starttls=True, timeout=2),
            Command([sys.executable, "-c", "import sys; sys.exit(3)"]),
            Command([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5),
        ]
        t0 = time.monotonic()
        with pytest.warns(RuntimeWarning) as caught:
            res = notify({"kind": "alert", "text": "drift"}, chans)
        took = time.monotonic() - t0
    finally:
        silent.close()
    assert [r["ok"] for r in res] == [False] * 6
    assert "unreachable" in res[0]["error"] and res[1]["error"] == "timed out"
    assert res[2]["error"] == "HTTP 500" and "STARTTLS" in res[3]["error"].upper()
    assert res[4]["error"] == "exit code 3" and res[5]["error"] == "timed out"
    assert len(caught) == 6 and not any("T0KEN" in str(w.message) for w in caught)
    assert took < 15, took
