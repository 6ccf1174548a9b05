"""Remembered digests of local files, so logging an unchanged large file again costs a
stat and one existence check instead of re-reading it (as git's index and DVC's state do).

An entry is keyed by the file's absolute path and trusted only while the file's device,
inode, size, mtime and ctime are all unchanged: any write to the file changes its ctime.
One small JSON file per path under `<cache>/digests/`, written atomically, so concurrent
processes need no lock and a torn entry is just a miss."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..config import cache_dir


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _entry(path: Path) -> Path:
    name = hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()
    return cache_dir() / "digests" / name[:2] / name[2:]


def lookup(path: Path) -> tuple[str, int] | None:
    """(digest, size) remembered for `path`, if the file is unchanged since."""
    try:
        st = os.stat(path)
        data = json.loads(_entry(path).read_text())
        if data["stamp"] == _stamp(st) and isinstance(data["digest"], str):
            return data["digest"], int(data["size"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def remember(path: Path, digest: str, size: int) -> None:
    """Remember `path`'s digest (best effort: a cache that cannot be written is skipped)."""
    try:
        st = os.stat(path)
        if st.st_size != size:
            return
        entry = _entry(path)
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump({"stamp": _stamp(st), "digest": digest, "size": size}, f)
        os.replace(tmp, entry)
    except OSError:
        pass
