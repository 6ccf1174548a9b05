"""Finding (and removing) stored objects that no row of the tracking store references.

Three kinds of garbage: content-addressed blobs under `artifacts/` whose digest no run
artifact or media row names; model folders under `models/<name>/<folder>` that no model
version's path names; uploads started and never completed (a process killed mid-upload).
Everything younger than the grace period is kept, so an upload whose row is not written
yet is never removed. Checkpoints (`checkpoints/`), pipeline caches and any other key are
not referenced by rows and are left alone.

The references come from `store/artifact_refs.py`; keys come from the store's listing
(`digest_of_key` tells a blob key), so nothing here spells a key."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import BLOB_PREFIX, MODELS_PREFIX, digest_of_key

if TYPE_CHECKING:
    from ..store.db import Store
    from .base import ArtifactStore

MODEL_PREFIX = MODELS_PREFIX
DEFAULT_GRACE_S = 24 * 3600.0


@dataclass(frozen=True)
class Orphan:
    """One thing gc would remove: a blob, a model folder (all objects under `key`), or an
    incomplete upload (`upload_id` set)."""

    kind: str  # "blob", "model", "upload"
    key: str
    size: int
    modified: float
    upload_id: str | None = None


@dataclass
class GcReport:
    """What a scan found: the orphans, and how many unreferenced objects were kept because
    they are younger than the grace period."""

    orphans: list[Orphan] = field(default_factory=list)
    kept_recent: int = 0
    scanned: int = 0

    @property
    def bytes(self) -> int:
        """Total size of the orphans."""
        return sum(o.size for o in self.orphans)


def _model_folder(key: str, refs: set[str]) -> str | None:
    """The model folder `models/<name>/<folder>` holding `key`, or None when a reference
    covers the key (or the key has no such shape, so it is not gc's to judge)."""
    parts = key.split("/")
    for i in range(2, len(parts)):
        if "/".join(parts[:i]) in refs:
            return None
    if len(parts) < 4:  # models/<name>/<file>: not a version folder
        return None
    return "/".join(parts[:3])


def find_orphans(
    store: Store,
    artifacts: ArtifactStore,
    grace_s: float = DEFAULT_GRACE_S,
    now: float | None = None,
) -> GcReport:
    """Scan `artifacts` for objects no row of `store` references (see the module doc).
    References are read before listing, so an object whose row appears later is younger
    than the scan and kept by the grace period."""
    from ..store import artifact_refs as refs

    now = time.time() if now is None else now
    cutoff = now - max(0.0, grace_s)
    digests = refs.referenced_digests(store)
    models = refs.referenced_model_paths(store)
    report = GcReport()

    for info in artifacts.list(BLOB_PREFIX):
        report.scanned += 1
        d = digest_of_key(info.key)
        if d is None or d in digests:
            continue  # not a blob key (left alone), or referenced
        if info.modified > cutoff:
            report.kept_recent += 1
            continue
        report.orphans.append(Orphan("blob", info.key, info.size, info.modified))

    folders: dict[str, list[tuple[int, float]]] = {}
    for info in artifacts.list(MODEL_PREFIX):
        report.scanned += 1
        folder = _model_folder(info.key, models)
        if folder is not None:
            folders.setdefault(folder, []).append((info.size, info.modified))
    for folder, objs in sorted(folders.items()):
        newest = max(m for _, m in objs)
        if newest > cutoff:  # a registration still writing its files
            report.kept_recent += 1
            continue
        report.orphans.append(Orphan("model", folder, sum(s for s, _ in objs), newest))

    for up in artifacts.incomplete_uploads():
        report.scanned += 1
        started = float(up.get("started") or 0.0)
        if started > cutoff:
            report.kept_recent += 1
            continue
        report.orphans.append(Orphan("upload", str(up["key"]), 0, started, str(up["id"])))
    return report


def remove(store: Store, artifacts: ArtifactStore, report: GcReport) -> tuple[int, int]:
    """Remove the orphans of `report`; returns (items removed, bytes). References are read
    again first: an object a run started to reference since the scan is kept."""
    from ..store import artifact_refs as refs

    digests = refs.referenced_digests(store)
    models = refs.referenced_model_paths(store)
    n = size = 0
    for o in report.orphans:
        if o.kind == "blob":
            if digest_of_key(o.key) in digests:
                continue
            artifacts.delete(o.key)
        elif o.kind == "model":
            if any(m == o.key or m.startswith(o.key + "/") for m in models):
                continue
            artifacts.delete_tree(o.key)
        else:
            artifacts.abort_upload(o.key, o.upload_id or "")
        n += 1
        size += o.size
    return n, size
