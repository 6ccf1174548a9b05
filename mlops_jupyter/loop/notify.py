"""Notifications of loop events (a failed gate, an alert, an approval needed): a webhook
(Slack/Teams-compatible JSON), email over SMTP, or a command. A channel that fails is
warned about, never raised into the caller, and each has a bounded timeout.

Channels come from `channels=` or, by default, from the environment:

- MLOPS_JUPYTER_NOTIFY_CONFIG: a TOML file with [[webhook]] (url, timeout), [[email]]
  (to, host, port, from, starttls, ssl, timeout) and [[command]] (argv, timeout) tables;
- MLOPS_JUPYTER_NOTIFY_WEBHOOK: webhook URLs (space or comma separated);
- MLOPS_JUPYTER_NOTIFY_EMAIL: addresses, sent through MLOPS_JUPYTER_SMTP_HOST (and _PORT,
  _FROM, _STARTTLS=1);
- MLOPS_JUPYTER_NOTIFY_COMMAND: a command line (the event JSON on its stdin).

SMTP credentials are read from MLOPS_JUPYTER_SMTP_USER and MLOPS_JUPYTER_SMTP_PASSWORD only
(never from the config file), and webhook URLs (which often hold a token) are shown by host.
"""

from __future__ import annotations

import json
import os
import shlex
import smtplib
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from ..errors import InvalidInputError

__all__ = ["Command", "Email", "Webhook", "channels_from_env", "notify"]


class _Refused(RuntimeError):
    """A receiver answered, refusing the notification (its own words as the message)."""


def _timeout(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 300:
        raise InvalidInputError(f"timeout must be a number of seconds in (0, 300], got {t!r}")
    return float(t)


@dataclass
class Webhook:
    """POST `{"text": ..., "event": {...}}` as JSON to `url` (Slack and Teams incoming
    webhooks read "text")."""

    url: str
    timeout: float = 5.0

    def __post_init__(self) -> None:
        u = urllib.parse.urlsplit(str(self.url))
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InvalidInputError("a webhook url must be http:// or https:// with a host")
        self.timeout = _timeout(self.timeout)

    def __str__(self) -> str:
        u = urllib.parse.urlsplit(self.url)  # the path may hold a token: show the host only
        return f"webhook {u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}/..."

    def send(self, event: dict[str, Any], text: str) -> None:
        body = json.dumps({"text": text, "event": event}, default=str).encode()
        req = urllib.request.Request(
            self.url, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            resp.read(1 << 16)


@dataclass
class Email:
    """Email through an SMTP server; user and password from MLOPS_JUPYTER_SMTP_USER and
    MLOPS_JUPYTER_SMTP_PASSWORD when set. `starttls`: upgrade the connection; `ssl`: SMTPS."""

    to: list[str]
    host: str = "localhost"
    port: int = 25
    sender: str = "mlops-jupyter@localhost"
    starttls: bool = False
    ssl: bool = False
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.to, str):
            self.to = [a.strip() for a in self.to.replace(",", " ").split() if a.strip()]
        if not self.to or not all(isinstance(a, str) and "@" in a for a in self.to):
            raise InvalidInputError(f"email needs recipient addresses, got {self.to!r}")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise InvalidInputError(f"port must be 1-65535, got {self.port!r}")
        self.timeout = _timeout(self.timeout)

    def __str__(self) -> str:
        return f"email to {len(self.to)} recipient(s) via {self.host}:{self.port}"

    def send(self, event: dict[str, Any], text: str) -> None:
        msg = EmailMessage()
        what = event.get("model")
        msg["Subject"] = f"[mlops-jupyter] {event.get('kind', 'event')}" + (
            f": {what}" if what else ""
        )
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        body = event.get("markdown") or text
        msg.set_content(body + "\n\n" + json.dumps(event, indent=2, default=str) + "\n")
        cls = smtplib.SMTP_SSL if self.ssl else smtplib.SMTP
        with cls(self.host, self.port, timeout=self.timeout) as s:
            if self.starttls:
                s.starttls()
            user = os.environ.get("MLOPS_JUPYTER_SMTP_USER")
            if user:
                s.login(user, os.environ.get("MLOPS_JUPYTER_SMTP_PASSWORD", ""))
            s.send_message(msg)


@dataclass
class Command:
    """Run `argv` (no shell) with the event as JSON on its stdin; a non-zero exit fails."""

    argv: list[str] = field(default_factory=list)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.argv, str):
            self.argv = shlex.split(self.argv)
        if not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise InvalidInputError(f"command needs an argv list of strings, got {self.argv!r}")
        self.timeout = _timeout(self.timeout)

    def __str__(self) -> str:
        return f"command {os.path.basename(self.argv[0])}"

    def send(self, event: dict[str, Any], text: str) -> None:
        data = json.dumps({**event, "text": text}, default=str).encode()
        p = subprocess.run(
            self.argv, input=data, capture_output=True, timeout=self.timeout, check=False
        )
        if p.returncode != 0:
            tail = p.stderr.decode(errors="replace").strip()[-200:]
            raise _Refused(f"exit code {p.returncode}" + (f": {tail}" if tail else ""))


