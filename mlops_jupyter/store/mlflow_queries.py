"""MLflow's search_runs in SQL: the comparisons of its filter grammar, its order_by and the
page (LIMIT/OFFSET) over `runs r JOIN experiments e`, so a page costs the page, not the
whole experiment. Each term keeps the meaning of the reference evaluator
(trackserver/mlflow_search.py) exactly; a term or order this module cannot express exactly
(`can_push` / `can_order` say no) is left to that evaluator by the caller.

Params and tags are stored as JSON text written by runs.encode_value (json.dumps): a
string value matches its filter text as `json.dumps(text)`, another JSON value as its own
text, so equality needs no JSON decoding in SQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from . import query as q
from .db import Store
from .ingest import _RUN_SQL, RunRow

# attribute -> kind: string columns compare as text (code point order), times as numbers
_STR_ATTRS = {"run_id", "run_name", "status", "user_id"}
_TIME_ATTRS = {"start_time": "r.start_time", "end_time": "r.end_time"}
_CMP = {"=", "!=", "<", "<=", ">", ">="}
# tags the MLflow view fills from run columns or hides (see mlflow_convert.load_runs)
_VIEW_TAGS = {"mlflow.runName", "mlflow.user", q.DELETED_TAG}
VIEWS = ("ACTIVE_ONLY", "DELETED_ONLY", "ALL")


def can_push(term: tuple[str, str, str, Any]) -> bool:
    """Whether `term` (entity, key, op, want) has an exact SQL form here."""
    entity, key, op, want = term
    if entity == "metrics":
        return op in _CMP and isinstance(want, float)
    if entity in ("params", "tags"):
        if entity == "tags" and key in _VIEW_TAGS:
            return False
        return (op in ("=", "!=") and isinstance(want, str)) or op in ("IN", "NOT IN")
    if key in _STR_ATTRS:
        return isinstance(want, list) or (isinstance(want, str) and (op in _CMP or op == "LIKE"))
    if key in _TIME_ATTRS:
        return op in _CMP and isinstance(want, float)
    return False


def can_order(item: tuple[str, str, bool]) -> bool:
    """Whether an order_by item (entity, key, descending) sorts in SQL here."""
    entity, key, _ = item
    return entity == "metrics" or (entity == "attributes" and key in _STR_ATTRS | set(_TIME_ATTRS))


def _ms(store: Store, col: str) -> str:
    """Seconds column -> int milliseconds rounded half to even, as Python's round()."""
    x = f"({col} * 1000)"
    if store.backend == "postgresql":
        return f"CAST({x} AS BIGINT)"  # float8 -> int8 uses rint(): ties to even
    t = f"CAST({x} AS INTEGER)"  # SQLite truncates toward zero
    d = f"({x} - {t})"
    return (
        f"(CASE WHEN {d} > 0.5 THEN {t} + 1 WHEN {d} < -0.5 THEN {t} - 1"
        f" WHEN abs({d}) = 0.5 THEN {t} + {t} % 2 ELSE {t} END)"
    )


def _text(store: Store, expr: str) -> str:
    # code point order, as Python compares str: SQLite's BINARY on UTF-8; PostgreSQL "C"
    return f'({expr}) COLLATE "C"' if store.backend == "postgresql" else expr


def _attr(store: Store, key: str, statuses: dict[str, str]) -> str:
    if key in _TIME_ATTRS:
        return _ms(store, _TIME_ATTRS[key])
    if key == "status":
        whens = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in statuses.items())
        expr = f"CASE r.status {whens} ELSE 'FAILED' END"
    else:
        expr = {"run_id": "r.uid", "run_name": "r.name", "user_id": "coalesce(r.username, '')"}[key]
    return _text(store, expr)


def _encodings(text: str) -> list[str]:
    """Stored JSON values whose MLflow text (mlflow_convert._text) is `text`."""
    out = [json.dumps(text)]
    try:
        v = json.loads(text)
    except ValueError:
        return out
    if not isinstance(v, str) and json.dumps(v) == text:
        out.append(text)
    return out


def _glob(pattern: str) -> str:
    """A LIKE pattern (% and _, no escape) as a case-sensitive SQLite GLOB."""
    special = {"*": "[*]", "?": "[?]", "[": "[[]", "%": "*", "_": "?"}
    return "".join(special.get(c, c) for c in pattern)


