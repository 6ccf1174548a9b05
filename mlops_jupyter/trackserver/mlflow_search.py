"""MLflow's search_runs filter and order_by: the part of its grammar the client's users write
(`metrics.x > 0.5 and params.lr = '0.01' and tags.t != 'a' and attributes.status =
'FINISHED'`, LIKE/ILIKE, IN/NOT IN), parsed into terms, and the reference evaluator over
runs already loaded. The runs/search route runs the terms in SQL (store/mlflow_queries.py)
and leaves to this evaluator only those SQL cannot express exactly."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from .app import HTTPError

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<ident>(?:`[^`]*`|"[^"]*"|[A-Za-z_][\w]*)(?:\.(?:`[^`]*`|"[^"]*"|[\w\-/:]+))*)
    | (?P<op>!=|>=|<=|=|<|>)
    | (?P<str>'(?:[^'\\]|\\.)*')
    | (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<lp>\()|(?P<rp>\))|(?P<comma>,)
    )""",
    re.X,
)
_ENTITY = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
_ATTR_KEYS = {"name": "run_name", "id": "run_id"}


def _bad(msg: str) -> HTTPError:
    return HTTPError(400, "INVALID_PARAMETER_VALUE", f"invalid search filter: {msg}")


def _unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "`\"'":
        return s[1:-1]
    return s


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _bad(f"cannot read {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _split_ident(ident: str) -> tuple[str, str]:
    head, dot, rest = ident.partition(".")
    if not dot:
        head, rest = "attributes", ident
    entity = _ENTITY.get(_unquote(head).lower())
    if entity is None:
        raise _bad(f"unknown entity {head!r} (use metrics., params., tags., attributes.)")
    return entity, _unquote(rest)


def _like(pattern: str, flags: int = 0) -> re.Pattern[str]:
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(rx + r"\Z", flags | re.S)


Clause = Callable[[dict[str, Any]], bool]
# (entity, key, op, want): one comparison of a filter; want is a float, a string or, for
# IN / NOT IN, a list of strings. Attribute keys are canonical (run_name, run_id...).
Term = tuple[str, str, str, Any]
# (entity, key, descending): one order_by item
Order = tuple[str, str, bool]


def _value(run: dict[str, Any], entity: str, key: str) -> Any:
    if entity == "attributes":
        key = {"name": "run_name", "id": "run_id"}.get(key, key)
        return run["attributes"].get(key)
    return run[entity].get(key)


def _compare(v: Any, op: str, want: Any) -> bool:
    if v is None:
        return False
    if isinstance(want, list):
        return (v in want) if op == "IN" else (v not in want)
    if op in ("LIKE", "ILIKE"):
        return bool(_like(want, re.I if op == "ILIKE" else 0).match(str(v)))
    if isinstance(want, float):
        try:
            v = float(v)
        except (TypeError, ValueError):
            return False
        if math.isnan(v):
            return False
    elif not isinstance(v, str):
        v = str(v)
    return {
        "=": v == want,
        "!=": v != want,
        ">": v > want,
        ">=": v >= want,
        "<": v < want,
        "<=": v <= want,
    }[op]


def parse_filter(text: str | None) -> list[Clause]:
    """The AND-ed clauses of a filter string, each a predicate over a loaded run."""
    return [predicate(t) for t in parse_terms(text)]


def predicate(term: Term) -> Clause:
    """A term as a predicate over a loaded run (the reference semantics the SQL search in
    store/mlflow_queries.py keeps)."""
    e, k, o, w = term
    return lambda r: _compare(_value(r, e, k), o, w)


def parse_terms(text: str | None) -> list[Term]:
    """The AND-ed comparisons of a filter string. Raises a 400 HTTPError when unreadable."""
    if not text or not text.strip():
        return []
    toks = _tokens(text)
    out: list[Term] = []
    i = 0
    while i < len(toks):
        kind, ident = toks[i]
        if kind != "ident":
            raise _bad(f"expected a name, got {ident!r}")
        entity, key = _split_ident(ident)
        i += 1
        if i >= len(toks):
            raise _bad("a comparison is missing its operator")
        kind, op = toks[i]
        if kind == "ident" and op.upper() in ("LIKE", "ILIKE", "IN"):
            op = op.upper()
        elif kind == "ident" and op.upper() == "NOT" and i + 1 < len(toks):
            i += 1
            if toks[i][1].upper() != "IN":
                raise _bad("expected IN after NOT")
            op = "NOT IN"
        elif kind != "op":
            raise _bad(f"expected an operator after {ident!r}")
        i += 1
        if op in ("IN", "NOT IN"):
            if i >= len(toks) or toks[i][0] != "lp":
                raise _bad(f"{op} needs a parenthesised list")
            vals: list[str] = []
            i += 1
            while i < len(toks) and toks[i][0] != "rp":
                if toks[i][0] == "str":
                    vals.append(_unquote(toks[i][1]))
                elif toks[i][0] != "comma":
                    raise _bad(f"{op} lists hold quoted strings")
                i += 1
            if i >= len(toks):
                raise _bad("unclosed (")
            i += 1
            want: Any = vals
        else:
            if i >= len(toks) or toks[i][0] not in ("str", "num"):
                raise _bad(f"expected a value after {op}")
            want = (
                _unquote(toks[i][1]).replace("\\'", "'")
                if toks[i][0] == "str"
                else float(toks[i][1])
            )
            i += 1
        if entity == "metrics" and not isinstance(want, float):
            raise _bad(f"metrics.{key} compares with a number")
        if op in ("LIKE", "ILIKE") and not isinstance(want, str):
            raise _bad(f"{op} takes a quoted pattern")
        if entity == "attributes":
            key = _ATTR_KEYS.get(key, key)
        out.append((entity, key, op, want))
        if i < len(toks):
            if toks[i][0] != "ident" or toks[i][1].upper() != "AND":
                raise _bad(f"expected AND, got {toks[i][1]!r} (OR is not supported)")
            i += 1
            if i >= len(toks):
                raise _bad("nothing after AND")
    return out


def parse_order(order_by: list[str] | None) -> list[Order]:
    """order_by items ("metrics.loss DESC", "start_time") as (entity, key, descending)."""
    out: list[Order] = []
    for item in order_by or []:
        m = re.fullmatch(r"\s*(.+?)(?:\s+(ASC|DESC))?\s*", item, re.I)
        if not m:
            raise _bad(f"bad order_by {item!r}")
        entity, key = _split_ident(m.group(1).strip())
        if entity == "attributes":
            key = _ATTR_KEYS.get(key, key)
        out.append((entity, key, (m.group(2) or "ASC").upper() == "DESC"))
    return out


def order_runs(runs: list[dict[str, Any]], order_by: list[str] | None) -> list[dict[str, Any]]:
    """Runs sorted by order_by (missing values last), ties by start time, newest first."""
    runs = sorted(runs, key=lambda r: (-(r["attributes"]["start_time"] or 0), r["run_id"]))
    for entity, key, desc in reversed(parse_order(order_by)):
        have = [r for r in runs if _value(r, entity, key) is not None]
        missing = [r for r in runs if _value(r, entity, key) is None]

        def k(r: dict[str, Any], e: str = entity, kk: str = key) -> Any:
            v = _value(r, e, kk)
            return (0, v, "") if isinstance(v, (int, float)) else (1, 0.0, str(v))

        have.sort(key=k, reverse=desc)
        runs = have + missing
    return runs
