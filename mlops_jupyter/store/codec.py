"""Compact encoding of metric points: one zlib blob per chunk of consecutive points.

A chunk holds n points of one (run, metric key): steps and millisecond timestamps are
delta-encoded int64 (they compress to almost nothing), values are raw float64 so NaN
and inf survive exactly.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_HEADER = struct.Struct("<I")  # n points


def encode(steps: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> bytes:
    """Pack one chunk. `steps`/`ts_ms` are int64, `values` float64, all of length n."""
    n = len(values)
    ds = np.diff(steps, prepend=np.int64(0)).astype("<i8", copy=False)
    dt = np.diff(ts_ms, prepend=np.int64(0)).astype("<i8", copy=False)
    raw = b"".join(
        (_HEADER.pack(n), ds.tobytes(), dt.tobytes(), values.astype("<f8", copy=False).tobytes())
    )
    return zlib.compress(raw, 1)


def decode(blob: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of encode: (steps int64, ts_ms int64, values float64)."""
    raw = zlib.decompress(blob)
    (n,) = _HEADER.unpack_from(raw, 0)
    off = _HEADER.size
    ds = np.frombuffer(raw, "<i8", n, off)
    dt = np.frombuffer(raw, "<i8", n, off + 8 * n)
    vals = np.frombuffer(raw, "<f8", n, off + 16 * n)
    return np.cumsum(ds), np.cumsum(dt), vals.astype(np.float64)


def decode_many(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode and concatenate chunks in the given order."""
    if not blobs:
        e = np.empty(0, np.int64)
        return e, e.copy(), np.empty(0, np.float64)
    parts = [decode(b) for b in blobs]
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]
