"""Reading media back: `mj.media(run)` lists what a run logged, `mj.load_media(run, key,
step)` decodes one item."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ArtifactNotFoundError, InvalidInputError
from ..store import media as mstore
from ..store import runs as rstore
from ..store.db import Store
from .worker import WORKER


def _remote(run: Any) -> tuple[Any, str] | None:
    """(server handle, run ref) when `run` is read through a tracking server, else None."""
    from ..remote import media as rmedia

    if hasattr(run, "store") and hasattr(run, "id"):
        return (run.store, run.id) if rmedia.is_remote_store(run.store) else None
    from ..tracking.api import remote_url

    url = remote_url()
    if url is None or not isinstance(run, str):
        return None
    from ..remote.api import remote_store

    return remote_store(url), run


def _resolve(run: Any) -> tuple[Store, int]:
    """(store, row id) of a Run, or of a run id / name in the current store."""
    if hasattr(run, "store") and hasattr(run, "id"):
        store = run.store
        ref = run.id
    elif isinstance(run, str):
        from ..tracking.api import current_store

        store, ref = current_store(), run
    else:
        raise InvalidInputError(f"run must be a Run or a run id/name, got {type(run).__name__}")
    return store, rstore.resolve_run(store, ref)


def blob_path(store: Store, digest: str) -> Path:
    """A local file holding the content-addressed blob `digest` of `store`."""
    return store.artifacts.blob_file(digest)


def media(run: Any, key: str | None = None) -> Any:
    """What `run` logged (polars): key, step, kind, mime, digest, size, created; by key and
    step. Waits for media still being encoded first."""
    import polars as pl

    WORKER.flush(timeout=60.0)
    remote = _remote(run)
    if remote is not None:
        from ..remote import media as rmedia

        cols = ("key", "step", "kind", "mime", "digest", "size", "created")
        rows = [tuple(r[c] for c in cols) for r in rmedia.rows(*remote, key)]
    else:
        store, rid = _resolve(run)
        rows = mstore.list_media(store, rid, key)
    schema = {
        "key": pl.Utf8,
        "step": pl.Int64,
        "kind": pl.Utf8,
        "mime": pl.Utf8,
        "digest": pl.Utf8,
        "size": pl.Int64,
        "created": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def decode(kind: str, mime: str, data: bytes) -> Any:
    """The Python object for stored bytes: numpy array (PNG images and figures), polars
    frame (tables, confusion matrices), str (text), Audio (WAV), dict (altair/plotly spec)."""
    from . import encode as enc

    if mime == "image/png":
        return enc.decode_png(data)
    if mime == "application/vnd.apache.parquet":
        return enc.decode_parquet(data)
    if mime.startswith("text/"):
        return data.decode("utf-8")
    if mime == "audio/wav":
        return enc.decode_wav(data)
    if mime.endswith("+json"):
        return json.loads(data)
    return data


def load_media(run: Any, key: str, step: int | None = None) -> Any:
    """Decode what `run` logged under `key` at `step` (None: the latest step)."""
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"key must be a non-empty string, got {key!r}")
    WORKER.flush(timeout=60.0)
    remote = _remote(run)
    if remote is not None:
        from ..remote import media as rmedia

        got = rmedia.item(*remote, key, step)
        if got is None:
            at = "" if step is None else f" at step {step}"
            raise ArtifactNotFoundError(f"run has no media {key!r}{at}")
        data = rmedia.fetch(*remote, got).read_bytes()
        return decode(got["kind"], got["mime"], data)
    store, rid = _resolve(run)
    row = mstore.find_media(store, rid, key, step)
    if row is None:
        at = "" if step is None else f" at step {step}"
        raise ArtifactNotFoundError(f"run has no media {key!r}{at}")
    _, kind, mime, digest = row
    return decode(kind, mime, blob_path(store, digest).read_bytes())
