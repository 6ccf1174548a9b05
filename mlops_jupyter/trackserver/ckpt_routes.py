"""Checkpoint series over the tracking server, so a remote client's `mj.checkpoint`,
its rotation and `mj.resume` (on any machine) work as on a local store. The files live in
the server's artifact store under `checkpoints/` (artifacts/base.py's checkpoint_key), the
same place a local client's series lies; only keys under that prefix are reachable here.

- `PUT /api/v1/checkpoints/files/{sha256}?key=K` streams one file (the manifest too); the
  server hashes what it received and stores it under K only if it is exactly those bytes
  (400 DIGEST_MISMATCH otherwise, nothing stored). Sending it again stores the same bytes.
  The client sends the checkpoint first and the manifest last, as locally.
- `GET /api/v1/checkpoints/files?prefix=P` lists the stored files (key, size, modified).
- `GET /api/v1/checkpoints/file?key=K` answers the bytes with their sha256 in
  `X-Content-SHA256`; the client checks what it received against it.
- `DELETE /api/v1/checkpoints/file?key=K` (write scope) removes a rotated-out file;
  deleting a missing file is not an error, so a retry is harmless."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..artifacts import hashcache
from ..artifacts.base import CHECKPOINTS_PREFIX, check_key, sha256_file
from ..errors import InvalidInputError, StoreError
from .app import BaseHandler, HTTPError, check_value
from .run_files import BlobHandler

MAX_LIST = 100_000


def checked_key(key: Any, prefix_ok: bool = False) -> str:
    """`key` if it names a file under checkpoints/ (400 otherwise)."""
    check_value(isinstance(key, str) and bool(key), "?key= is required")
    try:
        check_key(key)
    except InvalidInputError as e:
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", str(e)) from None
    parts = key.split("/")
    check_value(
        parts[0] == CHECKPOINTS_PREFIX and len(parts) >= (2 if prefix_ok else 3),
        f"only keys under {CHECKPOINTS_PREFIX}/ are served here",
    )
    return key


def _check_place(arts: Any, key: str) -> None:
    """400 when `key` cannot hold a file in a folder store: it is a folder, or a part of
    its path is a file (object storage has no such clashes)."""
    p = arts.local_path(key)
    if p is None:
        return
    if p.is_dir():
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", f"{key!r} is a folder of checkpoints")
    for parent in p.parents:
        if parent.is_file():
            raise HTTPError(400, "INVALID_PARAMETER_VALUE", f"a part of {key!r} is a file")
        if parent.is_dir():
            break


class CheckpointUploadHandler(BlobHandler):
    """PUT one checkpoint file; stored under ?key= only when it hashes to {sha256}."""

    def check_owner(self, uid: str) -> None:
        key = checked_key(self.get_query_argument("key", None))
        _check_place(self.store.artifacts, key)

    async def put(self, _what: str, digest: str) -> None:
        def go() -> dict:
            received = self.received(digest)
            key = checked_key(self.get_query_argument("key", None))
            arts = self.store.artifacts
            arts.put_file(key, received)
            info = arts.head(key)
            size = info.size if info else self._size
            return {"sha256": digest, "size": size, "modified": info.modified if info else None}

        await self.handle(go)


class CheckpointListHandler(BaseHandler):
    """GET ?prefix=: the stored files under a checkpoints/ prefix."""

    async def get(self) -> None:
        def go() -> dict:
            prefix = checked_key(self.get_query_argument("prefix", None), prefix_ok=True)
            out = []
            for info in self.store.artifacts.list(prefix):  # the store's own prefix semantics
                out.append({"key": info.key, "size": info.size, "modified": info.modified})
                check_value(len(out) <= MAX_LIST, f"more than {MAX_LIST} files under {prefix}")
            return {"files": out}

        await self.handle(go)


class CheckpointFileHandler(BaseHandler):
    """GET ?key=: the file's bytes (sha256 in X-Content-SHA256). DELETE ?key=: remove it."""

    async def get(self) -> None:
        tmp: str | None = None

        def find() -> tuple[Path, str, Any]:
            nonlocal tmp
            self.authorize()
            key = checked_key(self.get_query_argument("key", None))
            arts = self.store.artifacts
            info = arts.head(key)
            if info is None:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", f"no checkpoint file {key!r}")
            local = arts.local_path(key)
            if local is None or not local.is_file():  # object storage: a local copy first
                fd, tmp = tempfile.mkstemp(prefix="mj-ckpt-")
                os.close(fd)
                local = Path(tmp)
                arts.get_file(key, local)
            known = hashcache.lookup(local) if tmp is None else None
            if known is None:
                d, s = sha256_file(local)
                if tmp is None:  # a file of the store: its digest is worth remembering
                    hashcache.remember(local, d, s)
            else:
                d = known[0]
            return local, d, info

        try:
            try:
                local, digest, info = await self.run(find)
            except HTTPError as e:
                self.send_error_json(e.status, e.code, e.message)
                return
            except InvalidInputError as e:
                self.send_error_json(400, "INVALID_PARAMETER_VALUE", str(e))
                return
            except StoreError as e:
                self.send_error_json(503, "TEMPORARILY_UNAVAILABLE", str(e))
                return
            await self.send_file(
                local, {"X-Content-SHA256": digest, "X-Modified": repr(info.modified)}
            )
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    async def delete(self) -> None:
        def go() -> dict:
            key = checked_key(self.get_query_argument("key", None))
            arts = self.store.artifacts
            # a missing file (deleted by an earlier try) or a folder: nothing to delete
            if arts.head(key) is not None:
                arts.delete(key)
            return {}

        await self.handle(go)


ROUTES = [
    (r"/api/v1/(checkpoints)/files/([^/]+)", CheckpointUploadHandler),
    (r"/api/v1/checkpoints/files", CheckpointListHandler),
    (r"/api/v1/checkpoints/file", CheckpointFileHandler),
]