Channel = Webhook | Email | Command


def _from_table(kind: str, t: dict[str, Any]) -> Channel:
    t = dict(t)
    if kind == "webhook":
        return Webhook(t.pop("url", ""), t.pop("timeout", 5.0), **t)
    if kind == "email":
        if "from" in t:
            t["sender"] = t.pop("from")
        for secret in ("user", "password"):
            if secret in t:
                raise InvalidInputError(
                    f"email {secret!r} does not belong in the config file: set "
                    f"MLOPS_JUPYTER_SMTP_{secret.upper()}"
                )
        return Email(**t)
    return Command(**t)


def read_toml(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A TOML file as a dict, with a clear error naming `what` it is."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise InvalidInputError(
                f"{what} {path}: reading TOML needs Python 3.11+ or tomli"
            ) from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, ValueError) as e:  # TOMLDecodeError is a ValueError
        raise InvalidInputError(f"{what} {path}: {e}") from None


def _port(text: str) -> int:
    if not text.strip().isdigit():
        raise InvalidInputError(f"MLOPS_JUPYTER_SMTP_PORT must be a port number, got {text!r}")
    return int(text)


def channels_from_env() -> list[Channel]:
    """The channels configured by the environment (see the module's docstring)."""
    out: list[Channel] = []
    env = os.environ
    if path := env.get("MLOPS_JUPYTER_NOTIFY_CONFIG"):
        cfg = read_toml(path, "notification config")
        unknown = set(cfg) - {"webhook", "email", "command"}
        if unknown:
            raise InvalidInputError(
                f"notification config {path}: unknown tables {sorted(unknown)} "
                "(webhook, email, command)"
            )
        for kind in ("webhook", "email", "command"):
            for t in cfg.get(kind, []):
                try:
                    out.append(_from_table(kind, t))
                except TypeError as e:
                    raise InvalidInputError(
                        f"notification config {path}, [[{kind}]]: {e}"
                    ) from None
    for url in env.get("MLOPS_JUPYTER_NOTIFY_WEBHOOK", "").replace(",", " ").split():
        out.append(Webhook(url))
    if to := env.get("MLOPS_JUPYTER_NOTIFY_EMAIL", "").strip():
        out.append(
            Email(
                to,
                host=env.get("MLOPS_JUPYTER_SMTP_HOST", "localhost"),
                port=_port(env.get("MLOPS_JUPYTER_SMTP_PORT", "25")),
                sender=env.get("MLOPS_JUPYTER_SMTP_FROM", "mlops-jupyter@localhost"),
                starttls=env.get("MLOPS_JUPYTER_SMTP_STARTTLS", "") in ("1", "true", "yes"),
            )
        )
    if cmd := env.get("MLOPS_JUPYTER_NOTIFY_COMMAND", "").strip():
        out.append(Command(cmd))
    return out


def notify(event: dict[str, Any] | str, channels: list[Channel] | None = None) -> list[dict]:
    """Send `event` (a dict with "kind" and "text", or a message) to `channels` (default:
    channels_from_env()). Returns one {"channel", "ok", "error", "seconds"} per channel; a
    failing channel is warned about (RuntimeWarning), never raised."""
    if isinstance(event, str):
        event = {"kind": "message", "text": event}
    if not isinstance(event, dict):
        raise InvalidInputError(f"event must be a dict or a string, got {type(event).__name__}")
    event = {"time": time.time(), **event}
    text = str(event.get("text") or f"mlops-jupyter: {event.get('kind', 'event')}")
    if channels is None:
        try:
            channels = channels_from_env()
        except InvalidInputError as e:  # a broken config must not break the caller's step
            warnings.warn(f"mlops-jupyter: notifications not sent: {e}", RuntimeWarning, 2)
            return []
    results = []
    for ch in channels:
        t0 = time.monotonic()
        try:
            ch.send(event, text)
            err = None
        except (OSError, smtplib.SMTPException, subprocess.SubprocessError, RuntimeError) as e:
            err = _describe(e)
        except Exception as e:  # noqa: BLE001 - a notification never breaks the caller
            err = f"{type(e).__name__}: {e}"
        if err is not None:
            warnings.warn(f"mlops-jupyter: notification via {ch} failed: {err}", RuntimeWarning, 2)
        results.append(
            {"channel": str(ch), "ok": err is None, "error": err, "seconds": time.monotonic() - t0}
        )
    return results


def _describe(e: BaseException) -> str:
    if isinstance(e, _Refused):
        return str(e)
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"  # not the URL: it may hold a token
    if isinstance(e, urllib.error.URLError):
        return f"unreachable ({e.reason})"
    if isinstance(e, (socket.timeout, TimeoutError, subprocess.TimeoutExpired)):
        return "timed out"
    return f"{type(e).__name__}: {e}"
