"""Rich media of runs logged through the tracking server, so a remote client's
`mj.log_image`/`log_table`/`log_text`/`log_audio`/`log_figure`/`mj.confusion_matrix`,
`mj.media` and `mj.load_media` work as on a local store.

The media's files go through the run's digest-checked artifact upload (run_files.py);
then the client indexes them here:
- `POST /api/v1/runs/{id}/media {"items": [{"key", "step", "kind", "mime", "name",
  "created"}]}` writes the index rows with store/media.py's add_media: a row names an
  artifact the run already recorded (404 otherwise, nothing written), and a (key, step)
  logged again replaces its row, so a retried request stores each item once.
- `GET /api/v1/runs/{id}/media?key=&step=` lists the rows (key, step, kind, mime, digest,
  size, created, name), by key and step; with `step` only that one."""

from __future__ import annotations

import time
from typing import Any

from ..store import ingest as ing
from ..store import media as mstore
from ..store import runs as rstore
from ..store.artifact_refs import run_artifacts
from .app import BaseHandler, HTTPError, check_value

MAX_ITEMS = 1_000  # per request
MAX_STEP = (1 << 63) - 1
_KINDS = ("image", "figure", "table", "text", "audio", "confusion_matrix")


def _item(raw: Any) -> tuple[str, int, str, str, str, float]:
    """(key, step, kind, mime, name, created) of one checked item."""
    check_value(isinstance(raw, dict), "each item must be an object")
    out: list[Any] = []
    for k in ("key", "mime", "name"):
        v = raw.get(k)
        check_value(isinstance(v, str) and 0 < len(v) <= 1000, f"item {k!r} must be a string")
        rstore.check_text(v, k)
        out.append(v)
    key, mime, name = out
    check_value(not key.startswith("/"), "item 'key' must not start with '/'")
    step = raw.get("step")
    check_value(
        isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= MAX_STEP,
        "item 'step' must be a non-negative int64",
    )
    kind = raw.get("kind")
    check_value(kind in _KINDS, f"item 'kind' must be one of {_KINDS}")
    created = raw.get("created", time.time())
    check_value(
        isinstance(created, (int, float)) and not isinstance(created, bool) and 0 <= created < 1e11,
        "item 'created' must be seconds since the epoch",
    )
    return key, step, kind, mime, name, float(created)


class MediaHandler(BaseHandler):
    """GET ?key=&step=: the run's media rows. POST {"items": [...]}: index them."""

    async def get(self, ref: str) -> None:
        def go() -> dict:
            rid = rstore.resolve_run(self.store, ref)
            key = self.get_query_argument("key", None)
            raw = self.get_query_argument("step", None)
            check_value(
                raw is None or (raw.isascii() and raw.isdigit() and int(raw) <= MAX_STEP),
                "bad 'step'",
            )
            arts = run_artifacts(self.store, rid)
            if raw is not None:
                check_value(key is not None, "'step' needs 'key'")
                rows = [r for r in mstore.list_media(self.store, rid, key) if r[1] == int(raw)]
            else:
                rows = mstore.list_media(self.store, rid, key)
            cols = ("key", "step", "kind", "mime", "digest", "size", "created")
            media = []
            for r in rows:
                d = dict(zip(cols, r))
                # the artifact that holds the item: media/{key}/{step}.{ext} with its digest
                prefix = f"media/{d['key']}/{d['step']}."
                d["name"] = next(
                    (
                        a["name"]
                        for a in arts
                        if a["digest"] == d["digest"] and a["name"].startswith(prefix)
                    ),
                    next((a["name"] for a in arts if a["digest"] == d["digest"]), None),
                )
                media.append(d)
            return {"media": media}

        await self.handle(go)

    async def post(self, uid: str) -> None:
        def go() -> dict:
            items = self.body_json().get("items")
            check_value(
                isinstance(items, list) and 0 < len(items) <= MAX_ITEMS,
                f"'items' must be a list of 1 to {MAX_ITEMS} objects",
            )
            parsed = [_item(x) for x in items]
            rid = ing.run_by_uid(self.store, uid).rid
            have = {a["name"] for a in run_artifacts(self.store, rid)}
            lost = sorted({n for _, _, _, _, n, _ in parsed if n not in have})
            if lost:  # checked first: nothing is indexed when one item names no artifact
                raise HTTPError(
                    404, "RESOURCE_DOES_NOT_EXIST", f"run {uid} has no artifact {lost[0]!r}"
                )
            rows = [(rid, k, s, kind, m, n, c) for k, s, kind, m, n, c in parsed]
            n = mstore.add_media(self.store, rows)
            ing.beat(self.store, rid)
            return {"indexed": n}

        await self.handle(go)


ROUTES = [(r"/api/v1/runs/([^/]+)/media", MediaHandler)]
