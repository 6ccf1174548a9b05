"""Windowed aggregates of the serving prediction log for the sidebar's Serving view: served
models with their last activity, traffic, latency percentiles and error rates per variant
(overall and per time window), and the feedback an A/B verdict counts.

Counts come from one indexed read of the model's rows; percentiles are computed here with
numpy (linear interpolation, as `numpy.percentile`), which keeps the SQL the same on SQLite
and PostgreSQL. Latency percentiles are over answered requests (status 200): a failed
request's time says little about the model. The error rate counts server errors (5xx);
client errors (4xx: bad input, back-pressure) are counted apart."""

from __future__ import annotations

import json
import math
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


def model_stats(
    store: Store,
    model: str,
    *,
    window: float | None = None,
    windows: int = 48,
    since: float | None = None,
    until: float | None = None,
) -> dict[str, Any] | None:
    """Traffic, latency percentiles and error rates of `model` per variant over [since,
    until) (default: everything logged), and the same per window of `window` seconds for
    the last `windows` windows (aligned to multiples of `window` since the epoch, ending
    with the newest request; `window` None picks a round length and no more windows than
    the data spans). None when the model has
    no logged predictions in the range. Shadow variants ("shadow:...") are reported but not
    counted in the traffic shares (they mirror requests served by others)."""
    if not isinstance(windows, int) or not 1 <= windows <= MAX_WINDOWS:
        raise InvalidInputError(f"windows must be an integer in 1..{MAX_WINDOWS}, got {windows!r}")
    # the variant's name as store.serving.outcomes gives it ("v<version>" without one)
    sql = (
        "SELECT COALESCE(variant, 'v' || version), version, ts, latency_ms, status"
        " FROM serving_predictions WHERE model=?"
    )
    args: list[Any] = [model]
    sql += time_range("ts", since, until, args)
    rows = store.read(sql, args, "read the prediction log")
    if not rows:
        return None
    # columns as numpy arrays (None -> NaN); no per-row Python work past the codes
    name_col, version_col, ts_col, lat_col, status_col = zip(*rows)
    index: dict[str, int] = {}
    code = np.fromiter((index.setdefault(n, len(index)) for n in name_col), np.int64, len(rows))
    uniq = np.asarray(sorted(index), dtype=object)
    code = np.asarray([index[str(u)] for u in uniq], np.int64).argsort()[code]
    ts = np.asarray(ts_col, np.float64)
    lat = np.asarray(lat_col, np.float64)
    version = np.asarray(version_col, np.float64)
    status = np.asarray(status_col, np.int64)
    ok = (status == 200) & ~np.isnan(lat)
    err = status >= 500
    client = (status >= 400) & (status < 500)
    shadow = np.array([str(u).startswith(SHADOW_PREFIX) for u in uniq])
    served = int(np.sum(~shadow[code]))
    versions: dict[int, list[int]] = {}
    for i in range(len(uniq)):
        vs = np.unique(version[code == i])
        versions[i] = [int(v) for v in vs if not np.isnan(v)]
    variants = []
    for i, name in enumerate(uniq.tolist()):
        sel = code == i
        n = int(sel.sum())
        e = int(err[sel].sum())
        variants.append(
            {
                "variant": name,
                "versions": versions[i],
                "shadow": bool(shadow[i]),
                "requests": n,
                "share": None if shadow[i] or not served else n / served,
                "errors": e,
                "client_errors": int(client[sel].sum()),
                "error_rate": e / n,
                **_percentiles(lat[sel & ok]),
                "last_ts": float(ts[sel].max()),
            }
        )
    last = float(ts.max())
    first = float(ts.min())
    if window is None:  # a round length; no more windows than the data spans
        w = auto_window(last - first, windows)
        windows = min(windows, math.floor(last / w) - math.floor(first / w) + 1)
    else:
        w = _check_window(window)
    end = (math.floor(last / w) + 1) * w
    start = end - windows * w
    bucket = np.floor((ts - start) / w).astype(np.int64)
    inside = bucket >= 0
    series = []
    for i, name in enumerate(uniq.tolist()):
        sel = (code == i) & inside
        b = bucket[sel]
        req = np.bincount(b, minlength=windows)
        errs = np.bincount(b, weights=err[sel], minlength=windows)
        pct: dict[str, list[float | None]] = {f"p{p}_ms": [None] * windows for p in PERCENTILES}
        good = ok[sel]
        ob, olat = b[good], lat[sel][good]
        order = np.argsort(ob, kind="stable")
        ob, olat = ob[order], olat[order]
        cuts = np.flatnonzero(np.diff(ob)) + 1
        for chunk_b, chunk_lat in zip(np.split(ob, cuts), np.split(olat, cuts)):
            if len(chunk_b):
                for k, v in _percentiles(chunk_lat).items():
                    pct[k][int(chunk_b[0])] = v
        series.append(
            {
                "variant": name,
                "requests": req.astype(int).tolist(),
                "errors": errs.astype(int).tolist(),
                "error_rate": [float(e / r) if r else None for e, r in zip(errs, req)],
                **pct,
            }
        )
    return {
        "model": model,
        "requests": len(rows),
        "first_ts": first,
        "last_ts": last,
        "variants": variants,
        "windows": {
            "window_s": w,
            "start": [start + k * w for k in range(windows)],
            "series": series,
        },
    }


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
    out: dict[str, list[Any]] = {}
    for variant, num, value in store.read(sql, args, "read feedback"):
        # value_num is NULL for non-numbers (and for NaN on SQLite): decode those
        out.setdefault(variant, []).append(float(num) if num is not None else json.loads(value))
    return out
