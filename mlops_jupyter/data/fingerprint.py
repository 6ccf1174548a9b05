"""Content fingerprints: xxh3-128 over a canonical byte encoding (files, directories,
DataFrames, numpy arrays). The same content gives the same fingerprint in every process.

xxhash is the optional `[data]` extra; without it, blake2b (stdlib, ~4x slower) is used and
the fingerprint is prefixed with its algorithm, so the two never collide silently."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

try:
    import xxhash

    ALGO = "xxh3_128"
except ImportError:  # pragma: no cover - exercised only without the [data] extra
    import warnings

    xxhash = None
    ALGO = "blake2b_128"
    warnings.warn(
        "mlops-jupyter: xxhash is not installed (pip install 'mlops-jupyter[data]'); data "
        "fingerprints use blake2b instead: slower, and prefixed 'blake2b_128:' so they never "
        "match xxh3 fingerprints of the same content",
        RuntimeWarning,
        stacklevel=2,
    )

_CHUNK = 16 << 20


def hasher():
    """A new streaming hasher of the configured algorithm."""
    if xxhash is not None:
        return xxhash.xxh3_128()
    return hashlib.blake2b(digest_size=16)


def _finish(h) -> str:
    return f"{ALGO}:{h.hexdigest()}"


# -- files ----------------------------------------------------------------------------------
# (path, size, mtime_ns, inode) -> fingerprint: re-reading an unchanged file costs nothing
_file_cache: dict[tuple, str] = {}
_cache_lock = threading.Lock()


def _file_key(p: Path, st: os.stat_result) -> tuple:
    return (str(p), st.st_size, st.st_mtime_ns, st.st_ino)


def file_fingerprint(path: str | os.PathLike, use_cache: bool = True) -> str:
    """Fingerprint of a file's bytes (memory-mapped, so page-cache reads are not copied)."""
    p = Path(path).resolve()
    st = p.stat()
    key = _file_key(p, st)
    if use_cache:
        with _cache_lock:
            hit = _file_cache.get(key)
        if hit is not None:
            return hit
    h = hasher()
    if st.st_size > 0:
        with open(p, "rb") as f:
            try:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    view = memoryview(mm)
                    try:
                        for off in range(0, len(mm), _CHUNK):
                            h.update(view[off : off + _CHUNK])
                    finally:
                        view.release()
            except (ValueError, OSError):  # e.g. a pipe or special file: plain reads
                f.seek(0)
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
    fp = _finish(h)
    with _cache_lock:
        if len(_file_cache) > 10000:
            _file_cache.clear()
        _file_cache[key] = fp
    return fp


def dir_fingerprint(path: str | os.PathLike) -> tuple[str, list[dict[str, Any]]]:
    """Fingerprint of a directory tree (relative paths and file contents; hidden files and
    folders skipped) and its file listing [{path, size, fingerprint}]."""
    from ..progress import progress

    root = Path(path).resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            fp = Path(dirpath) / fn
            if fp.is_file():
                found.append((fp, fp.stat().st_size))
    files = []
    # a big folder takes a while to hash: a bar in bytes once it runs a second
    total = sum(size for _, size in found)
    with progress(total=total, desc="fingerprint", unit="B", unit_scale=True) as bar:
        for fp, size in found:
            files.append(
                {
                    "path": fp.relative_to(root).as_posix(),
                    "size": size,
                    "fingerprint": file_fingerprint(fp),
                }
            )
            bar.update(size)
    files.sort(key=lambda f: f["path"])
    h = hasher()
    h.update(b"dir\0")
    for f in files:
        h.update(f"{f['path']}\0{f['size']}\0{f['fingerprint']}\n".encode())
    return _finish(h), files


