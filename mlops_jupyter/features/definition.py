"""What defines a feature view version, checked and hashed: its name, entity and
timestamp columns, TTL (parsed from "30d", "1d12h" ... and shown back as text), the hash
of its code (the syntax tree, so comments and formatting do not count) and of the whole
definition, and the frame checks shared by registration and training sets. No store
access: views.py registers and reads views with these."""

from __future__ import annotations

import ast
import getpass
import hashlib
import inspect
import json
import os
import re
import textwrap
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl

from ..errors import InvalidInputError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")
_TTL_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s|ms)")
_UNIT_S = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_ttl(ttl: Any) -> float | None:
    """TTL in seconds from "30d", "12h", "1d12h", "90m", "45s", "2w", a number of seconds or
    a timedelta; None means no limit."""
    if ttl is None:
        return None
    if isinstance(ttl, bool):
        raise InvalidInputError(f"ttl must be a duration such as '30d', got {ttl!r}")
    if isinstance(ttl, timedelta):
        secs = ttl.total_seconds()
    elif isinstance(ttl, (int, float)):
        secs = float(ttl)
    elif isinstance(ttl, str):
        s = ttl.strip().lower().replace(" ", "")
        parts = _TTL_PART.findall(s)
        if not s or "".join(n + u for n, u in parts) != s:
            raise InvalidInputError(
                f"ttl {ttl!r} is not a duration: use numbers with units w, d, h, m, s, ms "
                "(e.g. '30d', '12h', '1d12h'), a number of seconds, or a timedelta"
            )
        secs = sum(float(n) * _UNIT_S[u] for n, u in parts)
    else:
        raise InvalidInputError(f"ttl must be a duration such as '30d', got {ttl!r}")
    if not secs > 0 or secs != secs or secs == float("inf"):
        raise InvalidInputError(f"ttl must be a positive duration, got {ttl!r}")
    return secs


def format_ttl(secs: float | None) -> str:
    """'30d', '12h', '1d12h' ... (or '-' for no limit)."""
    if secs is None:
        return "-"
    out, rest = [], secs
    for u in ("w", "d", "h", "m", "s"):
        n = int(rest // _UNIT_S[u])
        if n and not (u == "w" and rest % _UNIT_S["w"]):
            out.append(f"{n}{u}")
            rest -= n * _UNIT_S[u]
    if rest > 1e-9 or not out:
        out.append(f"{rest * 1000:g}ms")
    return "".join(out)


def check_name(name: Any) -> str:
    """`name` if it is a valid feature view name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"feature view name must start with a letter and hold 1-128 letters, digits, "
            f"'_', '.' or '-', got {name!r}"
        )
    return name


def _entities(entity: Any) -> list[str]:
    ents = [entity] if isinstance(entity, str) else entity
    if (
        not isinstance(ents, (list, tuple))
        or not ents
        or not all(isinstance(e, str) and e for e in ents)
        or len(set(ents)) != len(ents)
    ):
        raise InvalidInputError(
            f"entity must be a column name or a list of distinct column names, got {entity!r}"
        )
    return list(ents)


def code_of(fn: Callable) -> tuple[str, str]:
    """(source text, hash) of a function. The hash is of its syntax tree without decorators,
    so reformatting or comments keep the version; where the source cannot be read (a
    function built at run time) it is the compiled code's."""
    try:
        src = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(src)
        node = tree.body[0]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.decorator_list = []
        basis = ast.dump(node, include_attributes=False)
    except (OSError, TypeError, SyntaxError, IndexError):
        code = getattr(fn, "__code__", None)
        if code is None:
            raise InvalidInputError(f"cannot read the code of {fn!r}") from None
        src = ""
        basis = repr((code.co_code, code.co_consts, code.co_names, code.co_varnames))
    return src, hashlib.sha256(basis.encode()).hexdigest()


def user() -> str:
    """The name recorded as a view's owner."""
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def definition_hash(
    code_hash: str | None,
    entities: list[str],
    timestamp: str,
    ttl_s: float | None,
    schema: list[dict[str, str]],
) -> str:
    """The hash that decides a view's version: same definition, same version."""
    definition = {"code": code_hash, "entities": entities, "ts": timestamp, "ttl": ttl_s}
    definition["schema"] = schema
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


def frame_of(obj: Any, what: str) -> pl.DataFrame:
    """A polars DataFrame from a polars/pandas frame (InvalidInputError otherwise)."""
    if isinstance(obj, pl.LazyFrame):
        return obj.collect()
    if isinstance(obj, pl.DataFrame):
        return obj
    if type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame":
        return pl.from_pandas(obj)
    raise InvalidInputError(
        f"{what} must be a polars or pandas DataFrame, got {type(obj).__name__}"
    )


def check_timestamp(df: pl.DataFrame, col: str, what: str) -> pl.DataType:
    """The dtype of timestamp column `col` of `df` (a Datetime or Date), else a clear error."""
    if col not in df.columns:
        raise InvalidInputError(
            f"{what} has no timestamp column {col!r} (columns: {', '.join(df.columns)})"
        )
    dt = df.schema[col]
    if not isinstance(dt, (pl.Datetime, pl.Date)):
        raise InvalidInputError(
            f"timestamp column {col!r} of {what} must hold datetimes, not {dt}; parse it first "
            f"(e.g. pl.col({col!r}).str.to_datetime())"
        )
    return dt


def check_columns(df: pl.DataFrame, cols: list[str], what: str, role: str) -> None:
    """A clear error naming the `cols` missing from `df`."""
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InvalidInputError(
            f"{what} has no {role} column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(df.columns)})"
        )


def _epoch(v: Any) -> float | None:
    """Epoch seconds of a feature timestamp (naive ones and dates read as UTC)."""
    if v is None:
        return None
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).timestamp()
    return datetime(v.year, v.month, v.day, tzinfo=timezone.utc).timestamp()
