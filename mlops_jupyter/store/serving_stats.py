"""Windowed aggregates of the serving prediction log for the sidebar's Serving view: served
models with their last activity, traffic, latency percentiles and error rates per variant
(overall and per time window), and the feedback an A/B verdict counts.

Counts (per variant overall, per window) are SQL aggregates over the log's (model, variant,
version, ts, status, latency_ms) index, the same SQL on SQLite and PostgreSQL; only the
latencies of the windows shown come into Python, where numpy computes exact percentiles
(linear interpolation, as `numpy.percentile`). So the cost grows with the shown range, not
with the whole log. Latency percentiles are over answered requests (status 200): a failed
request's time says little about the model. The error rate counts server errors (5xx);
client errors (4xx: bad input, back-pressure) are counted apart."""

from __future__ import annotations

import json
import math
from itertools import chain
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .db import Store
from .serving import time_range

SHADOW_PREFIX = "shadow:"
PERCENTILES = (50, 95, 99)
MAX_WINDOWS = 500


def served_models(store: Store) -> list[dict[str, Any]]:
    """Every model with logged predictions: requests, first and last activity, most recently
    active first. Read from the (model, ts) index alone: the sidebar asks every few seconds."""
    rows = store.read(
        "SELECT model, COUNT(*), MIN(ts), MAX(ts) FROM serving_predictions GROUP BY model",
        (),
        "read served models",
    )
    out = [
        {"model": m, "requests": int(n), "first_ts": first, "last_ts": last}
        for m, n, first, last in rows
    ]
    return sorted(out, key=lambda m: -m["last_ts"])


def has_predictions(store: Store, model: str) -> bool:
    """Whether any prediction of `model` was logged."""
    rows = store.read(
        "SELECT 1 FROM serving_predictions WHERE model=? LIMIT 1", (model,), "read predictions"
    )
    return bool(rows)


def _variant_name(variant: str | None, version: int | None) -> str:
    # the same naming as store.serving.outcomes: a row without a variant is "v<version>"
    return variant or f"v{version}"


def _check_window(window: float) -> float:
    if not (isinstance(window, (int, float)) and math.isfinite(window) and window > 0):
        raise InvalidInputError(f"window must be a positive number of seconds, got {window!r}")
    return float(window)


def auto_window(span: float, windows: int) -> float:
    """A round window length (1 s .. 1 d) so that `span` seconds fit in about `windows`."""
    for w in (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400):
        if span / w <= windows:
            return float(w)
    return float(math.ceil(span / windows / 86400) * 86400)


def _percentiles(lat: np.ndarray) -> dict[str, float | None]:
    if not len(lat):
        return {f"p{p}_ms": None for p in PERCENTILES}
    vals = np.percentile(lat, PERCENTILES)
    return {f"p{p}_ms": float(v) for p, v in zip(PERCENTILES, vals)}


def _pair_where(variant: str | None, version: int | None, args: list[Any]) -> str:
    """The SQL condition selecting one (variant, version) pair of the log (NULLs too)."""
    sql = " AND variant IS NULL" if variant is None else " AND variant = ?"
    if variant is not None:
        args.append(variant)
    if version is None:
        return sql + " AND version IS NULL"
    args.append(version)
    return sql + " AND version = ?"


def _pairs(c: Any, model: str, until: float | None) -> list[tuple]:
    """The (variant, version) pairs of `model`'s log (rows before `until`), by probing the
    (model, variant, version, ts) index: a few lookups per pair, not a scan of the log."""

    def first(where: str, args: list[Any], order: str) -> tuple | None:
        sql = f"SELECT variant, version FROM serving_predictions WHERE model=?{where}"
        args = [model, *args]
        sql += time_range("ts", None, until, args)
        rows = c.execute(f"{sql} ORDER BY {order} LIMIT 1", args).fetchall()
        return rows[0] if rows else None

    def versions(variant: str | None) -> list[tuple]:
        out, vargs = [], [] if variant is None else [variant]
        vwhere = " AND variant IS NULL" if variant is None else " AND variant = ?"
        if first(vwhere + " AND version IS NULL", vargs, "version"):
            out.append((variant, None))
        row = first(vwhere + " AND version IS NOT NULL", vargs, "version")
        while row is not None:
            out.append(row)
            row = first(vwhere + " AND version > ?", [*vargs, row[1]], "version")
        return out

    pairs = versions(None)
    row = first(" AND variant IS NOT NULL", [], "variant")
    while row is not None:
        pairs += versions(row[0])
        row = first(" AND variant > ?", [row[0]], "variant")
    return pairs


