"""Compact encoding of metric points: one blob per chunk of consecutive points.

A chunk holds n points of one (run, metric key). Steps and millisecond timestamps are
delta-encoded int64 and zlib-compressed (they shrink to almost nothing); values are raw
float64, so NaN and inf survive exactly and decoding a million points costs a memcpy, not a
decompression (random floats barely compress anyway).

Layout (v2): b"\\x02" | n: uint32 | len(z): uint32 | z = zlib(step deltas + ts deltas) | values.
v1 chunks (one zlib stream of everything; they start with the zlib header byte 0x78) are
still read.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_V2 = struct.Struct("<BII")  # version, n points, compressed delta length


def encode(steps: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> bytes:
    """Pack one chunk. `steps`/`ts_ms` are int64, `values` float64, all of length n."""
    n = len(values)
    ds = np.diff(steps, prepend=np.int64(0)).astype("<i8", copy=False)
    dt = np.diff(ts_ms, prepend=np.int64(0)).astype("<i8", copy=False)
    z = zlib.compress(ds.tobytes() + dt.tobytes(), 1)
    return b"".join((_V2.pack(2, n, len(z)), z, values.astype("<f8", copy=False).tobytes()))


def decode(blob: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of encode: (steps int64, ts_ms int64, values float64)."""
    if blob[0] == 2:
        _, n, zlen = _V2.unpack_from(blob, 0)
        deltas = zlib.decompress(blob[_V2.size : _V2.size + zlen])
        vals = np.frombuffer(blob, "<f8", n, _V2.size + zlen)
    else:  # v1
        raw = zlib.decompress(blob)
        (n,) = struct.unpack_from("<I", raw, 0)
        deltas = raw[4 : 4 + 16 * n]
        vals = np.frombuffer(raw, "<f8", n, 4 + 16 * n)
    ds = np.frombuffer(deltas, "<i8", n, 0)
    dt = np.frombuffer(deltas, "<i8", n, 8 * n)
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
