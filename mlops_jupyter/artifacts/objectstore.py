"""Object storage as an artifact store: S3 and S3-compatible servers (MinIO, SeaweedFS...),
Google Cloud Storage and Azure Blob, all through obstore (the Rust `object_store` crate).

`ObjectArtifactStore("s3://bucket/prefix")` (also `gs://bucket/prefix`,
`az://container/prefix`, `azure://`, `abfs://`) keeps contract key `k` at `prefix/k`.
Credentials, region and endpoint come from each cloud's standard configuration (for S3 the
AWS_* variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or
AWS_DEFAULT_REGION, AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3, instance and container roles;
AWS_PROFILE through boto3 when it is installed). A custom endpoint is addressed path-style,
and plain http is allowed when the endpoint says http://. Nothing secret is kept in
`location` or put in a message.

Writes:
- an object up to the part size (MLOPS_JUPYTER_ARTIFACTS_PART_MB, default 8) is one PUT; with
  `if_absent` it is sent with `If-None-Match: *` and a 412 (409 on Azure) means "was there";
- a larger one is a multipart upload with parallel parts (MLOPS_JUPYTER_ARTIFACTS_CONCURRENCY,
  default 8), streamed from the file or iterator: at most about part size x concurrency bytes
  are in memory. obstore sends a conditional put only as a single request (it would hold the
  whole file in memory), so put-if-absent of a large object is an existence check followed
  by the multipart upload. Two writers racing on the same content-addressed key both upload
  and the second completion replaces the first with the same bytes: harmless, and the only
  cost is one extra upload. obstore aborts the multipart upload on any error (nothing
  becomes visible under the key).
- obstore exposes neither the upload id of a multipart upload nor a listing of incomplete
  uploads, so before each multipart upload a small marker object
  `.mlops-uploads/<id>.json` (key, started, host, pid) is written and it is deleted once the
  upload completed or was aborted. A process killed mid-upload leaves its marker:
  `incomplete_uploads()` lists the markers whose process is gone (same host, pid not alive;
  another host: older than a day) and `abort_upload()` removes the marker. The parts the
  killed upload left on the server are invisible and cannot be named through obstore: a
  bucket lifecycle rule (AbortIncompleteMultipartUpload after a day) removes them; see
  docs/artifacts.md.

Blobs (`put_blob`) go up through a reader that hashes what it sends, so a file changed
after it was hashed fails before the upload completes. Measured on SeaweedFS with a 2 GB
file: peak RSS over the process baseline 76 MB (put_file), 84 MB (put_blob), 83 MB
(get_file), at the default 8 MB parts x 8.

obstore is not fork-safe (its runtime threads do not survive fork()): a process forked after
its parent used object storage gets a clear error instead of hanging; use 'spawn' or
'forkserver' for workers. Client set-up and error messages live in objectclient.py.

Reads: `get_file` streams small objects and fetches large ones in parallel ranged reads
into a temp file beside the destination, renamed when whole. Errors are ArtifactStoreError
naming the store and key: "bucket X does not exist", "access denied to s3://X (check ...)",
"cannot reach endpoint http://...", after retries with exponential backoff bounded in total
by MLOPS_JUPYTER_ARTIFACTS_RETRY_S (default 60 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStoreError,
    InvalidInputError,
    MlopsJupyterError,
)
from .base import CHUNK, ArtifactStore, ObjectInfo, blob_key, check_key, sha256_file
from .objectclient import ClientMixin, HashingReader, Pump, alive, env_float

MARKERS = ".mlops-uploads"
_STALE_OTHER_HOST_S = 24 * 3600
_runtime_pid: int | None = None  # the process whose obstore runtime is running
_KINDS = {"s3": "s3", "gs": "gs", "az": "az", "azure": "az", "abfs": "az", "abfss": "az"}


class ObjectArtifactStore(ClientMixin, ArtifactStore):
    """Artifacts in a bucket (S3, GCS) or container (Azure) under a prefix."""

    def __init__(
        self,
        url: str,
        *,
        part_size: int | None = None,
        concurrency: int | None = None,
        retry_s: float | None = None,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise InvalidInputError(f"not an object-storage URL: {url!r}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _KINDS:
            raise InvalidInputError(
                f"unsupported artifact location {url!r}: use s3://, gs:// or az://"
            )
        if parts.username or parts.password or parts.query:
            # credentials belong in the environment, never in a URL that is shown and stored
            raise InvalidInputError(
                "an object-storage URL must not carry credentials or options; set them in "
                "the environment (AWS_*, GOOGLE_*, AZURE_*)"
            )
        self.kind = _KINDS[scheme]
        self.bucket = parts.hostname or ""
        if not self.bucket:
            raise InvalidInputError(f"artifact location {url!r} names no bucket")
        self.prefix = parts.path.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.location = f"{scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        mb = env_float("MLOPS_JUPYTER_ARTIFACTS_PART_MB", 8.0, 5.0)
        self.part_size = int(part_size or mb * (1 << 20))
        self.concurrency = int(
            concurrency or env_float("MLOPS_JUPYTER_ARTIFACTS_CONCURRENCY", 8, 1)
        )
        self.retry_s = float(retry_s or env_float("MLOPS_JUPYTER_ARTIFACTS_RETRY_S", 60.0, 0.1))
        self.endpoint = ""
        self._store: Any = None
        self._lock = threading.Lock()
        self._bucket_checked = False

    # -- the obstore client ----------------------------------------------------------------
    def _client(self) -> Any:
        global _runtime_pid
        pid = os.getpid()
        if _runtime_pid is not None and _runtime_pid != pid:
            # obstore's runtime threads do not survive fork(): a call would hang for ever
            raise ArtifactStoreError(
                f"{self.location}: object storage cannot be used in a process forked after "
                "the parent used it (obstore is not fork-safe); start worker processes with "
                "multiprocessing's 'spawn' or 'forkserver' method"
            )
        with self._lock:
            if self._store is None:
                self._store = self._open()
            _runtime_pid = pid
            return self._store

    def close(self) -> None:
        with self._lock:
            self._store = None  # obstore closes its connection pool when dropped

    # -- errors -------------------------------------------------------------------------------
    def _call(self, what: str, key: str | None, fn, *args, **kwargs):
        from obstore.exceptions import BaseError

        try:
            return fn(*args, **kwargs)
        except (BaseError, FileNotFoundError, PermissionError, ConnectionError, TimeoutError) as e:
            raise self._error(e, what, key) from e
        except ValueError as e:
            if "parse path" in str(e):  # a key the client refuses (check_key is stricter)
                raise InvalidInputError(f"artifact key {key!r} is not valid here: {e}") from None
            raise

    def _check_bucket(self) -> None:
        # HEAD of a key in a missing bucket is a bodiless 404, the same as a missing key:
        # one listing (once per store) tells them apart
        if self._bucket_checked:
            return
        import obstore

        stream = self._call("list", None, obstore.list, self._client(), None, chunk_size=1)
        with contextlib.suppress(StopIteration):
            self._call("list", None, next, iter(stream))
        self._bucket_checked = True

    # -- writes ---------------------------------------------------------------------------------
    def _put_small(self, key: str, data: bytes, if_absent: bool) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(
                self._client(),
                key,
                data,
                mode="create" if if_absent else "overwrite",
                use_multipart=False,
            )
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as e:
            raise self._wrap(e, "write", key) from e
        self._bucket_checked = True
        return True

    def _wrap(self, e: BaseException, what: str, key: str) -> BaseException:
        from obstore.exceptions import BaseError

        if isinstance(e, MlopsJupyterError):
            return e
        if isinstance(e, (BaseError, FileNotFoundError, PermissionError, ConnectionError)):
            return self._error(e, what, key)
        return e

    def _put_multipart(self, key: str, source: Any) -> None:
        """Upload `source` (a Path or an iterator of bytes) as a multipart upload, with a
        marker object for as long as it is in progress."""
        import obstore

        marker = self._write_marker(key)
        try:
            obstore.put(
                self._client(),
                key,
                source,
                use_multipart=True,
                chunk_size=self.part_size,
                max_concurrency=self.concurrency,
            )
        except BaseException as e:
            # obstore aborted the upload (or tried: with the server gone the marker stays
            # and incomplete_uploads() reports it)
            self._drop_marker(marker)
            raise self._wrap(e, "write", key) from e
        self._drop_marker(marker)
        self._bucket_checked = True

    def put_file(self, key: str, src: Path, *, if_absent: bool = False) -> bool:
        check_key(key)
        src = Path(src)
        try:
            size = src.stat().st_size
        except OSError as e:
            raise ArtifactStoreError(f"cannot read {src}: {e.strerror or e}") from e
        if size <= self.part_size:
            return self._put_small(key, src.read_bytes(), if_absent)
        if if_absent and self.head(key) is not None:
            return False
        self._put_multipart(key, src)
        return True

    def put_stream(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> bool:
        check_key(key)
        it = iter(chunks)
        head: list[bytes] = []
        held = 0
        for chunk in it:
            head.append(bytes(chunk))
            held += len(chunk)
            if held > self.part_size:
                break
        else:
            return self._put_small(key, b"".join(head), if_absent)
        if if_absent and self.head(key) is not None:
            return False
        pump = Pump(head, it)
        try:
            self._put_multipart(key, pump.chunks())
        except BaseException:
            # an error raised by the caller's iterator (a file changed while being hashed)
            # aborted the upload and is re-raised as itself, not as a client error
            if pump.failure is not None:
                raise pump.failure from None
            raise
        finally:
            pump.stop()
        return True

    def _put_blob_new(self, src: Path) -> tuple[str, int]:
        # Hash first (the key must be known before the upload), then send the file through
        # a reader that hashes what it sends: a file changed in between fails at its last
        # read, before the upload completes, so nothing is stored under a wrong digest.
        # Reading the file straight into obstore's parts keeps memory at parts in flight.
        digest, size = sha256_file(src)
        key = blob_key(digest)
        if self.head(key) is not None:
            return digest, size
        with open(src, "rb") as f:
            reader = HashingReader(f, digest, src)
            if size <= self.part_size:
                data = reader.read(size + 1)
                if reader.read(1):  # end of file checks the digest; more bytes: it grew
                    raise ArtifactIntegrityError(f"{src} changed while it was being stored")
                self._put_small(key, data, if_absent=True)
            else:
                try:
                    self._put_multipart(key, reader)
                except BaseException:
                    if reader.failure is not None:
                        raise reader.failure from None
                    raise
        return digest, reader.size

    # -- upload markers -------------------------------------------------------------------------
    def _write_marker(self, key: str) -> str:
        import obstore

        uid = uuid.uuid4().hex
        body = {
            "key": key,
            "id": uid,
            "started": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        mkey = f"{MARKERS}/{uid}.json"
        self._call("write", key, obstore.put, self._client(), mkey, json.dumps(body).encode())
        return mkey

    def _drop_marker(self, mkey: str) -> None:
        import obstore

        with contextlib.suppress(Exception):
            obstore.delete(self._client(), mkey)

    def incomplete_uploads(self) -> list[dict]:
        out = []
        host = socket.gethostname()
        for meta in self._metas(MARKERS):
            info = self._read_marker(meta["path"])
            if info is None:
                continue  # finished meanwhile, or not one of ours
            if info.get("host") == host:
                if alive(info["pid"]):
                    continue  # an upload in progress
            elif time.time() - info["started"] < _STALE_OTHER_HOST_S:
                continue  # another machine's: maybe still running
            out.append(info)
        return sorted(out, key=lambda i: i["started"])

    def _read_marker(self, mkey: str) -> dict | None:
        import obstore

        try:
            raw = self._call("read", mkey, obstore.get, self._client(), mkey)
            info = json.loads(bytes(raw.bytes()))
            info["started"] = float(info["started"])
            info["pid"] = int(info["pid"])
            if not isinstance(info["key"], str) or not isinstance(info["id"], str):
                return None
        except (ArtifactNotFoundError, ValueError, KeyError, TypeError):
            return None
        return info

    def abort_upload(self, key: str, upload_id: str) -> None:
        import obstore

        if not re.fullmatch(r"[0-9a-f]{32}", str(upload_id)):
            raise InvalidInputError(f"not an upload id: {upload_id!r}")
        self._call("delete", key, obstore.delete, self._client(), f"{MARKERS}/{upload_id}.json")

    # -- reads ----------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo | None:
        import obstore

        check_key(key)
        try:
            meta = self._call("read", key, obstore.head, self._client(), key)
        except ArtifactNotFoundError:
            self._check_bucket()
            return None
        self._bucket_checked = True
        return ObjectInfo(key, int(meta["size"]), meta["last_modified"].timestamp())

    def get_file(self, key: str, dest: Path) -> int:
        check_key(key)
        dest = Path(dest)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                res = self._get(key)
                size = int(res.meta["size"])
                if size <= self.part_size:
                    for chunk in res.stream(min_chunk_size=CHUNK):
                        out.write(chunk)
                else:
                    del res  # the ranged reads below replace the open stream
                    out.truncate(size)
                    self._ranged(key, size, out.fileno())
            got = os.path.getsize(tmp)
            if got != size:
                raise ArtifactStoreError(
                    f"download of {key!r} from {self.location} ended early ({got} of {size} bytes)"
                )
            os.replace(tmp, dest)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._wrap(e, "read", key) from e
        return size

    def _get(self, key: str) -> Any:
        import obstore

        try:
            return self._call("read", key, obstore.get, self._client(), key)
        except ArtifactNotFoundError:
            self._check_bucket()
            raise

    def _ranged(self, key: str, size: int, fd: int) -> None:
        import obstore

        store = self._client()
        starts = list(range(0, size, self.part_size))

        def one(start: int) -> None:
            end = min(size, start + self.part_size)
            data = self._call("read", key, obstore.get_range, store, key, start=start, end=end)
            view = memoryview(data)
            written = 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], start + written)

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(starts))) as pool:
            for f in [pool.submit(one, s) for s in starts]:
                f.result()

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        check_key(key)
        res = self._get(key)
        stream = res.stream(min_chunk_size=CHUNK)

        def gen() -> Iterator[bytes]:
            it = iter(stream)
            while True:
                try:
                    chunk = self._call("read", key, next, it)
                except StopIteration:
                    return
                yield bytes(chunk)

        return gen()

    def _metas(self, prefix: str | None) -> Iterator[dict]:
        """obstore's object metadata under `prefix`, errors turned into ours."""
        import obstore

        stream = self._call("list", prefix, obstore.list, self._client(), prefix)
        it = iter(stream)
        while True:
            try:
                batch = self._call("list", prefix, next, it)
            except StopIteration:
                return
            self._bucket_checked = True
            yield from batch

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if prefix:
            check_key(prefix)
        for meta in self._metas(prefix or None):
            key = meta["path"]
            if key.startswith(f"{MARKERS}/"):
                continue  # the store's own upload markers
            yield ObjectInfo(key, int(meta["size"]), meta["last_modified"].timestamp())

    def delete(self, key: str) -> None:
        import obstore

        check_key(key)
        try:
            self._call("delete", key, obstore.delete, self._client(), key)
        except ArtifactNotFoundError:
            return

    def presign(self, key: str, expires_s: int = 300) -> str | None:
        import obstore
        from obstore.exceptions import NotSupportedError

        check_key(key)
        if not isinstance(expires_s, int) or not 1 <= expires_s <= 7 * 24 * 3600:
            raise InvalidInputError(f"expires_s must be 1..604800 seconds, got {expires_s!r}")
        try:
            return self._call(
                "sign", key, obstore.sign, self._client(), "GET", key, timedelta(seconds=expires_s)
            )
        except ArtifactStoreError as e:
            if isinstance(e.__cause__, NotSupportedError):
                return None  # credentials that cannot sign (e.g. Azure without an account key)
            raise