_COUNTS = (
    "SELECT COUNT(*), SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN status >= 400 AND status < 500 THEN 1 ELSE 0 END)"
    " FROM serving_predictions WHERE model=?"
)


def _read_log(
    store: Store, model: str, since: float | None, until: float | None, window: float | None,
    windows: int,
) -> dict[str, Any] | None:  # fmt: skip
    """Everything model_stats needs from the log, against one consistent state: per
    (variant, version) pair its first and last ts, requests, server and client errors in
    [since, until) (outside the windows and per window) and the latencies of its answered
    requests (status 200) per window. A handful of statements per pair, whatever the
    number of windows: counts are SQL aggregates (grouped by window) over a range of the
    (model, variant, version, ts, ...) index; latencies are read for the shown windows only."""
    with store.snapshot("read the prediction log") as c:
        pairs = _pairs(c, model, until)
        ends: dict[tuple, tuple[float, float]] = {}
        for pair in pairs:
            ts = []
            for order in ("ts", "ts DESC"):
                args: list[Any] = [model]
                sql = "SELECT ts FROM serving_predictions WHERE model=?" + _pair_where(*pair, args)
                sql += time_range("ts", since, until, args)
                rows = c.execute(f"{sql} ORDER BY {order} LIMIT 1", args).fetchall()
                ts.append(rows[0][0] if rows else None)
            if ts[0] is not None:  # the pair has rows in [since, until)
                ends[pair] = (float(ts[0]), float(ts[1]))
        if not ends:
            return None
        first = min(f for f, _ in ends.values())
        last = max(la for _, la in ends.values())
        if window is None:  # a round length; no more windows than the data spans
            w = auto_window(last - first, windows)
            windows = min(windows, math.floor(last / w) - math.floor(first / w) + 1)
        else:
            w = window
        end = (math.floor(last / w) + 1) * w
        start = end - windows * w
        bounds = [start + k * w for k in range(windows)] + [end]
        lo = start if since is None else max(start, float(since))
        hi = end if until is None else min(end, float(until))
        # the window of a row, as numpy would compute it: floor((ts - start) / w); rows
        # here have ts >= start, so SQLite's truncation is the floor (its floor() is an
        # optional build feature), while PostgreSQL's CAST would round
        bucket = (
            "FLOOR((ts - ?) / ?)"
            if store.backend == "postgresql"
            else "CAST((ts - ?) / ? AS INTEGER)"
        )
        per_pair: dict[tuple, dict[str, Any]] = {}
        for pair in ends:
            # before the windows (only when [since, until) reaches back that far)
            args = [model]
            sql = _COUNTS + _pair_where(*pair, args) + time_range("ts", since, lo, args)
            n, e, ce = c.execute(sql, args).fetchall()[0] if lo > first else (0, 0, 0)
            req, err, ok = (np.zeros(windows, np.int64) for _ in range(3))
            args = [start, w, model]
            where = _pair_where(*pair, args) + time_range("ts", lo, hi, args)
            sql = (
                f"SELECT {bucket}, COUNT(*), SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END),"
                " SUM(CASE WHEN status >= 400 AND status < 500 THEN 1 ELSE 0 END),"
                " SUM(CASE WHEN status = 200 AND latency_ms IS NOT NULL THEN 1 ELSE 0 END)"
                f" FROM serving_predictions WHERE model=?{where} GROUP BY 1"
            )
            for k, nk, ek, cek, okk in c.execute(sql, args).fetchall():
                k = min(int(k), windows - 1)  # ts < end; guard the last bit of rounding
                req[k] += int(nk)
                err[k] += int(ek or 0)
                ce = int(ce or 0) + int(cek or 0)
                ok[k] += int(okk or 0)
            # the answered latencies in time order: each window's are the next ok[k] values
            args = [model]
            sql = "SELECT latency_ms FROM serving_predictions WHERE model=?" + _pair_where(
                *pair, args
            )
            sql += time_range("ts", lo, hi, args)
            sql += " AND status = 200 AND latency_ms IS NOT NULL ORDER BY ts"
            rows = c.execute(sql, args).fetchall()
            lat = np.fromiter(chain.from_iterable(rows), np.float64, len(rows))
            if len(lat) != ok.sum():  # one snapshot: the two reads see the same rows
                raise RuntimeError("the prediction log changed within one snapshot")
            per_pair[pair] = {
                "first": ends[pair][0],
                "last": ends[pair][1],
                "requests": int(n) + int(req.sum()),
                "errors": int(e or 0) + int(err.sum()),
                "client_errors": int(ce or 0),
                "req_w": req.tolist(),
                "err_w": err.tolist(),
                "lat_w": np.split(lat, np.cumsum(ok)[:-1]),
            }
    return {"pairs": per_pair, "window": w, "windows": windows, "bounds": bounds,
            "range": (lo, hi), "first": first, "last": last}  # fmt: skip


