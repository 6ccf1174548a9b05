"""Queries behind the dashboard: runs as a table of chosen param/metric/tag columns (sorted,
filtered with the runs-list conditions, paged or whole for charts and CSV), the columns a
set of runs has, and group-by statistics (mean and std of metrics per param/tag value)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

from ..errors import InvalidInputError
from .api_queries import _decode, clean, maybe_reconcile
from .db import Store
from .run_filters import check_page, filter_sql

BASE_FIELDS = ["id", "name", "experiment", "status", "start_time", "duration_s", "user", "host"]
_BASE_SORT = {
    "name": "lower(r.name)",
    "experiment": "lower(e.name)",
    "status": "r.status",
    "start_time": "r.start_time",
    "duration_s": "(coalesce(r.end_time, :now) - r.start_time)",
    "host": "r.host",
    "user": "r.username",
}
MAX_TABLE_LIMIT = 20_000  # one answer for charts (scatter, parallel coordinates, histogram)
MAX_COLUMNS = 100
MAX_GROUPS = 200
_STATS = ("last", "min", "max")
_FROM = "FROM runs r JOIN experiments e ON e.id = r.experiment_id"


def parse_column(text: str) -> tuple[str, str, str]:
    """'params.lr' -> ('params', 'lr', ''); 'metrics.loss' -> ('metrics', 'loss', 'last');
    'metrics.loss.min' -> ('metrics', 'loss', 'min'). Raises InvalidInputError."""
    kind, _, key = (text or "").partition(".")
    if kind not in ("params", "metrics", "tags") or not key:
        raise InvalidInputError(
            f"bad column {text!r}: expected params.<key>, metrics.<key>[.last|.min|.max]"
            " or tags.<key>"
        )
    stat = ""
    if kind == "metrics":
        stat = "last"
        for s in _STATS:
            if key.endswith("." + s):
                key, stat = key[: -len(s) - 1], s
    return kind, key, stat


def column_name(kind: str, key: str, stat: str) -> str:
    """The name a column has in answers and CSV (the same as in `mj.runs()`)."""
    return f"{kind}.{key}.{stat}" if kind == "metrics" else f"{kind}.{key}"


def columns(store: Store, experiment: str | None = None) -> dict[str, Any]:
    """Param, metric and tag keys of the runs (of one experiment), and whether the store
    records several hosts or users (the dashboard then shows those columns)."""
    args: dict[str, Any] = {}
    where = filter_sql(store, args, experiment)
    ids = f"SELECT r.id {_FROM} {where}"

    def keys(sql: str) -> list[str]:
        return [r[0] for r in store.read(sql.format(ids=ids), args)]

    params = keys("SELECT DISTINCT key FROM params WHERE run_id IN ({ids}) ORDER BY key")
    tags = keys("SELECT DISTINCT key FROM tags WHERE run_id IN ({ids}) ORDER BY key")
    metrics = keys(
        "SELECT k.key FROM metric_summary s JOIN metric_keys k ON k.id = s.key_id"
        " WHERE s.run_id IN ({ids}) AND k.key NOT LIKE 'sys/%' GROUP BY k.key"
        " ORDER BY count(*) DESC, k.key"
    )
    n_hosts, n_users = store.read(
        f"SELECT count(DISTINCT r.host), count(DISTINCT r.username) {_FROM} {where}", args
    )[0]
    return {
        "params": params,
        "metrics": metrics,
        "tags": [t for t in tags if not t.startswith("env.")]
        + [t for t in tags if t.startswith("env.")],
        # one person on one machine: the columns would say nothing
        "has_user": n_users > 1 or (n_hosts > 1 and n_users > 0),
        "has_host": n_hosts > 1 or n_users > 1,
    }


def _sort_sql(store: Store, sort: str, args: dict[str, Any], kids: dict[str, int]) -> list[str]:
    """ORDER BY terms (before the direction) for the column `sort`."""
    if sort in _BASE_SORT:
        return [_BASE_SORT[sort]]
    kind, key, stat = parse_column(sort)
    args["sort_key"] = key
    if kind == "metrics":
        args["sort_kid"] = kids.get(key, -1)
        return [
            f"(SELECT ms.{stat}_value FROM metric_summary ms"
            " WHERE ms.run_id = r.id AND ms.key_id = :sort_kid)"
        ]
    # numbers sort as numbers (before text when ascending), other JSON values by their text
    sub = f"(SELECT {{}} FROM {kind} kv WHERE kv.run_id = r.id AND kv.key = :sort_key)"
    num = sub.format(store.json_number("kv.value"))
    return [f"({num} IS NULL)", num, sub.format("kv.value")]


def _key_ids(store: Store, keys: list[str]) -> dict[str, int]:
    if not keys:
        return {}
    rows = store.read(
        f"SELECT key, id FROM metric_keys WHERE key IN ({','.join('?' * len(keys))})", keys
    )
    return dict(rows)


def _page_ids(
    store: Store, where: str, args: dict[str, Any], sort: str, order: str, kids: dict[str, int]
) -> list[int]:
    cols = _sort_sql(store, sort, args, kids)
    direction = "DESC" if order == "desc" else "ASC"
    terms = ", ".join(f"{c} {direction}" for c in cols)
    return [
        r[0]
        for r in store.read(
            f"SELECT r.id {_FROM} {where} ORDER BY {cols[-1]} IS NULL, {terms},"
            f" r.id {direction} LIMIT :limit OFFSET :offset",
            args,
        )
    ]


def _rows(store: Store, ids: list[int], cols: list[tuple[str, str, str]]) -> list[list[Any]]:
    """Base fields + the column values of the runs `ids`, in that order."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    now = time.time()
    base = {
        r[0]: [r[1], r[2], r[3], r[4], r[5], (r[6] if r[6] is not None else now) - r[5], r[7], r[8]]
        for r in store.read(
            "SELECT r.id, r.uid, r.name, e.name, r.status, r.start_time, r.end_time,"
            f" r.username, r.host {_FROM} WHERE r.id IN ({marks})",
            ids,
        )
    }
    vals: dict[tuple[int, str], Any] = {}
    for kind in ("params", "tags"):
        keys = sorted({k for kd, k, _ in cols if kd == kind})
        if keys:
            for rid, k, v in store.read(
                f"SELECT run_id, key, value FROM {kind} WHERE run_id IN ({marks})"
                f" AND key IN ({','.join('?' * len(keys))})",
                [*ids, *keys],
            ):
                vals[(rid, f"{kind}.{k}")] = _decode(v)
    mkeys = sorted({k for kd, k, _ in cols if kd == "metrics"})
    if mkeys:
        for rid, k, last, mn, mx in store.read(
            "SELECT s.run_id, k.key, s.last_value, s.min_value, s.max_value"
            " FROM metric_summary s JOIN metric_keys k ON k.id = s.key_id"
            f" WHERE s.run_id IN ({marks}) AND k.key IN ({','.join('?' * len(mkeys))})",
            [*ids, *mkeys],
        ):
            for stat, v in zip(_STATS, (last, mn, mx)):
                vals[(rid, f"metrics.{k}.{stat}")] = v
    names = [column_name(*c) for c in cols]
    return [base[i] + [vals.get((i, n)) for n in names] for i in ids if i in base]


