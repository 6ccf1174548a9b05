"""What the live monitor shows of a run's logged media: per key, the images and figures
(PNG) of its last steps as data URLs, for the step slider in static/live.js."""

from __future__ import annotations

import base64
from typing import Any

from ..media.read import blob_path
from ..store import media as mstore

MAX_STEPS = 64  # per key: the newest steps kept in the widget (a slider over them)
SHOWN_KINDS = ("image", "figure")


def media_items(
    store: Any, rid: int, seen: int, cache: dict[str, str]
) -> tuple[int, list[dict] | None]:
    """(rows now indexed, the widget's `media` value or None when nothing changed since
    `seen` rows). Each item: key, kind, steps (ascending), urls (same order). `cache`
    keeps the data URL of each digest already read."""
    rows = mstore.list_media(store, rid)
    if len(rows) == seen:
        return seen, None
    by_key: dict[str, list[tuple]] = {}
    for key, step, kind, mime, digest, _size, _created in rows:
        if kind in SHOWN_KINDS and mime == "image/png":
            by_key.setdefault(key, []).append((step, kind, digest))
    items = []
    for key, entries in sorted(by_key.items()):
        entries = entries[-MAX_STEPS:]
        urls = []
        for _, _, digest in entries:
            if digest not in cache:
                data = blob_path(store, digest).read_bytes()
                cache[digest] = "data:image/png;base64," + base64.b64encode(data).decode()
            urls.append(cache[digest])
        items.append(
            {
                "key": key,
                "kind": entries[-1][1],
                "steps": [e[0] for e in entries],
                "urls": urls,
            }
        )
    return len(rows), items
