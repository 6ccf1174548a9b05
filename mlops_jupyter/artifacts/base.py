"""The artifact-store contract: where files, models, checkpoints and pipeline outputs live.

A store of named objects ("keys": relative POSIX paths such as `artifacts/ab/cdef...` or
`models/clf/3f2a.../weights.safetensors`), with one implementation per kind of place: a
local folder (`local.py`) and object storage, S3-compatible, GCS or Azure (`objectstore.py`).
Every implementation passes the one contract suite (tests/test_artifacts_contract.py).

Semantics every implementation keeps:
- a key is checked by `check_key` (no absolute paths, no `..`, no empty or dot segments, no
  backslash or NUL): nothing read from a store can name a place outside it;
- a put is atomic: a reader sees the old object, the whole new one, or nothing, never a
  part (local: temp file + rename; object storage: single put or multipart completed last,
  aborted on any error);
- `if_absent=True` is put-if-absent: an existing key is left as it is and the call returns
  False (S3 `If-None-Match: *`, a hard link locally), so concurrent writers of the same
  content-addressed key cost one upload and never clobber each other;
- a get writes to a temp file beside `dest` and renames it, so `dest` is whole or absent;
- errors are ArtifactStoreError naming the location and key, never a secret; a missing key
  is ArtifactNotFoundError.

Content addressing is built here on top of those primitives, so no caller ever builds a
blob key: `put_blob(file)` -> (sha256, size), `blob_file(digest)` -> a local file holding
exactly those bytes (a remote store downloads into a size-limited read-through cache and
verifies the hash), `put_tree`/`get_tree` for folders (models, checkpoints, stage outputs).
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from ..errors import ArtifactIntegrityError, ArtifactNotFoundError, InvalidInputError

CHUNK = 8 << 20  # read/stream granularity: large enough for throughput, small for memory
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # NUL and friends: refused by object stores too
BLOB_PREFIX = "artifacts"
MODELS_PREFIX = "models"
CHECKPOINTS_PREFIX = "checkpoints"


class ObjectInfo(NamedTuple):
    """One stored object: its key (relative to the store), size in bytes, and last
    modification time (epoch seconds)."""

    key: str
    size: int
    modified: float


def check_key(key: object) -> str:
    """`key` if it is a safe relative key, else InvalidInputError."""
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"artifact key must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\\" in key or _CONTROL.search(key):
        raise InvalidInputError(
            f"artifact key {key!r} must be a relative POSIX path without control characters"
        )
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidInputError(f"artifact key {key!r} has an empty, '.' or '..' segment")
    try:
        if len(key.encode("utf-8")) > 1024:
            raise InvalidInputError(f"artifact key is longer than 1024 bytes: {key[:60]!r}...")
    except UnicodeEncodeError:
        raise InvalidInputError(f"artifact key {key!r} is not valid UTF-8 text") from None
    return key


def check_digest(digest: object) -> str:
    """`digest` if it is a sha256 hex digest, else InvalidInputError."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidInputError(f"not a sha256 digest: {digest!r}")
    return digest


def blob_key(digest: str) -> str:
    """The key of content-addressed blob `digest` (the one place that spells it)."""
    d = check_digest(digest)
    return f"{BLOB_PREFIX}/{d[:2]}/{d[2:]}"


def model_key(name: str, folder: str | None = None) -> str:
    """The key prefix of model `name`'s versions, or of one version's `folder`."""
    return check_key(f"{MODELS_PREFIX}/{name}" + (f"/{folder}" if folder else ""))


def checkpoint_key(experiment: str, series: str) -> str:
    """The key prefix of a checkpoint series (both parts already made file-name safe)."""
    return check_key(f"{CHECKPOINTS_PREFIX}/{experiment}/{series}")


