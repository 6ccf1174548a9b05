"""SQL builders for statements SQLite and PostgreSQL spell the same way, so the domain
operations stay one copy (see store/base.py)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache


def quote(name: str) -> str:
    """An identifier, quoted ("user" is reserved in PostgreSQL; quoting is valid in both)."""
    return f'"{name}"'


def insert(table: str, cols: Sequence[str], tail: str = "") -> str:
    """`INSERT INTO table(cols) VALUES(?, ...)` followed by `tail` (ON CONFLICT, RETURNING)."""
    return (
        f"INSERT INTO {table}({', '.join(quote(c) for c in cols)})"
        f" VALUES({', '.join('?' for _ in cols)}){tail}"
    )


@cache
def upsert(table: str, cols: tuple[str, ...], key: tuple[str, ...]) -> str:
    """`INSERT ... ON CONFLICT(key) DO UPDATE` setting every non-key column: a row with
    the same key is replaced (what SQLite's `INSERT OR REPLACE` did, without deleting)."""
    rest = [c for c in cols if c not in key]
    head = insert(table, cols, f" ON CONFLICT({', '.join(quote(k) for k in key)})")
    if not rest:
        return head + " DO NOTHING"
    return head + " DO UPDATE SET " + ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in rest)


@cache
def insert_ignore(table: str, cols: tuple[str, ...]) -> str:
    """`INSERT ... ON CONFLICT DO NOTHING`: keep the row already there."""
    return insert(table, cols, " ON CONFLICT DO NOTHING")