# -- in-memory data -----------------------------------------------------------------------------
def _update_array(h, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    h.update(memoryview(arr).cast("B"))


def _hash_series(h, s: pl.Series) -> None:
    h.update(f"\0col\0{s.name}\0{s.dtype}\0{len(s)}\0".encode())
    nulls = s.null_count()
    if nulls:
        h.update(b"validity")
        _update_array(h, np.packbits(s.is_null().to_numpy()))
    dt = s.dtype
    if dt.is_numeric() or dt == pl.Boolean or dt.is_temporal():
        phys = s.to_physical()
        if nulls:
            if dt == pl.Boolean:  # filled with 0 it becomes Int32 (polars 1.0 refuses to)
                phys = phys.cast(pl.Int32)
            phys = phys.fill_null(0)
        arr = phys.to_numpy()
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            arr = np.where(np.isnan(arr), np.nan, arr)  # one NaN bit pattern
        _update_array(h, arr)
        return
    if dt in (pl.String, pl.Categorical) or isinstance(dt, pl.Enum):
        st = s.cast(pl.String)
        # lengths + concatenated bytes encode the sequence unambiguously
        _update_array(h, st.str.len_bytes().fill_null(0).cast(pl.UInt64).to_numpy())
        joined = st.fill_null("").str.join("").item()
        h.update(joined.encode("utf-8", "surrogatepass"))
        return
    try:
        st = s.cast(pl.String)
        _update_array(h, st.str.len_bytes().fill_null(0).cast(pl.UInt64).to_numpy())
        h.update(st.fill_null("").str.join("").item().encode("utf-8", "surrogatepass"))
    except Exception:
        # nested or object columns: a canonical JSON of the values
        h.update(json.dumps(s.to_list(), default=repr, sort_keys=True).encode())


def frame_fingerprint(df: pl.DataFrame, index: pl.DataFrame | None = None) -> str:
    """Fingerprint of a polars DataFrame: column names, dtypes and values, in order.

    `index`: the levels of a pandas frame's non-default index (see pandas_index), hashed
    after the columns, so `df` and `df.set_index("id")` never share a fingerprint. Frames
    without one hash exactly as before."""
    h = hasher()
    h.update(f"frame\0{df.height}\0{df.width}".encode())
    for s in df.get_columns():
        _hash_series(h, s)
    if index is not None:
        h.update(f"\0index\0{index.width}".encode())
        for s in index.get_columns():
            _hash_series(h, s)
    return _finish(h)


def pandas_index(obj: Any) -> pl.DataFrame | None:
    """The index of a pandas DataFrame/Series as a polars frame (one column per level, named
    by the level's repr), or None for the default index (unnamed RangeIndex 0, 1, 2, ...)."""
    import pandas as pd

    idx = obj.index
    if idx.nlevels == 1 and idx.name is None:
        if isinstance(idx, pd.RangeIndex):
            if idx.start == 0 and idx.step == 1:
                return None
        elif idx.dtype.kind in "iu" and np.array_equal(idx.to_numpy(), np.arange(len(idx))):
            return None  # 0, 1, 2, ... as plain integers: the same labels as the default
    cols = []
    for i, name in enumerate(idx.names):
        level = idx.get_level_values(i)
        key = f"{i}:{name!r}"
        try:
            cols.append(pl.from_pandas(level).alias(key))
        except Exception:  # mixed objects: their reprs, still an exact record of the values
            cols.append(pl.Series(key, [repr(v) for v in level], dtype=pl.String))
    return pl.DataFrame(cols)


def array_fingerprint(arr: np.ndarray) -> str:
    """Fingerprint of a numpy array: dtype, shape and bytes."""
    h = hasher()
    h.update(f"ndarray\0{arr.dtype.str}\0{arr.shape}".encode())
    if arr.dtype.hasobject:
        h.update(json.dumps(arr.tolist(), default=repr).encode())
    else:
        _update_array(h, arr)
    return _finish(h)


def version_id(fingerprint: str) -> str:
    """Short public id of a data version: 16 hex digits of its fingerprint."""
    return fingerprint.split(":", 1)[-1][:16]
