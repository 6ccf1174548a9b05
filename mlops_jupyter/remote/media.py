"""Rich media of a run logged through a tracking server (trackserver/media_routes.py).

The media worker uploads each encoded item with the run's `log_artifact` (remote/files.py:
digest-checked, retried), then indexes it with `index`. Indexing is idempotent on the
server (one row per run, key and step), so it is retried while the server is unreachable.
`rows` and `item` are what media/read.py reads; `fetch` downloads an item's bytes into the
verified read-through cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import ArtifactNotFoundError
from .api import RemoteStore
from .files import call


def _call(store: RemoteStore, method: str, path: str, body: Any, what: str) -> Any:
    """One request, retried while the server is unreachable (the routes are idempotent)."""
    return call(store, method, path, body, what)


def _path(ref: str, query: dict[str, Any] | None = None) -> str:
    tail = "?" + urlencode(query) if query else ""
    return f"/api/v1/runs/{quote(ref, safe='')}/media{tail}"


def is_remote_store(store: Any) -> bool:
    """Whether `store` is a tracking server's handle."""
    return isinstance(store, RemoteStore)


def index(run: Any, key: str, step: int, kind: str, mime: str, name: str, created: float) -> None:
    """Index the artifact `name` (already uploaded for `run`) as media `key` at `step`."""
    item = {"key": key, "step": step, "kind": kind, "mime": mime, "name": name}
    item["created"] = created
    _call(run.store, "POST", _path(run.id), {"items": [item]}, "record media")


def rows(store: RemoteStore, ref: str, key: str | None = None) -> list[dict[str, Any]]:
    """The run's media rows: key, step, kind, mime, digest, size, created, name."""
    q = {"key": key} if key is not None else None
    return _call(store, "GET", _path(ref, q), None, "read media")["media"]


def next_step(store: RemoteStore, ref: str, key: str) -> int:
    """One past the highest step the server holds for `key` (0 when none)."""
    got = rows(store, ref, key)
    return max((r["step"] for r in got), default=-1) + 1


def item(store: RemoteStore, ref: str, key: str, step: int | None) -> dict[str, Any] | None:
    """The row of `key` at `step` (None: the latest step), or None."""
    got = rows(store, ref, key)
    if step is not None:
        got = [r for r in got if r["step"] == step]
    return max(got, key=lambda r: r["step"]) if got else None


def fetch(store: RemoteStore, ref: str, row: dict[str, Any]) -> Path:
    """A verified local copy of the item's bytes (downloaded into the cache)."""
    from .files import artifact_path

    if not row.get("name"):
        raise ArtifactNotFoundError(f"media {row['key']!r} at step {row['step']} has no file")
    return artifact_path(store, ref, row["name"])