def model_stats(
    store: Store,
    model: str,
    *,
    window: float | None = None,
    windows: int = 48,
    since: float | None = None,
    until: float | None = None,
) -> dict[str, Any] | None:
    """Traffic and error rates of `model` per variant over [since, until) (default:
    everything logged), and the same per window of `window` seconds for the last `windows`
    windows (aligned to multiples of `window` since the epoch, ending with the newest
    request; `window` None picks a round length and no more windows than the data spans).
    Latency percentiles, per window and per variant overall, are over the answered requests
    of the windows shown only: "percentile_range" gives that range ([since, until) cut to
    the windows). None when the model has no logged predictions in the range. Shadow
    variants ("shadow:...") are reported but not counted in the traffic shares (they mirror
    requests served by others).

    Counts are SQL aggregates over the (model, variant, version, ts, ...) index; only the
    latencies of the shown windows come into Python (exact percentiles, as numpy's)."""
    if not isinstance(windows, int) or not 1 <= windows <= MAX_WINDOWS:
        raise InvalidInputError(f"windows must be an integer in 1..{MAX_WINDOWS}, got {windows!r}")
    if window is not None:
        window = _check_window(window)
    log = _read_log(store, model, since, until, window, windows)
    if log is None:
        return None
    windows, per_pair = log["windows"], log["pairs"]
    # a pair's name as store.serving.outcomes gives it: "v<version>" without a variant;
    # pairs that share a name (variant "v1" and no variant at version 1) are one variant
    by_name: dict[str, list[tuple]] = {}
    for pair in per_pair:
        by_name.setdefault(_variant_name(*pair), []).append(pair)
    names = sorted(by_name)
    served = sum(
        per_pair[p]["requests"]
        for n in names
        if not n.startswith(SHADOW_PREFIX)
        for p in by_name[n]
    )
    variants, series = [], []
    for name in names:
        parts = [per_pair[p] for p in by_name[name]]
        shadow = name.startswith(SHADOW_PREFIX)
        n = sum(d["requests"] for d in parts)
        e = sum(d["errors"] for d in parts)
        lat_w = [_finite(np.concatenate([d["lat_w"][k] for d in parts])) for k in range(windows)]
        variants.append(
            {
                "variant": name,
                "versions": sorted({int(p[1]) for p in by_name[name] if p[1] is not None}),
                "shadow": shadow,
                "requests": n,
                "share": None if shadow or not served else n / served,
                "errors": e,
                "client_errors": sum(d["client_errors"] for d in parts),
                "error_rate": e / n,
                **_percentiles(np.concatenate(lat_w)),
                "last_ts": max(d["last"] for d in parts),
            }
        )
        req = [sum(d["req_w"][k] for d in parts) for k in range(windows)]
        errs = [sum(d["err_w"][k] for d in parts) for k in range(windows)]
        pct: dict[str, list[float | None]] = {f"p{p}_ms": [] for p in PERCENTILES}
        for lat in lat_w:
            for key, v in _percentiles(lat).items():
                pct[key].append(v)
        series.append(
            {
                "variant": name,
                "requests": req,
                "errors": errs,
                "error_rate": [float(x / r) if r else None for x, r in zip(errs, req)],
                **pct,
            }
        )
    lo, hi = log["range"]
    return {
        "model": model,
        "requests": sum(d["requests"] for d in per_pair.values()),
        "first_ts": log["first"],
        "last_ts": log["last"],
        "percentile_range": {"since": lo, "until": hi},
        "variants": variants,
        "windows": {"window_s": log["window"], "start": log["bounds"][:-1], "series": series},
    }


def _finite(lat: np.ndarray) -> np.ndarray:
    # a NaN latency (PostgreSQL keeps NaN; SQLite stores it as NULL) is no time at all
    return lat[~np.isnan(lat)]


