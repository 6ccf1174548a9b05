"""Artifact stores: where files, models, checkpoints and pipeline outputs live.

`open_artifacts("s3://bucket/prefix")` (also `gs://`, `az://`, a local folder or
`file://`) returns the `ArtifactStore` for that place; see base.py for the contract.
Credentials come from each cloud's standard configuration, never from the store."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..errors import InvalidInputError
from .base import ArtifactStore, ObjectInfo, blob_key, check_key, digest_of_key
from .local import LocalArtifactStore

__all__ = [
    "ArtifactStore",
    "LocalArtifactStore",
    "ObjectInfo",
    "blob_key",
    "check_key",
    "digest_of_key",
    "is_remote",
    "open_artifacts",
]

REMOTE_SCHEMES = ("s3", "gs", "az", "azure", "abfs", "abfss")
_open: dict[str, ArtifactStore] = {}
_lock = threading.Lock()


def is_remote(location: object) -> bool:
    """Whether `location` names object storage (s3://, gs://, az://...)."""
    if not isinstance(location, str) or "://" not in location:
        return False
    return location.split("://", 1)[0].lower() in REMOTE_SCHEMES


def open_artifacts(location: str | os.PathLike) -> ArtifactStore:
    """The artifact store at `location` (one instance per location in a process)."""
    if not isinstance(location, (str, os.PathLike)):
        raise InvalidInputError(
            f"artifact location must be a path or URL, got {type(location).__name__}"
        )
    loc = os.fspath(location)
    if isinstance(loc, bytes):
        loc = os.fsdecode(loc)
    if not loc:
        raise InvalidInputError("artifact location is empty")
    remote = is_remote(loc)
    if not remote and "://" in loc:
        scheme = loc.split("://", 1)[0].lower()
        if scheme != "file":
            raise InvalidInputError(
                f"unsupported artifact location {loc!r}: use s3://, gs://, az:// or a folder"
            )
        loc = loc.split("://", 1)[1]
    key = loc if remote else str(Path(loc).expanduser().absolute())
    with _lock:
        st = _open.get(key)
        if st is None:
            if remote:
                from .objectstore import ObjectArtifactStore

                st = ObjectArtifactStore(loc)
            else:
                st = LocalArtifactStore(key)
            _open[key] = st
        return st


def forget(location: str | None = None) -> None:
    """Drop cached instances (all, or one location), closing their connections."""
    with _lock:
        keys = list(_open) if location is None else [location]
        for k in keys:
            st = _open.pop(k, None)
            if st is not None:
                st.close()
