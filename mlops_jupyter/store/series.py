"""Metric series for charts: one run/key history decimated server-side (min/max per bucket)
to at most N points, with decoded chunks and answers cached between requests."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from . import codec
from .db import Store

MAX_POINTS = 10_000


# ---------------------------------------------------------------------- metric series


def decimate(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, bool]:
    """Indices of at most `max_points` (>= 4) points, in order: the first and last point,
    each bucket's min and max (so extrema and single spikes survive) and, when the series
    has NaN/inf, a few of those points so a chart shows where it broke (up to a quarter of
    the budget). Returns (indices, decimated?). The one algorithm used by the server's
    series and the notebook widgets."""
    n = len(values)
    if n <= max_points:
        return np.arange(n), False
    max_points = max(4, int(max_points))
    finite = np.isfinite(values)
    bad = np.flatnonzero(~finite)
    n_bad = min(len(bad), (max_points - 2) // 4)
    buckets = max(1, (max_points - 2 - n_bad) // 2)
    size = -(-n // buckets)
    if len(bad):  # NaN/inf never win a bucket's min or max
        lo, hi = np.where(finite, values, np.inf), np.where(finite, values, -np.inf)
    else:
        lo = hi = values
    full = n // size
    # full buckets are strided views (no copy); the short last bucket is done apart
    offsets = np.arange(full) * size
    parts = [
        lo[: full * size].reshape(full, size).argmin(axis=1) + offsets,
        hi[: full * size].reshape(full, size).argmax(axis=1) + offsets,
    ]
    if full * size < n:
        parts.append(
            np.array(
                [full * size + lo[full * size :].argmin(), full * size + hi[full * size :].argmax()]
            )
        )
    if n_bad:
        parts.append(bad[np.linspace(0, len(bad) - 1, n_bad).astype(np.int64)])
    idx = np.unique(np.concatenate([[0, n - 1], *parts]))
    return idx, True


class _SeriesCache:
    """Decoded metric chunks and decimated answers, kept between requests.

    A chunk row is identified by (seq, n, min_step, max_step): the writer only appends
    chunks or rewrites a tail into a bigger one, so an unchanged identity means unchanged
    points. A finished run's series is then answered without inflating anything, and a
    live run only decodes its new tail."""

    def __init__(self, max_points: int = 4_000_000, max_answers: int = 256) -> None:
        self.max_points, self.max_answers = max_points, max_answers
        self.chunks: OrderedDict[tuple, dict[tuple, tuple]] = OrderedDict()
        self.answers: OrderedDict[tuple, tuple[tuple, dict]] = OrderedDict()
        self.lock = threading.Lock()

    def _points(self) -> int:
        return sum(len(c[2]) for d in self.chunks.values() for c in d.values())

    def load(self, store: Store, rid: int, uid: str, kid: int, meta: list[tuple]):
        skey = (store.key, rid, uid, kid)
        with self.lock:
            have = dict(self.chunks.get(skey, {}))
        missing = [m for m in meta if m not in have]
        if missing:
            seqs = [m[0] for m in missing]
            rows = store.read(
                "SELECT seq, n, min_step, max_step, data FROM metric_chunks WHERE run_id = ?"
                f" AND key_id = ? AND seq IN ({','.join('?' * len(seqs))})",
                [rid, kid, *seqs],
            )
            blobs = {tuple(r[:4]): r[4] for r in rows}
            items = [(m, blobs[m]) for m in missing if m in blobs]
            # zlib releases the GIL: inflate big chunks in parallel
            if len(items) > 1 and sum(len(b) for _, b in items) > 1 << 20:
                decoded = list(_decode_pool().map(lambda it: codec.decode(it[1]), items))
            else:
                decoded = [codec.decode(b) for _, b in items]
            for (m, _), d in zip(items, decoded):
                have[m] = d
        parts = [have[m] for m in meta if m in have]
        with self.lock:
            self.chunks[skey] = {m: have[m] for m in meta if m in have}
            self.chunks.move_to_end(skey)
            while len(self.chunks) > 1 and self._points() > self.max_points:
                self.chunks.popitem(last=False)
            if self._points() > self.max_points:  # one series bigger than the budget
                self.chunks.pop(skey, None)
        if not parts:
            e = np.empty(0, np.int64)
            return e, e.copy(), np.empty(0)
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))

    def answer(self, key: tuple, sig: tuple) -> dict | None:
        with self.lock:
            hit = self.answers.get(key)
            if hit and hit[0] == sig:
                self.answers.move_to_end(key)
                return hit[1]
        return None

    def remember(self, key: tuple, sig: tuple, value: dict) -> None:
        with self.lock:
            self.answers[key] = (sig, value)
            self.answers.move_to_end(key)
            while len(self.answers) > self.max_answers:
                self.answers.popitem(last=False)


_cache = _SeriesCache()
_pool: ThreadPoolExecutor | None = None


def _decode_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mlops-decode")
    return _pool


def series(
    store: Store, rid: int, key: str, max_points: int = 2000, since_step: int | None = None
) -> dict[str, Any]:
    """One metric history decimated to at most `max_points` points (min/max per bucket).

    `since_step`: only the points with a step after it (a live chart's incremental
    refresh); `n` still counts the whole series and `last_step` is its last step."""
    if not (4 <= max_points <= MAX_POINTS):
        raise InvalidInputError(f"max_points must be between 4 and {MAX_POINTS}, got {max_points}")
    krow = store.read("SELECT id FROM metric_keys WHERE key = ?", (key,))
    meta = []
    if krow:
        kid = krow[0][0]
        meta = [
            tuple(r)
            for r in store.read(
                "SELECT seq, n, min_step, max_step FROM metric_chunks"
                " WHERE run_id = ? AND key_id = ? ORDER BY seq",
                (rid, kid),
            )
        ]
    if not meta:
        return {
            "key": key,
            "n": 0,
            "decimated": False,
            "last_step": None,
            "step": [],
            "ts": [],
            "value": [],
        }
    # the run's random uid guards against a store re-created at the same path
    uid = uid_of(store, rid)
    ckey, sig = (store.key, rid, uid, kid, max_points, since_step), tuple(meta)
    hit = _cache.answer(ckey, sig)
    if hit is not None:
        return hit
    steps, ts, vals = _cache.load(store, rid, uid, kid, meta)
    if len(steps) > 1 and not np.all(steps[1:] >= steps[:-1]):
        order = np.argsort(steps, kind="stable")
        steps, ts, vals = steps[order], ts[order], vals[order]
    n, last = int(len(vals)), (int(steps[-1]) if len(steps) else None)
    if since_step is not None:
        # sorted by step: the new points are a suffix
        start = int(np.searchsorted(steps, since_step, side="right"))
        steps, ts, vals = steps[start:], ts[start:], vals[start:]
    idx, dec = decimate(steps, vals, max_points)
    v = vals[idx]
    out = {
        "key": key,
        "n": n,
        "decimated": dec,
        "last_step": last,
        "step": steps[idx].tolist(),
        "ts": (ts[idx] / 1000.0).tolist(),
        "value": [None if not math.isfinite(x) else x for x in v.tolist()],
    }
    _cache.remember(ckey, sig, out)
    return out


def uid_of(store: Store, rid: int) -> str:
    return store.read("SELECT uid FROM runs WHERE id = ?", (rid,))[0][0]