def feedback_values(
    store: Store, model: str, since: float | None = None, until: float | None = None
) -> dict[str, list[Any]]:
    """Per variant, the newest feedback value of each answered request of `model` (status
    200, shadows left out) in [since, until): the observations an A/B report counts, read
    from the feedback side (cheap when few requests got feedback). Numbers and booleans come
    as floats; other values as their decoded JSON."""
    sql = (
        # driven from the feedback side: one index probe of the log per request with feedback
        "SELECT COALESCE(p.variant, 'v' || p.version), f.value_num, f.value FROM"
        " (SELECT request_id, MAX(id) AS fid FROM serving_feedback GROUP BY request_id) last"
        " JOIN serving_feedback f ON f.id = last.fid"
        " JOIN serving_predictions p ON p.request_id = last.request_id"
        " WHERE p.model=? AND p.status=200"
        " AND (p.variant IS NULL OR p.variant NOT LIKE 'shadow:%')"
    )
    args: list[Any] = [model]
    sql += time_range("p.ts", since, until, args)
    # in time order, as store.serving.outcomes: a mean over the same floats in the same order
    sql += " ORDER BY p.ts, p.id"
    out: dict[str, list[Any]] = {}
    for variant, num, value in store.read(sql, args, "read feedback"):
        # value_num is NULL for non-numbers (and for NaN on SQLite): decode those
        out.setdefault(variant, []).append(float(num) if num is not None else json.loads(value))
    return out


# the newest feedback of each request, joined to its answered, non-shadow prediction rows:
# the observations an A/B report counts (as feedback_values and store.serving.outcomes)
_FEEDBACK_JOIN = (
    " FROM (SELECT request_id, MAX(id) AS fid FROM serving_feedback GROUP BY request_id) last"
    " JOIN serving_feedback f ON f.id = last.fid"
    " JOIN serving_predictions p ON p.request_id = last.request_id"
    " WHERE p.model=? AND p.status=200"
    " AND (p.variant IS NULL OR p.variant NOT LIKE 'shadow:%')"
)


def feedback_counts(
    store: Store, model: str, since: float | None = None, until: float | None = None
) -> dict[str, dict[str, int]]:
    """Per variant, the feedback feedback_values would return, counted in SQL: {"n": values,
    "finite": finite numbers (booleans count as numbers), "binary": values that are 0 or 1,
    "ones": values that are 1}. A binary A/B report needs nothing more (successes, n);
    variants in the order of their first request with feedback."""
    sql = (
        "SELECT COALESCE(p.variant, 'v' || p.version), COUNT(*),"
        # x - x = 0 holds for finite numbers only: NULL (not a number, and NaN on SQLite),
        # NaN and infinities (x - x is NaN, or NULL on SQLite) fail it
        " SUM(CASE WHEN f.value_num - f.value_num = 0 THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN f.value_num = 0 OR f.value_num = 1 THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN f.value_num = 1 THEN 1 ELSE 0 END)" + _FEEDBACK_JOIN
    )
    args: list[Any] = [model]
    sql += time_range("p.ts", since, until, args)
    sql += " GROUP BY COALESCE(p.variant, 'v' || p.version) ORDER BY MIN(p.ts)"
    return {
        v: {"n": int(n), "finite": int(fin or 0), "binary": int(b or 0), "ones": int(o or 0)}
        for v, n, fin, b, o in store.read(sql, args, "read feedback")
    }


def answered_versions(
    store: Store, model: str, since: float | None = None, until: float | None = None
) -> dict[str, set[int]]:
    """Per variant (shadows left out), the versions with answered requests (status 200) of
    `model` in [since, until), as store.serving.outcomes groups them; found by index probes,
    not a read of the log."""
    out: dict[str, set[int]] = {}
    with store.snapshot("read the prediction log") as c:
        for variant, version in _pairs(c, model, until):
            name = _variant_name(variant, version)
            if name.startswith(SHADOW_PREFIX):
                continue
            args: list[Any] = [model]
            sql = "SELECT 1 FROM serving_predictions WHERE model=?" + _pair_where(
                variant, version, args
            )
            sql += time_range("ts", since, until, args) + " AND status = 200 LIMIT 1"
            if c.execute(sql, args).fetchall():
                vs = out.setdefault(name, set())
                if version is not None:
                    vs.add(int(version))
    return out
