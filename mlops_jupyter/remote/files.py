"""Run events and artifacts of a run logged through a tracking server (see
trackserver/run_files.py for the routes).

- `add_event` is sent at once (it returns the event's id, as locally). The run's queued
  points and end go first, so the server sees them in the order they happened. Events are
  not spooled: while the server cannot be reached (or this process still has batches
  waiting in its spool) the call raises a StoreError naming the outage. Each event carries
  a random key, so a request sent twice adds it once.
- `log_artifact` hashes the files locally (digests of unchanged files are remembered),
  asks the server which contents it lacks, streams only those, checks that the sha256 the
  server reports equals the local one, then records the files all at once. Every step can
  be repeated, so the client retries an unreachable server for up to RETRY_S seconds.
- `artifact_path` downloads into the local read-through cache (artifacts/cache.py) and
  verifies the digest; a cached copy is used as is."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from ..artifacts import hashcache
from ..artifacts.base import ArtifactStore, ObjectInfo, check_key, digest_of_key, sha256_file
from ..errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    InvalidInputError,
    RunNotFoundError,
    StoreError,
)
from ..tracking.artifacts import artifact_files
from .client import TIMEOUT_S, ServerRefused, ServerUnavailable, ssl_context, token

if TYPE_CHECKING:
    from .api import RemoteRun, RemoteStore

RETRY_S = 30.0  # an upload or download retries an unreachable server this long
_BLOCK = 1 << 20
_MIN_RATE = 10 << 20  # bytes/s the server is assumed to store at, at worst
T = TypeVar("T")


def _run_path(uid: str, tail: str) -> str:
    return f"/api/v1/runs/{quote(uid, safe='')}/{tail}"


def token_refused(shown: str, detail: object) -> StoreError:
    """The error for a 401 answer: the server does not accept MLOPS_JUPYTER_TOKEN."""
    return StoreError(
        f"the tracking server {shown} refused the token in MLOPS_JUPYTER_TOKEN "
        f"(missing, unknown, revoked or expired): {detail}"
    )


def _refused(store: RemoteStore, e: ServerRefused, what: str) -> Exception:
    """A clear error for a 4xx answer (never the token)."""
    shown = store.client.shown
    if e.status == 401:
        return token_refused(shown, e)
    if e.status == 403:
        return StoreError(
            f"the token in MLOPS_JUPYTER_TOKEN may not {what} on the tracking server {shown} "
            f"(a read token? this needs scope write): {e}"
        )
    if e.status == 404:
        return (ArtifactNotFoundError if "artifact" in str(e) else RunNotFoundError)(str(e))
    return InvalidInputError(f"cannot {what}: {e}")  # 400, 413 (over the upload limit)


def _retrying(store: RemoteStore, what: str, fn: Callable[[], T], wait: float) -> T:
    """`fn()` again while the server cannot be reached (up to `wait` s); then a StoreError."""
    deadline = time.monotonic() + wait
    delay = 0.2
    while True:
        try:
            return fn()
        except ServerUnavailable as e:
            if time.monotonic() + delay > deadline:
                raise StoreError(
                    f"cannot {what}: the tracking server {store.client.shown} could not be "
                    f"reached for {wait:.0f} s ({e}); nothing was recorded, try again later"
                ) from None
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def call(
    store: RemoteStore,
    method: str,
    path: str,
    body: Any,
    what: str,
    error: Callable[[RemoteStore, ServerRefused, str], Exception] | None = None,
    retry: bool = True,
) -> Any:
    """One request of a domain client: a refusal becomes `error(store, e, what)` (default:
    the token and scope messages of _refused); retried while the server cannot be reached
    when `retry` (idempotent routes), else sent once and a lost answer says so."""
    to_error = error or _refused

    def once() -> Any:
        try:
            return store.client.request(method, path, body)
        except ServerRefused as e:
            raise to_error(store, e, what) from None

    if not retry:
        try:
            return once()
        except ServerUnavailable as e:
            raise StoreError(f"cannot {what}: {e}; it may or may not have been recorded") from None
    return _retrying(store, what, once, RETRY_S)


# -- events ----------------------------------------------------------------------------


def add_event(
    run: RemoteRun,
    kind: str,
    message: str,
    level: str = "info",
    data: dict | None = None,
    start: float | None = None,
    end: float | None = None,
) -> int:
    """Run.add_event through the server; returns the event's id."""
    if not isinstance(kind, str) or not kind.strip():
        raise InvalidInputError(f"event kind must be a non-empty string, got {kind!r}")
    if not isinstance(message, str) or not isinstance(level, str):
        raise InvalidInputError("event message and level must be strings")
    if data is not None and not isinstance(data, dict):
        raise InvalidInputError(f"event data must be a dict, got {type(data).__name__}")
    store = run.store
    body: dict[str, Any] = {
        "kind": kind,
        "message": message,
        "level": level,
        "start": time.time() if start is None else start,
        "end": end,
        "key": uuid.uuid4().hex,
    }
    if data is not None:
        try:  # stored as JSON, values that are not JSON-able as their str() (as locally)
            body["data"] = json.loads(json.dumps(data, default=str, allow_nan=False))
        except ValueError as e:
            raise InvalidInputError(f"event data cannot be stored as JSON: {e}") from None
    # what was logged before this event (points, the run's end) reaches the server first
    if not run.deliver_now():
        raise StoreError(
            f"cannot add the event {kind!r}: the tracking server {store.client.shown} is "
            "unreachable or refuses the token, and earlier batches of this process wait in "
            "its spool file. Run events are not spooled; add it again once the server is back"
        )
    try:
        out = store.client.request("POST", _run_path(run.id, "events"), body)
    except ServerRefused as e:
        raise _refused(store, e, "add run events") from None
    except ServerUnavailable as e:
        raise StoreError(
            f"cannot add the event {kind!r}: {e}. Run events are not spooled; add it again "
            "once the server is back"
        ) from None
    return int(out["id"])