def _in(n: int) -> str:
    return ",".join("?" * n)


def term_sql(
    store: Store, term: tuple[str, str, str, Any], statuses: dict[str, str]
) -> tuple[str, list[Any]]:
    """SQL condition over `runs r JOIN experiments e` for a pushable term, and its args."""
    entity, key, op, want = term
    if entity == "metrics":
        return (
            "EXISTS (SELECT 1 FROM metric_summary ms JOIN metric_keys mk ON mk.id = ms.key_id"
            f" WHERE ms.run_id = r.id AND mk.key = ? AND ms.last_value {op} ?)",
            [key, want],
        )
    if entity in ("params", "tags"):
        wants = [want] if isinstance(want, str) else want
        enc = [e for w in wants for e in _encodings(w)]
        head = f"EXISTS (SELECT 1 FROM {entity} kv WHERE kv.run_id = r.id AND kv.key = ?"
        if not enc:  # IN (): nothing; NOT IN (): any run that has the key
            return (f"{head} AND 1 = 0)" if op == "IN" else f"{head})"), [key]
        neg = "NOT " if op in ("!=", "NOT IN") else ""
        return f"{head} AND kv.value {neg}IN ({_in(len(enc))}))", [key, *enc]
    expr = _attr(store, key, statuses)
    if isinstance(want, list):
        if not want:
            return ("1 = 0" if op == "IN" else f"{expr} IS NOT NULL"), []
        return f"{expr} {'NOT ' if op == 'NOT IN' else ''}IN ({_in(len(want))})", list(want)
    if op == "LIKE":
        if store.backend == "postgresql":
            # ~~ is LIKE itself (the dialect turns the word LIKE into ILIKE, as SQLite's
            # LIKE ignores case); backslash is its default escape
            return f"{expr} ~~ ?", [want.replace("\\", "\\\\")]
        return f"{expr} GLOB ?", [_glob(want)]
    return f"{expr} {op} ?", [want]


def search_runs(
    store: Store,
    exp_ids: Sequence[int],
    view: str,
    terms: Sequence[tuple[str, str, str, Any]],
    order: Sequence[tuple[str, str, bool]],
    statuses: dict[str, str],
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[RunRow]:
    """Runs of `exp_ids` in MLflow's `view` (ACTIVE_ONLY leaves out runs deleted through
    MLflow) matching every term, sorted by `order` (missing values last) then newest start
    first and run id, paged by limit/offset. Every term and order item must pass can_push /
    can_order; `statuses` maps our run status to MLflow's (others read FAILED)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if not exp_ids or offset >= 2**62:
        return []
    cond = [f"r.experiment_id IN ({_in(len(exp_ids))})"]
    args: list[Any] = [int(i) for i in exp_ids]
    if view != "ALL":
        cond.append(q.DELETED_SQL if view == "DELETED_ONLY" else f"NOT {q.DELETED_SQL}")
    for t in terms:
        if not can_push(t):
            raise ValueError(f"no SQL form for the term {t!r}")
        sql, vals = term_sql(store, t, statuses)
        cond.append(sql)
        args.extend(vals)
    keys: list[str] = []
    for entity, key, desc in order:
        if not can_order((entity, key, desc)):
            raise ValueError(f"no SQL order for {entity}.{key}")
        if entity == "metrics":
            expr = (
                "(SELECT ms.last_value FROM metric_summary ms JOIN metric_keys mk"
                " ON mk.id = ms.key_id WHERE ms.run_id = r.id AND mk.key = ?)"
            )
            args.append(key)
            # NULL (no point, or a NaN last) sorts last either way, as in the evaluator
            keys.append(f"{expr} IS NULL")
            args.append(key)
        else:
            expr = _attr(store, key, statuses)
            keys.append(f"{expr} IS NULL")
        keys.append(f"{expr} {'DESC' if desc else 'ASC'}")
    keys += [f"{_ms(store, 'r.start_time')} DESC", f"{_text(store, 'r.uid')} ASC"]
    sql = f"{_RUN_SQL} WHERE {' AND '.join(cond)} ORDER BY {', '.join(keys)}"
    if limit is not None:
        sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
    return [RunRow(*r) for r in store.read(sql, args)]
