"""Output helpers shared by the `mlops-jupyter` subcommands: plain tables, strict JSON,
and the global `--store` option. Text from the store (run names, params, messages) may
hold terminal escape codes: everything printed goes through `safe()`."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from typing import Any

MISSING = "\u2014"  # an em dash: no value, or a NaN


def _escape(ch: str) -> str:
    if ch == "\t":
        return "\\t"
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def safe(text: Any) -> str:
    """`text` with every non-printable character (ESC, other controls, newlines, lone
    surrogates, invisible format characters) written as a backslash escape, so a run name
    cannot move the cursor, clear the screen or set the terminal title."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape(c) for c in s)


def num(v: Any, fmt: str = ".6g") -> str:
    """A number for a table cell: NaN and missing values as an em dash."""
    if v is None:
        return MISSING
    if isinstance(v, float):
        if math.isnan(v):
            return MISSING
        return format(v, fmt) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    return safe(v)


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned text columns with a dashed rule under the header (cells made safe)."""
    header = [safe(h) for h in header]
    rows = [[safe(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def json_text(obj: Any) -> str:
    """Strict JSON: NaN becomes null and infinities the strings "Infinity"/"-Infinity"."""
    return json.dumps(_clean(obj), default=str, allow_nan=False)


def require_store(args: Any) -> None:
    """Refuse, with the location, when the store a read command would read does not exist
    (a mistyped `--store` must not create a new empty store that has "no runs yet")."""
    from .config import find_store_location, redact_url
    from .errors import StoreError
    from .remote import is_remote
    from .store.db import open_existing

    given = getattr(args, "store", None)
    if is_remote(given or os.environ.get("MLOPS_JUPYTER_STORE")):
        return  # a tracking server: it answers for its store (reads only; see docs/server.md)
    loc = given or find_store_location()
    if open_existing(loc) is None:
        where = "--store" if given else "MLOPS_JUPYTER_STORE or the nearest .mlops/ folder"
        shown = redact_url(loc) if isinstance(loc, str) else str(loc)
        raise StoreError(
            f"no store at {safe(shown)}: it does not exist (check {where}); "
            "read commands never create one"
        )


def use_store(args: Any) -> None:
    """Apply `--store` when the parsed arguments carry one."""
    if getattr(args, "store", None):
        from .tracking import set_store

        set_store(args.store)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {v}")
    return v


def number_in(what: str, ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """argparse type: a number of `what` (e.g. "milliseconds") for which `ok` holds, else
    the error "must be RULE" (NaN never passes a comparison, so it is refused too)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {v}")
        return v

    return parse
