"""The durable spool of a remote client: request bodies (gzip JSON of POST /api/v1/ingest)
that could not be delivered, appended with fsync to one file per process under
`<cache>/spool/<server hash>/`, replayed in order when the server is back.

The owning process holds an exclusive `flock` on its file while it lives. A later process
for the same server URL takes the lock of every file whose owner is gone, replays it and
deletes it, so each leftover spool is replayed by one process only. Every chunk in a body is
named by (run, key, seq), so even a body sent twice writes its points once."""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

from .. import config

_HDR = struct.Struct("<I")  # record = 4-byte little-endian length + body


def spool_root(url: str) -> Path:
    """The spool folder of server `url` (MLOPS_JUPYTER_SPOOL_DIR or the cache folder)."""
    base = os.environ.get("MLOPS_JUPYTER_SPOOL_DIR")
    root = Path(base) if base else config.cache_dir() / "spool"
    return root / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


class SpoolFile:
    """One locked spool file: append records (fsync'd), read them back from an offset."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self.read_pos = 0  # records before it were delivered

    @classmethod
    def create(cls, root: Path) -> SpoolFile:
        """A new file of this process, locked."""
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.spool"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd)

    @classmethod
    def adopt(cls, path: Path) -> SpoolFile | None:
        """Lock a leftover file whose owner is gone; None if someone holds it (or it went)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        if not path.exists():  # replayed and deleted by another process just now
            os.close(fd)
            return None
        return cls(path, fd)

    def append(self, body: bytes) -> None:
        """Append one record and fsync (it survives a crash of this process)."""
        size = os.fstat(self.fd).st_size
        try:
            data = _HDR.pack(len(body)) + body
            if os.write(self.fd, data) != len(data):
                raise OSError("short write to the spool file")
            os.fsync(self.fd)
        except BaseException:
            # a torn record would hide every record appended after it
            try:
                os.ftruncate(self.fd, size)
            except OSError:
                pass
            raise

    def pending(self) -> bool:
        return os.fstat(self.fd).st_size > self.read_pos

    def records(self) -> Iterator[tuple[int, bytes]]:
        """(offset after it, body) of each undelivered record, oldest first. A torn last
        record (a crash in the middle of an append) ends the iteration."""
        size = os.fstat(self.fd).st_size
        pos = self.read_pos
        while pos + _HDR.size <= size:
            (n,) = _HDR.unpack(os.pread(self.fd, _HDR.size, pos))
            if pos + _HDR.size + n > size:
                return
            body = os.pread(self.fd, n, pos + _HDR.size)
            pos += _HDR.size + n
            yield pos, body

    def reset(self) -> None:
        """Everything was delivered: empty the file."""
        os.ftruncate(self.fd, 0)
        self.read_pos = 0

    def remove(self) -> None:
        """Delete the file (still locked, so nobody adopts it meanwhile) and close it."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1


def leftovers(root: Path, own: Path | None) -> list[Path]:
    """Spool files under `root` other than `own`, oldest first."""
    try:
        files = [p for p in root.glob("*.spool") if p != own]
    except OSError:
        return []
    return sorted(files, key=lambda p: (p.stat().st_mtime if p.exists() else 0, p.name))
