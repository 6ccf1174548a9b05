"""REST routes of logged media (images, figures, tables, text, audio):

    GET /mlops/api/v1/runs/{run_id}/media[?key=K]  -> {"media": [{key, step, kind, mime, url}]}
    GET /mlops/api/v1/runs/{run_id}/media/{digest} -> the stored bytes, with their Content-Type

A blob is served only when that run's media index names its digest: a URL can never
reach another run's files or any path."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import quote

import tornado.web

from ..errors import InvalidInputError, RunNotFoundError
from ..media.read import blob_path
from ..store import media as mstore
from .handlers import PREFIX, BaseHandler, _pool, aq, url_path_join

_DIGEST = re.compile(r"[0-9a-f]{64}")


class MediaList(BaseHandler):
    @tornado.web.authenticated
    async def get(self, ref: str) -> None:
        def run() -> Any:
            st = self.store()
            rid = self.rid(ref)
            uid = aq.uid_of(st, rid)
            base = url_path_join(self.base_url, PREFIX, "runs", quote(uid, safe=""), "media")
            rows = mstore.list_media(st, rid, self.arg_str("key"))
            return {
                "run_id": uid,
                "media": [
                    {
                        "key": key,
                        "step": step,
                        "kind": kind,
                        "mime": mime,
                        "digest": digest,
                        "size": size,
                        "url": f"{base}/{digest}",
                    }
                    for key, step, kind, mime, digest, size, _ in rows
                ],
            }

        await self.answer(run)


class MediaBlob(BaseHandler):
    @tornado.web.authenticated
    async def get(self, ref: str, digest: str) -> None:
        def run() -> tuple[str, bytes]:
            if not _DIGEST.fullmatch(digest):
                raise InvalidInputError(
                    f"digest must be 64 lowercase hex characters, got {digest!r}"
                )
            st = self.store()
            rid = self.rid(ref)
            found = mstore.media_by_digest(st, rid, digest)
            if found is None:
                raise RunNotFoundError(f"run {ref!r} has no media with digest {digest}")
            try:
                data = blob_path(st, digest).read_bytes()
            except FileNotFoundError:
                raise RunNotFoundError(f"the stored file of media {digest} is missing") from None
            return found[1], data

        try:
            mime, data = await asyncio.get_running_loop().run_in_executor(_pool, run)
        except InvalidInputError as e:
            return self.fail(400, str(e))
        except RunNotFoundError as e:
            return self.fail(404, str(e))
        except Exception as e:
            return self.fail(500, f"{type(e).__name__}: {e}")
        self.set_header("Content-Type", mime)
        self.set_header("X-Content-Type-Options", "nosniff")
        # content-addressed: the bytes behind this URL never change
        self.set_header("Cache-Control", "private, max-age=31536000, immutable")
        self.finish(data, set_content_type=mime)


def media_routes() -> list[tuple[str, type]]:
    """Routes (relative to the API prefix) to register before the catch-all."""
    return [(r"/runs/([^/]+)/media", MediaList), (r"/runs/([^/]+)/media/([^/]+)", MediaBlob)]
