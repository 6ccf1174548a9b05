"""Download route of run artifacts:

    GET /mlops/api/v1/runs/{run}/artifacts/{name}[?redirect=1]

streams the stored bytes (Content-Length, `Content-Disposition: attachment`, a Content-Type
that a browser never runs) from the artifact store, a folder or object storage; with
`?redirect=1` on object storage it answers 302 to a presigned URL valid for a few minutes.
Only names in that run's artifact rows are served, so a URL never reaches another run's
files or any path. The hash is checked while streaming: when the stored bytes no longer
match the digest the connection is cut before the last chunk (a file of one chunk gets a
500 JSON answer instead), so a client never gets a complete-looking wrong file."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import tornado.web

from ..artifacts.base import blob_key
from ..errors import ArtifactNotFoundError, InvalidInputError, MlopsJupyterError, RunNotFoundError
from ..store import artifact_refs as refs
from .handlers import BaseHandler, _pool

log = logging.getLogger(__name__)
PRESIGN_S = 300
# types a browser shows or saves but never runs as a page or script; others are octet-stream
_SAFE_TYPES = {
    "text/plain",
    "text/csv",
    "application/json",
    "application/pdf",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "audio/wav",
    "audio/x-wav",
    "audio/mpeg",
    "video/mp4",
}


def safe_content_type(name: str) -> str:
    """The Content-Type to send for an artifact called `name`."""
    guess, enc = mimetypes.guess_type(name, strict=False)
    if enc is None and guess in _SAFE_TYPES:
        return guess
    return "application/octet-stream"


def content_disposition(name: str) -> str:
    """`attachment` with the base name: an ASCII fallback and the RFC 5987 UTF-8 form."""
    base = name.rsplit("/", 1)[-1] or "artifact"
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in base)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base, safe='')}"


class ArtifactDownload(BaseHandler):
    @tornado.web.authenticated
    async def get(self, ref: str, name: str) -> None:
        redirect = self.get_query_argument("redirect", "") in ("1", "true", "yes")

        def find() -> tuple[dict[str, Any], Any, str | None]:
            st = self.store()
            rid = self.rid(ref)
            row = refs.run_artifact(st, rid, name)
            if row is None:
                raise RunNotFoundError(f"run {ref!r} has no artifact {name!r}")
            a = st.artifacts
            key = blob_key(row["digest"])
            if redirect:
                url = a.presign(key, PRESIGN_S)
                if url is not None:
                    return row, a, url
            info = a.head(key)
            if info is None:
                raise ArtifactNotFoundError(
                    f"the stored file of artifact {name!r} is missing from {a.location}"
                )
            if info.size != row["size"]:
                raise MlopsJupyterError(
                    f"the stored file of artifact {name!r} has {info.size} bytes, "
                    f"not the {row['size']} recorded: it was changed; refusing it"
                )
            return row, a, None

        loop = asyncio.get_running_loop()
        try:
            row, a, url = await loop.run_in_executor(_pool, find)
        except InvalidInputError as e:
            return self.fail(400, str(e))
        except (RunNotFoundError, ArtifactNotFoundError) as e:
            return self.fail(404, str(e))
        except MlopsJupyterError as e:
            return self.fail(500, str(e))
        except Exception as e:  # a bug: still a JSON answer, with the details in the log
            log.exception("mlops: %s failed", self.request.path)
            return self.fail(500, f"internal error: {type(e).__name__}: {e}")
        self.set_header("Cache-Control", "private, no-store")
        if url is not None:
            self.redirect(url, status=302)
            return
        await self._stream(row, a, loop)

    async def _stream(self, row: dict[str, Any], a: Any, loop: asyncio.AbstractEventLoop) -> None:
        try:
            chunks: Iterator[bytes] = await loop.run_in_executor(
                _pool, a.iter_bytes, blob_key(row["digest"])
            )
        except ArtifactNotFoundError as e:
            return self.fail(404, str(e))
        except MlopsJupyterError as e:
            return self.fail(500, str(e))
        ctype = safe_content_type(row["name"])
        self.set_header("Content-Type", ctype)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Disposition", content_disposition(row["name"]))
        self.set_header("Content-Length", str(row["size"]))
        h = hashlib.sha256()
        pending: bytes | None = None  # held back until the next one is read: see the doc
        sent = 0
        try:
            while True:
                chunk = await loop.run_in_executor(_pool, next, chunks, None)
                if chunk is None:
                    break
                h.update(chunk)
                if pending is not None:
                    self.write(pending)
                    sent += len(pending)
                    await self.flush()
                pending = chunk
        except Exception as e:  # the store or the client failed mid-way
            log.warning(
                "mlops: artifact %r: download failed after %d bytes: %s", row["name"], sent, e
            )
            self._cut(f"reading artifact {row['name']!r} failed: {e}", sent)
            return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # a local file handle, or an object-store response
        if h.hexdigest() != row["digest"]:
            msg = (
                f"artifact {row['name']!r} does not match its digest {row['digest'][:12]}: "
                "the stored bytes were changed; refusing it"
            )
            log.error("mlops: %s", msg)
            self._cut(msg, sent)
            return
        if pending is not None:
            self.write(pending)
        self.finish(set_content_type=ctype)  # APIHandler would say JSON otherwise

    def _cut(self, message: str, sent: int) -> None:
        """Fail a download. Before any byte went out: a 500 JSON answer. After: end the
        response without completing its body, so the client sees fewer bytes than
        Content-Length (an error), never a whole-looking file."""
        if not sent:  # headers go out with the first flush, after the first chunk
            self.clear()
            self.fail(500, message)
            return
        if self.request.connection is not None:
            self.request.connection.close()
        # tornado has no public way to end a response without completing it: mark it
        # finished so tornado does not write the rest of a response the client cannot get
        self._finished = True


def artifact_routes() -> list[tuple[str, type]]:
    """Routes (relative to the API prefix) to register before the catch-all."""
    return [(r"/runs/([^/]+)/artifacts/(.+)", ArtifactDownload)]
