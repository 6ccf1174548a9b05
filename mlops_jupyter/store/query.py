"""Read side: runs table, long metric frames and run details, as polars DataFrames."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl

from . import metrics as mstore
from .db import Store

# MLflow's soft delete (its runs/delete route) is kept as this tag with the value "deleted";
# runs/restore removes it. Listings leave such runs out unless asked, as MLflow's search does.
DELETED_TAG = "mlflow.lifecycle_stage"
DELETED_SQL = (  # literal constants (no bound values): fits qmark and named-parameter queries
    f"EXISTS (SELECT 1 FROM tags dt WHERE dt.run_id = r.id AND dt.key = '{DELETED_TAG}'"
    f" AND dt.value = '{json.dumps('deleted')}')"
)


def deleted_cond(deleted: bool | None) -> str | None:
    """SQL condition over `runs r` for the `deleted` option: False (default) leaves out runs
    deleted through the MLflow API, True keeps only those, None keeps every run."""
    if deleted is None:
        return None
    if not isinstance(deleted, bool):
        from ..errors import InvalidInputError

        raise InvalidInputError(f"deleted must be True, False or None, got {deleted!r}")
    return DELETED_SQL if deleted else f"NOT {DELETED_SQL}"


_RUN_COLS = "r.id, r.uid, r.name, e.name, r.status, r.start_time, r.end_time, p.uid, r.attempt"


def _decode(v: str) -> Any:
    try:
        return json.loads(v)
    except (ValueError, TypeError):
        return v


_I64 = (-(1 << 63), (1 << 63) - 1)


def _safe_text(v: str) -> str:
    """Text polars can hold: a lone surrogate (stored by older versions) is escaped."""
    try:
        v.encode("utf-8")
        return v
    except UnicodeEncodeError:
        return v.encode("utf-8", "backslashreplace").decode("utf-8")


def _as_text(v: Any) -> str:
    if isinstance(v, str):
        return _safe_text(v)
    try:
        return _safe_text(json.dumps(v))
    except (TypeError, ValueError):  # an int beyond str()'s digit limit
        return _safe_text(repr(type(v)))


def _typed(values: list[Any]) -> pl.Series:
    """A column from mixed JSON values: Int64/Float64/Boolean/String when uniform, else
    strings. Never raises: ints wider than 64 bits make a Float64 column (String when
    even a float cannot hold them); get_run() returns every value exactly."""
    present = [v for v in values if v is not None]
    kinds = {type(v) for v in present}
    try:
        if kinds <= {int} and all(_I64[0] <= v <= _I64[1] for v in present):
            return pl.Series(values, dtype=pl.Int64)
        if kinds <= {int, float}:
            return pl.Series([None if v is None else float(v) for v in values], dtype=pl.Float64)
        if kinds <= {bool}:
            return pl.Series(values, dtype=pl.Boolean)
    except (OverflowError, ValueError, TypeError):
        pass
    return pl.Series([None if v is None else _as_text(v) for v in values], dtype=pl.String)


def _epoch(col: list[float | None]) -> pl.Series:
    arr = pl.Series([None if t is None else int(t * 1e6) for t in col], dtype=pl.Int64)
    return arr.cast(pl.Datetime("us", "UTC"))


def runs_frame(
    store: Store,
    experiment: str | None = None,
    status: str | None = None,
    include_system: bool = False,
    where_ids: list[int] | None = None,
    deleted: bool | None = False,
) -> pl.DataFrame:
    """One row per run (newest first): id, name, experiment, status, start/end, duration,
    `params.<k>` columns and `metrics.<k>.last/.min/.max` columns. Runs deleted through the
    MLflow API are left out (`deleted=True`: only those, None: all; see deleted_cond)."""
    import time

    cond, args = [], []
    dcond = deleted_cond(deleted)
    if dcond:
        cond.append(dcond)
    if experiment is not None:
        cond.append("e.name = ?")
        args.append(experiment)
    if status is not None:
        cond.append("r.status = ?")
        args.append(status)
    if where_ids is not None:
        cond.append(f"r.id IN ({','.join('?' * len(where_ids))})")
        args.extend(where_ids)
    where = ("WHERE " + " AND ".join(cond)) if cond else ""
    base = (
        f"FROM runs r JOIN experiments e ON e.id = r.experiment_id "
        f"LEFT JOIN runs p ON p.id = r.parent_id {where}"
    )
    rows = store.read(f"SELECT {_RUN_COLS} {base} ORDER BY r.start_time DESC, r.id DESC", args)
    index = {r[0]: i for i, r in enumerate(rows)}
    n = len(rows)
    now = time.time()
    cols: dict[str, Any] = {
        "id": pl.Series([r[1] for r in rows], dtype=pl.String),
        "name": pl.Series([r[2] for r in rows], dtype=pl.String),
        "experiment": pl.Series([r[3] for r in rows], dtype=pl.String),
        "status": pl.Series([r[4] for r in rows], dtype=pl.String),
        "start_time": _epoch([r[5] for r in rows]),
        "end_time": _epoch([r[6] for r in rows]),
        "duration_s": pl.Series(
            [(r[6] if r[6] is not None else now) - r[5] for r in rows], dtype=pl.Float64
        ),
        "parent_id": pl.Series([r[7] for r in rows], dtype=pl.String),
        "attempt": pl.Series([r[8] for r in rows], dtype=pl.Int64),
    }
    if n:
        sub = f"SELECT r.id {base}"
        params: dict[str, list] = {}
        for rid, key, val in store.read(
            f"SELECT run_id, key, value FROM params WHERE run_id IN ({sub}) ORDER BY key", args
        ):
            col = params.get(key)
            if col is None:  # not setdefault: its default list would be built for every row
                col = params[key] = [None] * n
            col[index[rid]] = _decode(val)
        for key, vals in params.items():
            cols[f"params.{key}"] = _typed(vals)
        sys_filter = "" if include_system else "AND k.key NOT LIKE 'sys/%'"
        summ = store.read(
            "SELECT s.run_id, k.key, s.n, s.last_value, s.min_value, s.max_value "
            "FROM metric_summary s JOIN metric_keys k ON k.id = s.key_id "
            f"WHERE s.run_id IN ({sub}) {sys_filter} ORDER BY k.key",
            args,
        )
        mcols: dict[str, np.ndarray] = {}
        for rid, key, _cnt, last, vmin, vmax in summ:
            i = index[rid]
            for suffix, v in (("last", last), ("min", vmin), ("max", vmax)):
                name = f"metrics.{key}.{suffix}"
                arr = mcols.get(name)
                if arr is None:
                    arr = mcols[name] = np.full(n, np.nan)
                # NULL last with points present means the last value was NaN
                arr[i] = np.nan if v is None else v
        for name, arr in mcols.items():
            cols[name] = pl.Series(arr, dtype=pl.Float64)
    return pl.DataFrame(cols)


def metrics_frame(store: Store, run_ids: list[int], keys: list[str] | None) -> pl.DataFrame:
    """Long frame (run_id, key, step, ts, value) of every point of the given runs/keys,
    each series in step order."""
    schema = {
        "run_id": pl.String,
        "key": pl.String,
        "step": pl.Int64,
        "ts": pl.Datetime("ms", "UTC"),
        "value": pl.Float64,
    }
    if not run_ids:
        return pl.DataFrame(schema=schema)
    cond = f"c.run_id IN ({','.join('?' * len(run_ids))})"
    args: list[Any] = list(run_ids)
    if keys is not None:
        if not keys:
            return pl.DataFrame(schema=schema)
        cond += f" AND k.key IN ({','.join('?' * len(keys))})"
        args.extend(keys)
    rows = store.read(
        "SELECT r.uid, k.key, c.data FROM metric_chunks c "
        "JOIN metric_keys k ON k.id = c.key_id JOIN runs r ON r.id = c.run_id "
        f"WHERE {cond} ORDER BY c.run_id, k.key, c.seq",
        args,
    )
    frames = []
    i = 0
    while i < len(rows):
        uid, key = rows[i][0], rows[i][1]
        j = i
        while j < len(rows) and rows[j][0] == uid and rows[j][1] == key:
            j += 1
        from . import codec

        steps, ts, vals = codec.decode_many([r[2] for r in rows[i:j]])
        if len(steps) > 1 and not np.all(steps[1:] >= steps[:-1]):
            order = np.argsort(steps, kind="stable")
            steps, ts, vals = steps[order], ts[order], vals[order]
        frames.append(
            pl.DataFrame(
                {"step": steps, "ts": ts, "value": vals}, schema_overrides={"ts": pl.Int64}
            ).with_columns(run_id=pl.lit(uid), key=pl.lit(key))
        )
        i = j
    if not frames:
        return pl.DataFrame(schema=schema)
    out = pl.concat(frames)
    return out.select(
        pl.col("run_id"),
        pl.col("key"),
        pl.col("step"),
        pl.col("ts").cast(pl.Datetime("ms", "UTC")),
        pl.col("value"),
    )


def series(store: Store, run_id: int, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One run/key history in step order as numpy arrays (steps, ts_ms, values)."""
    row = store.read("SELECT id FROM metric_keys WHERE key=?", (key,))
    if not row:
        e = np.empty(0, np.int64)
        return e, e.copy(), np.empty(0)
    steps, ts, vals = mstore.read_series(store, run_id, row[0][0])
    if len(steps) > 1 and not np.all(steps[1:] >= steps[:-1]):
        order = np.argsort(steps, kind="stable")
        steps, ts, vals = steps[order], ts[order], vals[order]
    return steps, ts, vals


