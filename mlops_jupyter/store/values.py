"""Param and tag values as stored JSON, exact or refused: a value reads back equal to what
was logged (ints of any size, NaN and +-inf included), or InvalidInputError says why it
cannot (non-string dict keys, text that is not valid UTF-8, NUL characters in names),
before anything is written. Also the check of names every store keeps as text."""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidInputError

_MAX_DEPTH = 64


def _utf8(text: str, where: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{where}: {text!r} is not valid UTF-8 text (it contains a lone surrogate)"
        ) from None
    return text


def check_text(text: str | None, what: str) -> None:
    """Refuse a name that a store cannot keep as text: a lone surrogate (SQLite) or a NUL
    character (PostgreSQL text; refused on every backend alike)."""
    if isinstance(text, str):
        _utf8(text, what)
        _no_nul(text, what)


def _no_nul(text: str, what: str) -> None:
    if "\x00" in text:
        raise InvalidInputError(f"{what} {text!r} contains a NUL character")


def _plain(v: Any, where: str, depth: int = 0) -> Any:
    """`v` as JSON-ready Python data that reads back equal, or InvalidInputError."""
    if depth > _MAX_DEPTH:
        raise InvalidInputError(f"{where}: nested more than {_MAX_DEPTH} levels (a cycle?)")
    if v is None or isinstance(v, (bool, int, float)):
        # ints of any size and NaN/+-inf are kept exactly (NaN/Infinity JSON tokens)
        return v if type(v) in (bool, int, float) else v.item() if hasattr(v, "item") else v
    if isinstance(v, str):
        return _utf8(v, where)
    if hasattr(v, "tolist") and hasattr(v, "ndim"):  # numpy arrays/scalars, tensors
        try:
            v = v.item() if v.ndim == 0 else v.tolist()
        except Exception as e:
            raise InvalidInputError(f"{where}: cannot read {type(v).__name__}: {e}") from None
        return _plain(v, where, depth + 1)
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 0) == 0:
        try:
            return _plain(v.item(), where, depth + 1)
        except InvalidInputError:
            raise
        except Exception:
            pass
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise InvalidInputError(
                    f"{where}: dict key {k!r} is a {type(k).__name__}; JSON keeps only string "
                    f"keys, so it would come back as {str(k)!r}. Use string keys."
                )
            out[_utf8(k, where)] = _plain(x, f"{where}[{k!r}]", depth + 1)
        return out
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{where}[{i}]", depth + 1) for i, x in enumerate(v)]
    # anything else (a class, a path, a set...) is recorded as its str(), as documented
    text = str(v)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def encode_value(v: Any, where: str = "value") -> str:
    """A param/tag value as stored JSON. Exact round trip for None, bools, ints of any
    size, floats including NaN and +-inf, strings, lists, str-keyed dicts and numpy arrays
    (read back as lists); tuples come back as lists; other objects are stored as their
    str(). Refused (InvalidInputError): dict keys that are not strings, text that is not
    valid UTF-8 (lone surrogates)."""
    return json.dumps(_plain(v, where), allow_nan=True)


def encode_items(items: dict[str, Any] | None, what: str) -> list[tuple[str, str]]:
    """Check and encode params or tags: [(key, JSON value)]. Raises before any write."""
    if items is None:
        return []
    _check_mapping(items, what)
    return [(k, encode_value(v, f"{what}[{k!r}]")) for k, v in items.items()]


def _check_mapping(d: Any, what: str) -> dict:
    if not isinstance(d, dict):
        raise InvalidInputError(f"{what} must be a dict, got {type(d).__name__}")
    for k in d:
        if not isinstance(k, str) or not k:
            raise InvalidInputError(f"{what} keys must be non-empty strings, got {k!r}")
        _utf8(k, f"{what} key")
        _no_nul(k, f"{what} key")
    return d
