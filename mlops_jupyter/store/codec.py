"""Compact encoding of metric points: one blob per chunk of consecutive points.

A chunk holds n points of one (run, metric key). Steps and millisecond timestamps are
delta-encoded in the narrowest integer type that holds them (usually int8: steps go up by 1,
timestamps by a few ms) and zlib-compressed, so they shrink to almost nothing and inflate
fast; values are raw float64, so NaN and inf survive exactly and decoding a million points
costs a copy, not a decompression (random floats barely compress anyway).

Layout (v2): 0x02 | n: uint32 | step width: uint8 | ts width: uint8 | len(z): uint32 |
z = zlib(step deltas + ts deltas) | values (float64 little-endian).
v1 chunks (one zlib stream of everything; they start with the zlib header byte 0x78) are
still read.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_V2 = struct.Struct("<BIBBI")  # version, n points, step width, ts width, compressed length
_WIDTHS = {1: "<i1", 2: "<i2", 4: "<i4", 8: "<i8"}


def _narrow(deltas: np.ndarray) -> tuple[int, bytes]:
    """The narrowest signed width (1/2/4/8 bytes) holding every delta, and the packed bytes."""
    if len(deltas) == 0:
        return 1, b""
    lo, hi = int(deltas.min()), int(deltas.max())
    for w in (1, 2, 4):
        bound = 1 << (8 * w - 1)
        if -bound <= lo and hi < bound:
            return w, deltas.astype(_WIDTHS[w]).tobytes()
    return 8, deltas.astype("<i8", copy=False).tobytes()


def encode(steps: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> bytes:
    """Pack one chunk. `steps`/`ts_ms` are int64, `values` float64, all of length n."""
    n = len(values)
    ws, ds = _narrow(np.diff(steps, prepend=np.int64(0)))
    wt, dt = _narrow(np.diff(ts_ms, prepend=np.int64(0)))
    z = zlib.compress(ds + dt, 1)
    head = _V2.pack(2, n, ws, wt, len(z))
    return b"".join((head, z, values.astype("<f8", copy=False).tobytes()))


def decode(blob: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of encode: (steps int64, ts_ms int64, values float64)."""
    if blob[0] == 2:
        _, n, ws, wt, zlen = _V2.unpack_from(blob, 0)
        deltas = zlib.decompress(blob[_V2.size : _V2.size + zlen])
        vals = np.frombuffer(blob, "<f8", n, _V2.size + zlen)
    else:  # v1
        raw = zlib.decompress(blob)
        (n,) = struct.unpack_from("<I", raw, 0)
        ws = wt = 8
        deltas = raw[4 : 4 + 16 * n]
        vals = np.frombuffer(raw, "<f8", n, 4 + 16 * n)
    ds = np.frombuffer(deltas, _WIDTHS[ws], n, 0)
    dt = np.frombuffer(deltas, _WIDTHS[wt], n, ws * n)
    return np.cumsum(ds, dtype=np.int64), np.cumsum(dt, dtype=np.int64), vals.astype(np.float64)


def decode_many(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode and concatenate chunks in the given order."""
    if not blobs:
        e = np.empty(0, np.int64)
        return e, e.copy(), np.empty(0, np.float64)
    parts = [decode(b) for b in blobs]
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]
