"""The statements of the domain operations (SQLite's `?` / `:name` placeholders) in
PostgreSQL's spelling, cached per statement."""

from __future__ import annotations

import re
from functools import lru_cache

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_LIKE = re.compile(r"\b(NOT\s+)?LIKE\b")


@lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """`sql` with psycopg placeholders (`%s`, `%(name)s`), literal `%` doubled, and LIKE as
    ILIKE (SQLite's LIKE ignores ASCII case; the results must not depend on the backend)."""
    s = sql.replace("%", "%%")
    s = _NAMED.sub(r"%(\1)s", s)
    s = s.replace("?", "%s")
    return _LIKE.sub(lambda m: f"{m.group(1) or ''}ILIKE", s)


@lru_cache(maxsize=1024)
def translate_plain(sql: str) -> str:
    """`sql` run without arguments (psycopg then leaves `%` alone): only LIKE changes."""
    return _LIKE.sub(lambda m: f"{m.group(1) or ''}ILIKE", sql)


def json_number(expr: str) -> str:
    """`expr` (JSON text) as a float when it is a JSON number, else NULL. (No `?` in the
    pattern: it would read as a placeholder.)"""
    pat = r"^-{0,1}(0|[1-9][0-9]*)(\.[0-9]+){0,1}([eE][-+]{0,1}[0-9]+){0,1}$"
    return f"CASE WHEN {expr} ~ '{pat}' THEN CAST({expr} AS DOUBLE PRECISION) END"