# -- uploads ---------------------------------------------------------------------------


def _connection(url: str, timeout: float = TIMEOUT_S) -> tuple[http.client.HTTPConnection, str]:
    """A fresh connection to the server and its path prefix (one per transfer: a long
    upload does not hold the shared client's connection)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl_context(), blocksize=_BLOCK
        )
    else:
        conn = http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=timeout, blocksize=_BLOCK
        )
    return conn, parts.path.rstrip("/")


def _headers(**extra: str) -> dict[str, str]:
    h = {"Accept": "application/json", **extra}
    tok = token()
    if tok:
        h["Authorization"] = f"Bearer {tok}"
    return h


def _answer(shown: str, status: int, text: bytes) -> Any:
    """The JSON answer, or ServerUnavailable (5xx) / ServerRefused (4xx)."""
    try:
        out = json.loads(text) if text else None
    except ValueError:
        out = None
    if status >= 500:
        raise ServerUnavailable(f"tracking server {shown} answered {status}")
    if status >= 400:
        code = out.get("error_code", "") if isinstance(out, dict) else ""
        msg = out.get("message", "") if isinstance(out, dict) else ""
        raise ServerRefused(status, code, f"tracking server {shown}: {status} {msg}")
    return out


def download(
    remote: RemoteStore,
    path: str,
    dest: Path,
    what: str,
    *,
    sha256: Callable[[http.client.HTTPResponse], str | None] | None = None,
) -> int:
    """GET `path` (under the server's URL) into `dest` through a temporary file beside it;
    returns the size. A non-200 answer raises through `_answer` (ServerRefused for 4xx); a
    broken or short body (against Content-Length) is ServerUnavailable, so callers retry.
    `sha256(resp)`: the digest the body must have (checked; ArtifactIntegrityError
    otherwise), None for no check."""
    conn, prefix = _connection(remote.url)
    shown = remote.client.shown
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    size, h = 0, hashlib.sha256()
    try:
        try:
            conn.request("GET", prefix + path, None, _headers())
            resp = conn.getresponse()
            if resp.status != 200:
                _answer(shown, resp.status, resp.read())
            want = sha256(resp) if sha256 is not None else None
            length = int(resp.getheader("Content-Length", "-1"))
            with os.fdopen(fd, "wb") as f:
                fd = -1
                while chunk := resp.read(_BLOCK):
                    f.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
        except (OSError, http.client.HTTPException) as e:
            raise ServerUnavailable(
                f"tracking server {shown}: download of {what} broke off ({type(e).__name__}: {e})"
            ) from None
        if length >= 0 and size != length:
            raise ServerUnavailable(f"tracking server {shown}: download of {what} cut short")
        if want is not None and h.hexdigest() != want:
            raise ArtifactIntegrityError(
                f"{what} from {shown} has sha256 {h.hexdigest()}, not {want}: not stored locally"
            )
        os.replace(tmp, dest)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
        conn.close()
    return size


def _chunks(path: Path, size: int) -> Iterator[bytes]:
    # exactly `size` bytes: a file that grows meanwhile cannot overrun Content-Length (the
    # server's digest check refuses a file that changed)
    left = size
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(min(_BLOCK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk


def _put_blob(
    store: RemoteStore, uid: str, path: Path, digest: str, size: int, route: str | None = None
) -> None:
    """Stream one file to PUT .../blobs/{digest} (of run `uid`, or to `route`: the
    registry's uploads); check the sha256 the server reports."""
    # the answer comes once the server stored the file (to object storage, maybe): give it
    # time in proportion to the size, so a slow store is not mistaken for an outage
    conn, prefix = _connection(store.url, TIMEOUT_S + size / _MIN_RATE)
    shown = store.client.shown
    headers = _headers(**{"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    try:
        try:
            where = route or _run_path(uid, f"blobs/{digest}")
            conn.request("PUT", prefix + where, _chunks(path, size), headers)
            resp = conn.getresponse()
        except ssl.SSLCertVerificationError as e:
            raise StoreError(f"tracking server {shown}: TLS: {e}") from None
        except (OSError, http.client.HTTPException) as e:
            # the server may have answered early (a refused token, 413) and closed
            try:
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException):
                raise ServerUnavailable(
                    f"tracking server {shown} cannot be reached ({type(e).__name__}: {e})"
                ) from None
        try:
            out = _answer(shown, resp.status, resp.read())
        except (OSError, http.client.HTTPException) as e:
            raise ServerUnavailable(f"tracking server {shown}: {type(e).__name__}: {e}") from None
    finally:
        conn.close()
    if not isinstance(out, dict) or out.get("sha256") != digest or out.get("size") != size:
        raise ArtifactIntegrityError(
            f"the tracking server {shown} stored {out!r} for {path} (sha256 {digest}, "
            f"{size} bytes): the upload was not stored intact"
        )


def _digest(path: Path) -> tuple[str, int]:
    known = hashcache.lookup(path)
    if known is not None:
        return known
    digest, size = sha256_file(path)
    hashcache.remember(path, digest, size)
    return digest, size


def log_artifact(run: RemoteRun, path: str | os.PathLike, name: str | None = None) -> str:
    """Run.log_artifact through the server; returns the artifact name."""
    # a remote client has no store folder to keep out: /dev/null contains nothing
    files, base = artifact_files(path, name, Path(os.devnull))
    store = run.store
    entries = []
    for n, f in files:
        try:
            check_key(n)
        except InvalidInputError as e:
            raise InvalidInputError(
                f"artifact name {n!r} cannot be stored through a tracking server: {e}"
            ) from None
        entries.append((n, f, *_digest(f)))
    if not entries:  # an empty folder: nothing to record, as locally
        return base
    body = {"files": [{"name": n, "sha256": d, "size": s} for n, _, d, s in entries]}
    what = f"log artifact {base!r}"

    def step() -> dict:
        try:
            out = store.client.request("POST", _run_path(run.id, "artifacts"), body)
            for d in out.get("missing", []):
                f, d, s = next((f, dd, s) for _, f, dd, s in entries if dd == d)
                if _digest(f) != (d, s):
                    raise ArtifactIntegrityError(f"{f} changed while it was being logged")
                _put_blob(store, run.id, f, d, s)
            if out.get("missing"):
                out = store.client.request("POST", _run_path(run.id, "artifacts"), body)
        except ServerRefused as e:
            if e.code == "DIGEST_MISMATCH":
                raise ArtifactIntegrityError(
                    f"a file changed while it was being logged; log it again ({e})"
                ) from None
            raise _refused(store, e, what) from None
        return out

    out = _retrying(store, what, step, RETRY_S)
    got = {(r["name"], r["sha256"], r["size"]) for r in out.get("recorded", [])}
    want = {(n, d, s) for n, _, d, s in entries}
    if out.get("missing") or got != want:
        raise ArtifactIntegrityError(
            f"the tracking server {store.client.shown} did not record {what} as sent "
            f"(missing: {out.get('missing')})"
        )
    return base


# -- downloads -------------------------------------------------------------------------


class _ServerFile(ArtifactStore):
    """One run's artifact on the server, as the read side of an artifact store: what the
    read-through cache (artifacts/cache.py) downloads from and verifies."""

    kind = "server"

    def __init__(self, store: RemoteStore, uid: str, name: str) -> None:
        self.remote, self.uid, self.name = store, uid, name
        self.location = f"{store.client.shown} (run {uid})"

    def get_file(self, key: str, dest: Path) -> int:
        digest = digest_of_key(key)
        q = urlencode({"name": self.name})

        def stored(resp: http.client.HTTPResponse) -> str:
            if resp.getheader("X-Content-SHA256") != digest:
                raise ArtifactIntegrityError(
                    f"artifact {self.name!r} changed on {self.location} while it was read"
                )
            return digest

        path = _run_path(self.uid, f"artifact?{q}")
        return download(self.remote, path, Path(dest), repr(self.name), sha256=stored)

    def _read_only(self, *a: Any, **kw: Any) -> Any:
        raise StoreError("artifacts of a tracking server are written with log_artifact")

    put_file = put_stream = iter_bytes = delete = _read_only

    def head(self, key: str) -> ObjectInfo | None:
        return None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(())


def artifacts(store: RemoteStore, ref: str) -> list[dict[str, Any]]:
    """The artifacts of run `ref` (id, id prefix or name): {name, sha256, size, created}."""
    try:
        return _list(store, ref)
    except ServerRefused as e:
        raise _refused(store, e, "list artifacts") from None


def artifact_path(store: RemoteStore, ref: str, name: str) -> Path:
    """A verified local copy (in the read-through cache) of artifact `name` of run `ref`."""
    from ..artifacts import cache

    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"artifact name must be a non-empty string, got {name!r}")
    what = f"download artifact {name!r}"

    def step() -> Path:
        try:
            arts = _list(store, ref)
            d = next((a["sha256"] for a in arts if a["name"] == name), None)
            if d is None:
                raise ArtifactNotFoundError(f"run {ref} has no artifact {name!r}")
            return cache.fetch(_ServerFile(store, ref, name), d)
        except ServerRefused as e:
            raise _refused(store, e, what) from None

    return _retrying(store, what, step, RETRY_S)


def _list(store: RemoteStore, ref: str) -> list[dict[str, Any]]:
    return store.client.request("GET", _run_path(ref, "artifacts"))["artifacts"]
