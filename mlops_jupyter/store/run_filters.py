"""The runs-list filter language and paging checks shared by the runs list and the
dashboard table: conditions such as `params.lr>=0.01`, `metrics.loss.min<0.3` or
`tags.team~vis`, turned into one WHERE clause over `runs r JOIN experiments e` with named
parameters. Bad input raises InvalidInputError before any query runs."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import InvalidInputError
from . import query as q
from . import runs as rstore
from .db import Store

MAX_OFFSET = 2**63 - 1  # SQLite integers are 64-bit
MAX_CONDITIONS = 50  # SQLite refuses very deep expressions; no sidebar filter needs more
_COND = re.compile(r"^\s*(params|metrics|tags)\.(.+?)\s*(>=|<=|!=|==|=|>|<|~)\s*(.*?)\s*$")


def _number(s: str) -> float | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def like_pattern(text: str) -> str:
    """`text` escaped for `LIKE ? ESCAPE '\\'`: % and _ match themselves, not anything."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def parse_condition(text: str) -> tuple[str, str, str, str]:
    """'params.lr>=0.01' -> ('params', 'lr', '>=', '0.01'). Raises InvalidInputError."""
    m = _COND.match(text or "")
    if not m:
        raise InvalidInputError(
            f"bad filter {text!r}: expected params.<key>|metrics.<key>|tags.<key> "
            "followed by one of = != > >= < <= ~ and a value, e.g. 'metrics.loss<0.5'"
        )
    kind, key, op, value = m.groups()
    op = "=" if op == "==" else op
    if kind == "metrics" and op == "~":
        raise InvalidInputError(
            f"bad filter {text!r}: ~ (contains) applies to params and tags, not metrics"
        )
    if kind == "metrics" and _number(value) is None:
        raise InvalidInputError(f"bad filter {text!r}: metric conditions need a number")
    if op in (">", ">=", "<", "<=") and _number(value) is None:
        raise InvalidInputError(f"bad filter {text!r}: {op} needs a number")
    return kind, key, op, value


def _condition_sql(store: Store, kind: str, key: str, op: str, value: str) -> tuple[str, list[Any]]:
    if kind == "metrics":
        col = "last_value"
        for suffix in ("last", "min", "max"):
            if key.endswith("." + suffix):
                key, col = key[: -len(suffix) - 1], f"{suffix}_value"
        return (
            "EXISTS (SELECT 1 FROM metric_summary ms JOIN metric_keys mk ON mk.id = ms.key_id"
            f" WHERE ms.run_id = r.id AND mk.key = ? AND ms.{col} {op} ?)",
            [key, float(value)],
        )
    table = "params" if kind == "params" else "tags"
    num = _number(value)
    if op == "~":
        expr, arg = "kv.value LIKE ? ESCAPE '\\'", f"%{like_pattern(value)}%"
    elif num is not None:
        # numbers are stored as JSON numbers; compare numerically when the value is one
        expr = f"{store.json_number('kv.value')} {op} ?"
        arg = num
        if op in ("=", "!="):
            expr = f"(({expr}) OR kv.value {op} ?)"
            return (
                f"EXISTS (SELECT 1 FROM {table} kv WHERE kv.run_id = r.id AND kv.key = ?"
                f" AND {expr})",
                [key, num, json.dumps(value)],
            )
    else:
        lit = {"true": "true", "false": "false", "null": "null"}.get(value.lower())
        expr, arg = f"kv.value {op} ?", lit or json.dumps(value)
    return (
        f"EXISTS (SELECT 1 FROM {table} kv WHERE kv.run_id = r.id AND kv.key = ? AND {expr})",
        [key, arg],
    )


def filter_sql(
    store: Store,
    args: dict[str, Any],
    experiment: str | None = None,
    status: str | None = None,
    search: str | None = None,
    conditions: list[str] | None = None,
    top_level: bool = False,
    deleted: bool | None = False,
) -> str:
    """The WHERE clause (or "") over `runs r JOIN experiments e` for the runs list filters;
    its values are added to `args` as named parameters. Runs deleted through the MLflow API
    are left out unless `deleted` says otherwise (q.deleted_cond). Raises InvalidInputError."""
    if conditions and len(conditions) > MAX_CONDITIONS:
        raise InvalidInputError(
            f"at most {MAX_CONDITIONS} conditions (where=...) are allowed, got {len(conditions)}"
        )
    if status is not None and status not in rstore.STATUSES:
        raise InvalidInputError(f"status must be one of {list(rstore.STATUSES)}, got {status!r}")
    cond: list[str] = []
    dcond = q.deleted_cond(deleted)
    if dcond:
        cond.append(dcond)

    def bind(values: list[Any], sql: str) -> str:
        # mixing named and positional sqlite parameters is not allowed: name them all
        for v in values:
            name = f"p{len(args)}"
            args[name] = v
            sql = sql.replace("?", f":{name}", 1)
        return sql

    if experiment:
        cond.append(bind([experiment], "e.name = ?"))
    if status:
        cond.append(bind([status], "r.status = ?"))
    if top_level:
        cond.append("r.parent_id IS NULL")
    if search:
        esc = like_pattern(search)
        like = f"%{esc}%"
        cond.append(
            bind(
                [like, f"{esc}%", like, like, like],
                "(r.name LIKE ? ESCAPE '\\' OR r.uid LIKE ? ESCAPE '\\'"
                " OR e.name LIKE ? ESCAPE '\\' OR r.username LIKE ? ESCAPE '\\'"
                " OR r.host LIKE ? ESCAPE '\\')",
            )
        )
    for text in conditions or []:
        sql, vals = _condition_sql(store, *parse_condition(text))
        cond.append(bind(vals, sql))
    return ("WHERE " + " AND ".join(cond)) if cond else ""


def check_page(order: str, limit: int, offset: int, max_limit: int) -> None:
    """Validate the paging arguments shared by the runs list and the dashboard table."""
    if order not in ("asc", "desc"):
        raise InvalidInputError(f"order must be 'asc' or 'desc', got {order!r}")
    if not (1 <= limit <= max_limit):
        raise InvalidInputError(f"limit must be between 1 and {max_limit}, got {limit}")
    if not (0 <= offset <= MAX_OFFSET):
        raise InvalidInputError(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")