def run_detail(store: Store, rid: int) -> dict[str, Any]:
    """Everything about one run as plain Python data (for the CLI, reprs and REST)."""
    (r,) = store.read(
        f"SELECT {_RUN_COLS}, r.host, r.pid FROM runs r "
        "JOIN experiments e ON e.id = r.experiment_id "
        "LEFT JOIN runs p ON p.id = r.parent_id WHERE r.id = ?",
        (rid,),
    )
    import time

    end = r[6]
    return {
        "id": r[1],
        "name": r[2],
        "experiment": r[3],
        "status": r[4],
        "start_time": r[5],
        "end_time": end,
        "duration_s": (end if end is not None else time.time()) - r[5],
        "parent_id": r[7],
        "attempt": r[8],
        "host": r[9],
        "pid": r[10],
        "params": {
            k: _decode(v)
            for k, v in store.read(
                "SELECT key, value FROM params WHERE run_id=? ORDER BY key", (rid,)
            )
        },
        "tags": {
            k: _decode(v)
            for k, v in store.read(
                "SELECT key, value FROM tags WHERE run_id=? ORDER BY key", (rid,)
            )
        },
        "metrics": [
            {
                "key": k,
                "count": n,
                "last_step": ls,
                "last": float("nan") if lv is None else lv,
                "min": mn,
                "max": mx,
            }
            for k, n, ls, lv, mn, mx in store.read(
                "SELECT k.key, s.n, s.last_step, s.last_value, s.min_value, s.max_value "
                "FROM metric_summary s JOIN metric_keys k ON k.id = s.key_id "
                "WHERE s.run_id=? ORDER BY k.key",
                (rid,),
            )
        ],
        "artifacts": [
            {"name": nm, "digest": d, "size": sz, "created": cr}
            for nm, d, sz, cr in store.read(
                "SELECT name, digest, size, created FROM artifacts WHERE run_id=? ORDER BY name",
                (rid,),
            )
        ],
        "events": [
            {
                "kind": k,
                "level": lv,
                "message": m,
                "start_time": s,
                "end_time": e,
                "data": _decode(d) if d else None,
            }
            for k, lv, m, s, e, d in store.read(
                "SELECT kind, level, message, start_time, end_time, data FROM run_events "
                "WHERE run_id=? ORDER BY start_time, id",
                (rid,),
            )
        ],
    }
