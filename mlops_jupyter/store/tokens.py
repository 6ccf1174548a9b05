"""API tokens of the tracking server, stored hashed in the store so every server process
(and machine) serving it sees the same tokens. The secret itself is shown once, at creation."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from ..errors import InvalidInputError
from .db import Store

SCOPES = ("read", "write", "admin")
_RANK = {s: i for i, s in enumerate(SCOPES)}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
PREFIX = "mjt_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def scope_allows(have: str, need: str) -> bool:
    """Whether a token of scope `have` may do what needs `need` (admin > write > read)."""
    return _RANK.get(have, -1) >= _RANK[need]


def parse_duration(text: str) -> float:
    """Seconds in '30d', '12h', '15m', '45s' or a bare number of days."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise InvalidInputError(f"expected a duration like 30d, 12h or 15m, got {text!r}")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}[m.group(2)]
    secs = float(m.group(1)) * unit
    if secs <= 0:
        raise InvalidInputError(f"a duration must be positive, got {text!r}")
    return secs


def add(store: Store, name: str, scope: str, expires_in: float | None = None) -> str:
    """Create token `name` with `scope`; return the secret (shown once, stored hashed)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"token name must be 1-64 letters, digits, '_', '.', '@' or '-', got {name!r}"
        )
    if scope not in SCOPES:
        raise InvalidInputError(f"scope must be one of {SCOPES}, got {scope!r}")
    secret = PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    expires = now + expires_in if expires_in is not None else None
    with store.write("add a server token") as c:
        if c.execute("SELECT 1 FROM server_tokens WHERE name=?", (name,)).fetchone():
            raise InvalidInputError(f"a token named {name!r} exists; revoke it first")
        c.execute(
            "INSERT INTO server_tokens(name, hash, scope, created, expires) VALUES(?,?,?,?,?)",
            (name, _hash(secret), scope, now, expires),
        )
    return secret


def revoke(store: Store, name: str) -> bool:
    """Delete token `name`; False if there was none."""
    with store.write("revoke a server token") as c:
        return c.execute("DELETE FROM server_tokens WHERE name=?", (name,)).rowcount > 0


def list_tokens(store: Store) -> list[dict[str, Any]]:
    """Tokens (never their secrets): name, scope, created, expires, last_used, expired."""
    now = time.time()
    return [
        {
            "name": n,
            "scope": s,
            "created": c,
            "expires": e,
            "last_used": u,
            "expired": e is not None and e <= now,
        }
        for n, s, c, e, u in store.read(
            "SELECT name, scope, created, expires, last_used FROM server_tokens ORDER BY name"
        )
    ]


def check(store: Store, token: str) -> tuple[str, str] | None:
    """(name, scope) of a valid, unexpired `token`, else None."""
    if not token or len(token) > 200:
        return None
    h = _hash(token)
    rows = store.read("SELECT name, hash, scope, expires FROM server_tokens WHERE hash=?", (h,))
    if not rows:
        return None
    name, stored, scope, expires = rows[0]
    # the lookup was by hash already; compare in constant time all the same
    if not hmac.compare_digest(stored, h):
        return None
    if expires is not None and expires <= time.time():
        return None
    return name, scope


def touch(store: Store, name: str, when: float | None = None) -> None:
    """Record when token `name` was last used (callers throttle this)."""
    with store.write("record token use") as c:
        c.execute(
            "UPDATE server_tokens SET last_used=? WHERE name=?",
            (time.time() if when is None else when, name),
        )
