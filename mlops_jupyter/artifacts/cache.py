"""The local read-through cache of a remote artifact store: blobs by digest (verified
on download), and trees (model folders, checkpoints) by store location and prefix.
Past the size limit (MLOPS_JUPYTER_CACHE_MB) the least recently used entries go."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from ..config import cache_dir, cache_limit_bytes
from ..errors import ArtifactIntegrityError, ArtifactNotFoundError
from .base import blob_key, sha256_file

if TYPE_CHECKING:
    from .base import ArtifactStore

_lock = threading.Lock()


def _blobs() -> Path:
    return cache_dir() / "blobs"


def _trees() -> Path:
    return cache_dir() / "trees"


def fetch(store: ArtifactStore, digest: str) -> Path:
    """A cached local copy of blob `digest` from `store`, downloaded and verified if needed."""
    path = _blobs() / digest[:2] / digest[2:]
    if path.is_file():
        os.utime(path)  # most recently used
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    os.close(fd)
    try:
        store.get_file(blob_key(digest), Path(tmp))
        got, size = sha256_file(Path(tmp))
        if got != digest:
            raise ArtifactIntegrityError(
                f"blob {digest[:12]} downloaded from {store.location} does not match its "
                f"digest (got {got[:12]}): the stored object was changed; refusing it"
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    trim(keep=path)
    return path


@contextlib.contextmanager
def _exclusive(ident: str) -> Iterator[None]:
    """One process (or thread) at a time fills or replaces tree `ident`: serving workers
    starting together fetch the same model, and a replace under a reader's feet would take
    its files away mid-load. A lock file beside the tree (flock; a process lock where the
    platform has none)."""
    path = _trees() / f".{ident}.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: threads exclude each other too
            yield
        else:  # pragma: no cover - platforms without flock
            with _lock:
                yield
    finally:
        os.close(fd)  # releases the flock


def fetch_tree(store: ArtifactStore, prefix: str) -> Path:
    """A cached local copy of the tree `prefix` of `store`; downloaded again when the
    stored objects (keys, sizes, times) differ from the cached copy's listing. Processes
    fetching the same tree at once download it once (the others wait, then use it)."""
    listing = sorted((i.key, i.size, i.modified) for i in store.list(prefix))
    if not listing:
        raise ArtifactNotFoundError(f"nothing stored under {prefix!r} in {store.location}")
    ident = hashlib.sha256(f"{store.location}\0{prefix}".encode()).hexdigest()[:32]
    folder = _trees() / ident
    stamp = json.dumps(listing)
    # the listing is kept beside the folder, so the folder holds exactly the stored files
    mark = folder.with_name(f".{ident}.listing")

    def fresh() -> bool:
        try:
            if mark.read_text() == stamp:
                os.utime(folder)
                return True
        except OSError:
            pass
        return False

    if fresh():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(ident):
        if fresh():  # another process fetched it while this one waited
            return folder
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".incoming-"))
        try:
            store.get_tree(prefix, tmp)
            mark.unlink(missing_ok=True)
            if folder.exists():
                old = folder.with_name(f".old-{ident}-{os.getpid()}-{time.monotonic_ns()}")
                os.replace(folder, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, folder)
            mark.write_text(stamp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    trim(keep=folder)
    return folder


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def trim(keep: Path | None = None, limit: int | None = None) -> int:
    """Remove least recently used entries until the cache is under its limit; returns the
    bytes removed. `keep` (the entry just fetched) is never removed."""
    limit = cache_limit_bytes() if limit is None else limit
    entries = []
    for base in (_blobs(), _trees()):
        if not base.is_dir():
            continue
        if base == _blobs():
            items = [f for d in base.iterdir() if d.is_dir() for f in d.iterdir()]
        else:
            items = list(base.iterdir())
        for p in items:
            if p.name.startswith("."):
                continue
            try:
                entries.append((p.stat().st_mtime, _size(p), p))
            except OSError:
                continue
    total = sum(s for _, s, _ in entries)
    removed = 0
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if keep is not None and p == keep:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        total -= size
        removed += size
    return removed