def _parse_columns(columns: list[str] | None) -> list[tuple[str, str, str]]:
    cols = [parse_column(c) for c in columns or []]
    if len(cols) > MAX_COLUMNS:
        raise InvalidInputError(f"at most {MAX_COLUMNS} columns are allowed, got {len(cols)}")
    return cols


def _filter_and_sort_keys(
    store: Store,
    args: dict[str, Any],
    experiment: str | None,
    status: str | None,
    search: str | None,
    conditions: list[str] | None,
    sort: str,
) -> tuple[str, dict[str, int]]:
    """The WHERE clause (its values bound into `args`) and the metric key ids a sort needs."""
    where = filter_sql(store, args, experiment, status, search, conditions)
    sort_keys = [parse_column(sort)[1]] if sort not in _BASE_SORT else []
    return where, _key_ids(store, sort_keys)


def table(
    store: Store,
    *,
    columns: list[str] | None = None,
    experiment: str | None = None,
    status: str | None = None,
    search: str | None = None,
    conditions: list[str] | None = None,
    sort: str = "start_time",
    order: str = "desc",
    limit: int = 200,
    offset: int = 0,
) -> dict[str, Any]:
    """One page of runs with the chosen columns:
    {"total", "offset", "limit", "fields": [...], "rows": [[...], ...]}; a row holds the
    BASE_FIELDS then one value per column (null where a run lacks it)."""
    check_page(order, limit, offset, MAX_TABLE_LIMIT)
    cols = _parse_columns(columns)
    maybe_reconcile(store)
    args: dict[str, Any] = {"now": time.time(), "limit": limit, "offset": offset}
    where, kids = _filter_and_sort_keys(store, args, experiment, status, search, conditions, sort)
    total = store.read(f"SELECT count(*) {_FROM} {where}", args)[0][0]
    ids = _page_ids(store, where, args, sort, order, kids)
    return clean(
        {
            "total": total,
            "offset": offset,
            "limit": limit,
            "fields": BASE_FIELDS + [column_name(*c) for c in cols],
            "rows": _rows(store, ids, cols),
        }
    )


