"""Store operations of model serving: the prediction log (written in batches by the
server's background logger), feedback (ground truth by request id) and the per-variant
outcomes an A/B report reads."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from .db import Store

# Column order of a prediction row, as the server's logger builds them.
PREDICTION_COLS = (
    "request_id",
    "model",
    "version",
    "variant",
    "ts",
    "latency_ms",
    "status",
    "error",
    "n_rows",
    "batch_size",
    "outputs",
    "worker",
)


def log_predictions(store: Store, rows: Sequence[Sequence[Any]]) -> int:
    """Insert prediction rows (tuples in PREDICTION_COLS order) in one transaction."""
    if not rows:
        return 0
    cols = ", ".join(PREDICTION_COLS)
    marks = ", ".join("?" for _ in PREDICTION_COLS)
    with store.write("log predictions") as c:
        c.executemany(f"INSERT INTO serving_predictions({cols}) VALUES({marks})", list(rows))
    return len(rows)


def add_feedback(store: Store, request_id: str, value: Any, ts: float | None = None) -> None:
    """Record ground truth `value` (any JSON value; numbers and booleans also kept as a
    number) for a request answered earlier. The newest feedback of a request counts."""
    num = float(value) if isinstance(value, (int, float)) else None
    with store.write("store feedback") as c:
        c.execute(
            "INSERT INTO serving_feedback(request_id, value, value_num, ts) VALUES(?,?,?,?)",
            (request_id, json.dumps(value), num, time.time() if ts is None else ts),
        )


def predictions(store: Store, model: str | None = None, limit: int | None = None) -> list[dict]:
    """Logged predictions, newest first (all models, or one)."""
    cols = ", ".join(PREDICTION_COLS)
    sql = f"SELECT {cols} FROM serving_predictions"
    args: list[Any] = []
    if model is not None:
        sql += " WHERE model=?"
        args.append(model)
    sql += " ORDER BY ts DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    return [dict(zip(PREDICTION_COLS, r)) for r in store.read(sql, args, "read predictions")]


def outcomes(
    store: Store, model: str, since: float | None = None, until: float | None = None
) -> dict[str, list[dict]]:
    """Per variant, the answered requests of `model` (status 200) in [since, until) with
    their newest feedback: {variant: [{request_id, version, ts, latency_ms, value,
    value_num}]}; value is None where no feedback came. This is what an A/B report
    counts (successes / n, or the mean of value_num). Shadow rows are left out."""
    sql = (
        "SELECT p.variant, p.request_id, p.version, p.ts, p.latency_ms, f.value, f.value_num "
        "FROM serving_predictions p LEFT JOIN serving_feedback f ON f.id = ("
        " SELECT MAX(f2.id) FROM serving_feedback f2 WHERE f2.request_id = p.request_id) "
        "WHERE p.model=? AND p.status=200"
        # a shadow's answers were never shown: feedback on a request says nothing about them
        " AND (p.variant IS NULL OR p.variant NOT LIKE 'shadow:%')"
    )
    args: list[Any] = [model]
    sql += time_range("p.ts", since, until, args)
    sql += " ORDER BY p.ts, p.id"
    out: dict[str, list[dict]] = {}
    for variant, rid, version, ts, lat, value, num in store.read(sql, args, "read outcomes"):
        out.setdefault(variant or f"v{version}", []).append(
            {
                "request_id": rid,
                "version": version,
                "ts": ts,
                "latency_ms": lat,
                "value": json.loads(value) if value is not None else None,
                "value_num": num,
            }
        )
    return out


def time_range(col: str, since: float | None, until: float | None, args: list[Any]) -> str:
    """The SQL condition `col` in [since, until) (either end open when None), its
    arguments appended to `args`."""
    sql = ""
    if since is not None:
        sql += f" AND {col} >= ?"
        args.append(float(since))
    if until is not None:
        sql += f" AND {col} < ?"
        args.append(float(until))
    return sql


def record_rollout(store: Store, model: str, reason: str, user: str | None = None) -> None:
    """Put a server's traffic layout (split, shadow) into the registry's audit log, as the
    action "rollout" of `model` with `reason` (e.g. "split v3=90,v4=10 shadow v4")."""
    from .registry import ModelNotFoundError, _audit, _model_id

    with store.write("record rollout") as c:
        mid = _model_id(c, model)
        if mid is None:
            raise ModelNotFoundError(f"no registered model named {model!r}")
        _audit(c, mid, None, "rollout", reason=reason, user=user)