def digest_of_key(key: str) -> str | None:
    """The digest a blob key stands for, or None for any other key."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == BLOB_PREFIX and len(parts[1]) == 2:
        d = parts[1] + parts[2]
        return d if _DIGEST.match(d) else None
    return None


def sha256_file(path: Path) -> tuple[str, int]:
    """(sha256 hex digest, size) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def tree_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative POSIX name, file) of every regular file under `folder`, sorted."""
    out = []
    for d, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        for n in sorted(names):
            f = Path(d) / n
            if f.is_file() and not f.is_symlink():
                out.append((f.relative_to(folder).as_posix(), f))
    out.sort()
    return out


class ArtifactStore(abc.ABC):
    """A place for artifacts; see the module docstring for the semantics."""

    kind: str = ""  # "local", "s3", "gs", "az"
    location: str = ""  # what users see (a path or URL); never holds a secret

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    # -- primitives ------------------------------------------------------------------------
    @abc.abstractmethod
    def put_file(self, key: str, src: Path, *, if_absent: bool = False) -> bool:
        """Store the file `src` under `key` (streamed; large files in parallel parts).
        Returns False when `if_absent` and the key already existed (nothing written)."""

    @abc.abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> bool:
        """Store the concatenated `chunks` under `key`; as put_file."""

    @abc.abstractmethod
    def get_file(self, key: str, dest: Path) -> int:
        """Write the object to `dest` (atomically) and return its size."""

    @abc.abstractmethod
    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks (for streaming it to a client)."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, or None when there is no such key."""

    def exists(self, key: str) -> bool:
        """Whether `key` holds an object (one request on object storage)."""
        return self.head(key) is not None

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` + "/" (or all, for ""), recursively."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; a key that is already gone is fine."""

    def presign(self, key: str, expires_s: int = 300) -> str | None:
        """A short-lived URL that downloads `key` without credentials, or None where the
        store cannot make one (a local folder)."""
        check_key(key)
        return None

    def local_path(self, key: str) -> Path | None:
        """The file holding `key` when the store is a local folder, else None."""
        return None

    def incomplete_uploads(self) -> list[dict]:
        """Uploads started and never completed or aborted (a process killed mid-upload):
        each {"key", "id", "started"}; `gc` reports and removes them."""
        return []

    def abort_upload(self, key: str, upload_id: str) -> None:  # noqa: B027 - optional
        """Remove the parts of one incomplete upload."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections (the store stays usable; they reopen on demand)."""

    # -- content addressing ----------------------------------------------------------------
    def put_blob(self, src: Path) -> tuple[str, int]:
        """Store file `src` content-addressed; return (sha256, size). Content already
        stored costs one existence check (the digest of an unchanged file is remembered)."""
        from . import hashcache

        src = Path(src)
        known = hashcache.lookup(src)
        if known is not None:
            info = self.head(blob_key(known[0]))
            if info is not None and info.size == known[1]:
                return known
        digest, size = self._put_blob_new(src)
        hashcache.remember(src, digest, size)
        return digest, size

    def _put_blob_new(self, src: Path) -> tuple[str, int]:
        # Hash first (the key must be known before an object upload), then upload with
        # put-if-absent; the upload re-hashes what it sends, so a file changed in between
        # is refused instead of stored under the wrong digest.
        digest, size = sha256_file(src)
        key = blob_key(digest)
        if self.head(key) is not None:
            return digest, size
        h = hashlib.sha256()
        sent = 0

        def chunks() -> Iterator[bytes]:
            nonlocal sent
            with open(src, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    sent += len(chunk)
                    yield chunk
            if h.hexdigest() != digest:
                raise ArtifactIntegrityError(
                    f"{src} changed while it was being stored; log it again"
                )

        self.put_stream(key, chunks(), if_absent=True)
        return digest, sent

    def has_blob(self, digest: str) -> bool:
        """Whether blob `digest` is stored (one existence check)."""
        return self.head(blob_key(digest)) is not None

    def blob_file(self, digest: str) -> Path:
        """A local file holding blob `digest`'s bytes: the stored file itself in a local
        folder, else a verified copy in the read-through cache."""
        key = blob_key(digest)
        local = self.local_path(key)
        if local is not None:
            if not local.is_file():
                raise ArtifactNotFoundError(f"blob {digest[:12]} is missing from {self.location}")
            return local
        from . import cache

        return cache.fetch(self, digest)

    def get_blob(self, digest: str, dest: Path) -> int:
        """Copy blob `digest` to `dest`, verifying its hash; return its size."""
        src = self.blob_file(digest)
        dest = Path(dest)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            got, size = sha256_file(Path(tmp))
            if got != digest:
                raise ArtifactIntegrityError(
                    f"blob {digest[:12]} in {self.location} does not match its digest (got {got[:12]})"
                )
            os.replace(tmp, dest)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return size

    # -- folders ---------------------------------------------------------------------------
    def put_tree(self, prefix: str, folder: Path) -> list[str]:
        """Store every regular file under `folder` as `prefix/<relative name>`; return the
        relative names. Callers write the row that references the tree only after this
        returns, so a crash leaves unreferenced objects (gc finds them), never a reference
        to missing files."""
        check_key(prefix)
        names = []
        for rel, f in tree_files(Path(folder)):
            self.put_file(f"{prefix}/{rel}", f)
            names.append(rel)
        return names

    def get_tree(self, prefix: str, dest: Path) -> list[str]:
        """Download every object under `prefix/` into `dest` (relative names kept)."""
        check_key(prefix)
        dest = Path(dest)
        names = []
        for info in self.list(prefix):
            rel = info.key[len(prefix) + 1 :]
            target = dest / check_key(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.get_file(info.key, target)
            names.append(rel)
        if not names:
            raise ArtifactNotFoundError(f"nothing stored under {prefix!r} in {self.location}")
        return sorted(names)

    def delete_tree(self, prefix: str) -> int:
        """Remove every object under `prefix/`; return how many."""
        check_key(prefix)
        keys = [i.key for i in self.list(prefix)]
        for k in keys:
            self.delete(k)
        return len(keys)

    def tree_local(self, prefix: str) -> Path:
        """A local folder holding the tree `prefix`: the folder itself in a local store, else
        a copy in the read-through cache (refreshed when the stored objects changed)."""
        check_key(prefix)
        local = self.local_path(prefix)
        if local is not None:
            if not local.is_dir():
                raise ArtifactNotFoundError(f"nothing stored under {prefix!r} in {self.location}")
            return local
        from . import cache

        return cache.fetch_tree(self, prefix)
