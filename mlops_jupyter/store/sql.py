"""SQL builders for statements SQLite and PostgreSQL spell the same way, so the domain
operations stay one copy (see store/base.py)."""

from __future__ import annotations

from functools import cache


@cache
def upsert(table: str, cols: tuple[str, ...], key: tuple[str, ...]) -> str:
    """`INSERT ... ON CONFLICT(key) DO UPDATE` setting every non-key column: a row with
    the same key is replaced (what SQLite's `INSERT OR REPLACE` did, without deleting)."""
    rest = [c for c in cols if c not in key]
    head = (
        f"INSERT INTO {table}({', '.join(_q(c) for c in cols)})"
        f" VALUES({', '.join('?' for _ in cols)}) ON CONFLICT({', '.join(_q(k) for k in key)})"
    )
    if not rest:
        return head + " DO NOTHING"
    return head + " DO UPDATE SET " + ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in rest)


@cache
def insert_ignore(table: str, cols: tuple[str, ...]) -> str:
    """`INSERT ... ON CONFLICT DO NOTHING`: keep the row already there."""
    return (
        f"INSERT INTO {table}({', '.join(_q(c) for c in cols)})"
        f" VALUES({', '.join('?' for _ in cols)}) ON CONFLICT DO NOTHING"
    )


def _q(name: str) -> str:
    # "user" is reserved in PostgreSQL; quoting every identifier is valid in both
    return f'"{name}"'
