"""Checkpoint series through a tracking server (trackserver/ckpt_routes.py).

`ServerCheckpoints` is the server's `checkpoints/` folder seen as an artifact store, which
is what a remote checkpoint series (registry/ckpt_io.Series) needs: the series keeps its
local working copy in the cache, uploads each file with the digest-checked upload
(remote/files.py; checkpoint first, manifest last, as locally), deletes rotated-out files
through the server (write scope) and downloads a file to resume from, checking its sha256.
Every request can be repeated, so an unreachable server is retried for RETRY_S seconds."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ..artifacts.base import ArtifactStore, ObjectInfo, check_key, sha256_file
from ..errors import ArtifactNotFoundError, StoreError
from .api import RemoteStore
from .client import ServerRefused
from .files import RETRY_S, _put_blob, _refused, _retrying, download

_BLOCK = 1 << 20


class ServerCheckpoints(ArtifactStore):
    """The tracking server's checkpoint files (keys under checkpoints/)."""

    kind = "server"

    def __init__(self, store: RemoteStore) -> None:
        self.remote = store
        self.location = store.client.shown

    def _call(self, method: str, path: str, what: str) -> Any:
        def step() -> Any:
            try:
                return self.remote.client.request(method, path)
            except ServerRefused as e:
                raise _refused(self.remote, e, what) from None

        return _retrying(self.remote, what, step, RETRY_S)

    def put_file(self, key: str, src: Path, *, if_absent: bool = False) -> bool:
        """Upload `src` as `key` (digest-checked)."""
        check_key(key)
        src = Path(src)
        digest, size = sha256_file(src)
        route = f"/api/v1/checkpoints/files/{digest}?" + urlencode({"key": key})
        what = f"store the checkpoint file {key!r}"

        def step() -> None:
            try:
                _put_blob(self.remote, "", src, digest, size, route)
            except ServerRefused as e:
                raise _refused(self.remote, e, what) from None

        _retrying(self.remote, what, step, RETRY_S)
        return True

    def head(self, key: str) -> ObjectInfo | None:
        """The stored file `key` (size, modified), or None."""
        # a listing is of a folder (a local store's list() reads the prefix as one)
        return next((i for i in self.list(key.rsplit("/", 1)[0]) if i.key == key), None)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The stored files whose key starts with `prefix` (under checkpoints/)."""
        q = urlencode({"prefix": prefix})
        out = self._call("GET", "/api/v1/checkpoints/files?" + q, "list checkpoint files")
        return iter([ObjectInfo(f["key"], f["size"], f["modified"]) for f in out["files"]])

    def delete(self, key: str) -> None:
        """Remove a stored file (a missing one is not an error)."""
        q = urlencode({"key": key})
        self._call("DELETE", "/api/v1/checkpoints/file?" + q, f"delete the checkpoint {key!r}")

    def get_file(self, key: str, dest: Path) -> int:
        """Download `key` to `dest`, checking the sha256 the server sends."""
        what = f"download the checkpoint file {key!r}"

        def step() -> int:
            try:
                return self._download(key, Path(dest))
            except ServerRefused as e:
                if e.status == 404:
                    raise ArtifactNotFoundError(str(e)) from None
                raise _refused(self.remote, e, what) from None

        return _retrying(self.remote, what, step, RETRY_S)

    def _download(self, key: str, dest: Path) -> int:
        path = "/api/v1/checkpoints/file?" + urlencode({"key": key})
        sent = lambda resp: resp.getheader("X-Content-SHA256") or ""  # noqa: E731
        return download(self.remote, path, dest, f"the checkpoint file {key!r}", sha256=sent)

    def _unsupported(self, *a: Any, **kw: Any) -> Any:
        raise StoreError("the server's checkpoint files are written whole with put_file")

    def put_stream(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> bool:
        return self._unsupported()

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        return self._unsupported()


def series_store(store: RemoteStore) -> ServerCheckpoints:
    """The checkpoint files of tracking server `store`."""
    return ServerCheckpoints(store)


__all__ = ["ServerCheckpoints", "series_store"]
