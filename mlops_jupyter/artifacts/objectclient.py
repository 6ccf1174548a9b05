"""The obstore side of the object-storage artifact store (objectstore.py): opening a client
from each cloud's standard configuration, turning client errors into clear messages that
never hold a secret, and the two adapters that feed uploads (a hashing file reader and a
thread that reads a caller's chunks)."""

from __future__ import annotations

import hashlib
import io
import os
import queue
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStoreError,
    InvalidInputError,
)

HINTS = {
    "s3": "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket policy",
    "gs": "check GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT) and the bucket's IAM",
    "az": "check AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY (or a SAS token)",
}
_SECRET_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
)
_URL = re.compile(r"https?://[^/\s?]+")


def env_float(name: str, default: float, low: float) -> float:
    """A number from the environment (at least `low`), or `default` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return max(low, float(raw))
    except ValueError:
        raise InvalidInputError(f"{name} must be a number, got {raw!r}") from None


def scrub(text: str) -> str:
    """`text` without any secret the environment holds (belt and braces: obstore's
    messages name URLs and paths, not credentials)."""
    for var in _SECRET_VARS:
        val = os.environ.get(var)
        if val and len(val) >= 4:
            text = text.replace(val, "***")
    return re.sub(r"(X-Amz-Signature|X-Amz-Credential|sig|se)=[^&\s]+", r"\1=***", text)


class ClientMixin:
    """Client opening and error messages for ObjectArtifactStore (which sets kind,
    location, bucket, endpoint and retry_s)."""

    kind: str
    location: str
    bucket: str
    endpoint: str
    retry_s: float

    def _open(self) -> Any:
        try:
            from obstore.store import AzureStore, GCSStore, S3Store
        except ImportError:
            raise ArtifactStoreError(
                f"{self.location} needs obstore: pip install 'mlops-jupyter[s3]'"
            ) from None
        retry = {
            "max_retries": 10,
            "retry_timeout": timedelta(seconds=self.retry_s),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=min(5.0, max(0.5, self.retry_s / 4))),
                "base": 2,
            },
        }
        client: dict[str, Any] = {
            "connect_timeout": f"{max(1, min(10, int(self.retry_s)))}s",
            # per request: parts and ranges are a few MB, so this only cuts off a stalled peer
            "timeout": "300s",
        }
        url = self.location
        try:
            if self.kind == "s3":
                return self._open_s3(S3Store, url, client, retry)
            if self.kind == "gs":
                return GCSStore.from_url(url, client_options=client, retry_config=retry)
            emulator = os.environ.get("AZURITE_BLOB_STORAGE_URL", "")
            if emulator.startswith("http://"):
                client["allow_http"] = True
            self.endpoint = emulator
            return AzureStore.from_url(url, client_options=client, retry_config=retry)
        except Exception as e:  # bad configuration: name it, not its values
            raise ArtifactStoreError(
                f"cannot configure {self.location}: {scrub(str(e).splitlines()[0])}"
            ) from None

    def _open_s3(self, S3Store: Any, url: str, client: dict, retry: dict) -> Any:
        config: dict[str, Any] = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            self.endpoint = endpoint.rstrip("/")
            config["endpoint"] = self.endpoint
            # S3-compatible servers (MinIO, SeaweedFS, Ceph) address buckets path-style
            config["virtual_hosted_style_request"] = False
            if self.endpoint.startswith("http://"):
                client["allow_http"] = True
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            config["region"] = region
        elif endpoint:
            config["region"] = "us-east-1"  # S3-compatible servers accept any region
        kwargs: dict[str, Any] = {}
        if os.environ.get("AWS_PROFILE") and not os.environ.get("AWS_ACCESS_KEY_ID"):
            try:
                from obstore.auth.boto3 import Boto3CredentialProvider
            except ImportError:
                raise ArtifactStoreError(
                    f"{self.location}: AWS_PROFILE is set; profiles are read through boto3 "
                    "(pip install boto3), or set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                ) from None
            kwargs["credential_provider"] = Boto3CredentialProvider()
        return S3Store.from_url(
            url, config=config, client_options=client, retry_config=retry, **kwargs
        )

    def _error(self, e: BaseException, what: str, key: str | None) -> ArtifactStoreError:
        """The ArtifactStoreError (or ArtifactNotFoundError) for obstore error `e`."""
        from obstore.exceptions import (
            NotFoundError,
            PermissionDeniedError,
            UnauthenticatedError,
        )

        msg = str(e)
        where = f"{key!r} in {self.location}" if key else self.location
        container = "container" if self.kind == "az" else "bucket"
        if "NoSuchBucket" in msg or "ContainerNotFound" in msg:
            return ArtifactStoreError(
                f"{container} {self.bucket!r} does not exist ({self.location}); create it first"
            )
        if isinstance(e, (NotFoundError, FileNotFoundError)):  # obstore raises the builtin
            return ArtifactNotFoundError(f"no object {where}")
        denied = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403 Forbidden")
        if isinstance(e, (PermissionDeniedError, UnauthenticatedError)) or any(
            d in msg for d in denied
        ):
            return ArtifactStoreError(
                f"access denied to {self.location} (cannot {what} {key!r}): {HINTS[self.kind]}"
                if key
                else f"access denied to {self.location}: {HINTS[self.kind]}"
            )
        if "error sending request" in msg or "Connect" in msg or "dns error" in msg:
            m = _URL.search(msg)
            endpoint = m.group(0) if m else (self.endpoint or f"the {self.kind} endpoint")
            return ArtifactStoreError(
                f"cannot reach endpoint {endpoint} to {what} {where} "
                f"(gave up after {self.retry_s:g} s of retries)"
            )
        first = scrub(msg.splitlines()[0] if msg else type(e).__name__)
        return ArtifactStoreError(f"cannot {what} {where}: {first[:500]}")


class HashingReader:
    """A file read by obstore part by part, hashed on the way: at its end, bytes that do not
    hash to `digest` raise (and the upload is aborted)."""

    def __init__(self, f: Any, digest: str, src: Path) -> None:
        self.f, self.digest, self.src = f, digest, src
        self.h = hashlib.sha256()
        self.size = 0
        self.failure: BaseException | None = None

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        self.size += len(data)
        if not data and self.h.hexdigest() != self.digest:
            self.failure = ArtifactIntegrityError(
                f"{self.src} changed while it was being stored; log it again"
            )
            raise self.failure
        return data

    def seek(self, offset: int, whence: int = 0) -> int:  # obstore asks for it, never calls it
        if (offset, whence) != (0, 1):
            raise io.UnsupportedOperation("an upload is read once, front to back")
        return self.f.tell()

    def tell(self) -> int:
        return self.f.tell()


class Pump:
    """The caller's chunks, read in a thread of their own and handed over through a short
    queue. obstore iterates a sync iterator inside its async runtime, where a call into
    obstore (chunks read from another bucket: `put_stream(k, other.iter_bytes(k))`) would
    panic; in this thread it is an ordinary call. Two chunks in flight bound the memory."""

    _END = object()

    def __init__(self, first: list[bytes], rest: Iterator[bytes]) -> None:
        self.failure: BaseException | None = None
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._stopped = threading.Event()
        self._first, self._rest = first, rest
        self._t = threading.Thread(target=self._run, name="artifact-upload-source", daemon=True)
        self._t.start()

    def _hand(self, item: object) -> bool:
        while not self._stopped.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while self._first:
                if not self._hand(self._first.pop(0)):
                    return
            for c in self._rest:
                if not self._hand(bytes(c)):
                    return
        except BaseException as e:
            self.failure = e
        self._hand(self._END)

    def chunks(self) -> Iterator[bytes]:
        while True:
            item = self._q.get()
            if item is self._END:
                if self.failure is not None:
                    raise RuntimeError("the source of the upload failed")  # aborts it
                return
            yield item

    def stop(self) -> None:
        self._stopped.set()
        self._t.join(timeout=5)


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