def export_rows(
    store: Store,
    *,
    columns: list[str] | None = None,
    experiment: str | None = None,
    status: str | None = None,
    search: str | None = None,
    conditions: list[str] | None = None,
    sort: str = "start_time",
    order: str = "desc",
    batch: int = 2000,
) -> Iterator[list[Any]]:
    """Every matching run (header first) in the order of the table, for CSV export."""
    cols = _parse_columns(columns)
    args: dict[str, Any] = {"now": time.time(), "limit": batch, "offset": 0}
    where, kids = _filter_and_sort_keys(store, args, experiment, status, search, conditions, sort)
    yield BASE_FIELDS + [column_name(*c) for c in cols]
    while True:
        ids = _page_ids(store, where, args, sort, order, kids)
        yield from clean(_rows(store, ids, cols))
        if len(ids) < batch:
            return
        args["offset"] += batch


def groups(
    store: Store,
    by: str,
    metrics: list[str],
    *,
    experiment: str | None = None,
    status: str | None = None,
    search: str | None = None,
    conditions: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Runs grouped by a param or tag value: [{"value", "n", "metrics": {column: {"mean",
    "std", "n"}}}] (sample std; null below two values), largest groups first."""
    kind, key, _ = parse_column(by)
    if kind == "metrics":
        raise InvalidInputError(f"group by a param or tag, not a metric: {by!r}")
    mcols = [parse_column(m) for m in metrics]
    if any(k != "metrics" for k, _, _ in mcols):
        raise InvalidInputError(f"group statistics are computed for metrics, got {metrics!r}")
    args: dict[str, Any] = {"gkey": key}
    where = filter_sql(store, args, experiment, status, search, conditions)
    kids = _key_ids(store, [k for _, k, _ in mcols])
    out: dict[Any, dict[str, Any]] = {}
    base = f"{_FROM} LEFT JOIN {kind} g ON g.run_id = r.id AND g.key = :gkey"
    for value, n in store.read(
        f"SELECT g.value, count(*) {base} {where} GROUP BY g.value"
        f" ORDER BY count(*) DESC LIMIT {MAX_GROUPS}",
        args,
    ):
        out[value] = {"value": _decode(value), "n": n, "metrics": {}}
    for _, mkey, stat in mcols:
        a = {**args, "mkid": kids.get(mkey, -1)}
        col = f"ms.{stat}_value"
        for value, cnt, mean, sq in store.read(
            f"SELECT g.value, count({col}), avg({col}), avg({col} * {col}) {base}"
            f" JOIN metric_summary ms ON ms.run_id = r.id AND ms.key_id = :mkid {where}"
            " GROUP BY g.value",
            a,
        ):
            if value not in out:
                continue
            std = None
            if cnt > 1 and mean is not None and sq is not None:
                std = math.sqrt(max(0.0, sq - mean * mean) * cnt / (cnt - 1))
            out[value]["metrics"][column_name("metrics", mkey, stat)] = {
                "mean": mean,
                "std": std,
                "n": cnt,
            }
    return clean(list(out.values()))


def dumps_cell(v: Any) -> str:
    """A CSV cell: numbers and strings as they are, other JSON values as JSON."""
    if v is None:
        return ""
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return str(v)
    return json.dumps(v)
