"""What the store's rows reference in the artifact store: the blob digests of run artifacts
and logged media, and the model version folders. `mlops-jupyter artifacts gc` keeps these
and nothing else (under `artifacts/` and `models/`); this module is its only SQL."""

from __future__ import annotations

from typing import Any

from .db import Store


def _has_table(store: Store, table: str) -> bool:
    # a store created before a feature's migration ran has no table for it: no references
    try:
        return bool(store.columns(table))
    except Exception:
        return False


def referenced_digests(store: Store) -> set[str]:
    """Digests of every blob a row points at: run artifacts and media, across all runs."""
    out = {r[0] for r in store.read("SELECT DISTINCT digest FROM artifacts", what="list artifacts")}
    if _has_table(store, "media"):
        out |= {r[0] for r in store.read("SELECT DISTINCT digest FROM media", what="list media")}
    if _has_table(store, "feature_materializations"):
        # the offline parquet of every feature view materialization (training sets read it)
        out |= {
            r[0]
            for r in store.read(
                "SELECT DISTINCT digest FROM feature_materializations", what="list features"
            )
        }
    return out


def referenced_model_paths(store: Store) -> set[str]:
    """Folders (keys relative to the artifact store) of every registered model version."""
    if not _has_table(store, "model_versions"):
        return set()
    rows = store.read("SELECT DISTINCT path FROM model_versions", what="list model versions")
    return {str(r[0]).strip("/") for r in rows if r[0]}


def run_artifacts(store: Store, rid: int) -> list[dict[str, Any]]:
    """Artifacts of run `rid`: {name, digest, size, created}, by name."""
    rows = store.read(
        "SELECT name, digest, size, created FROM artifacts WHERE run_id=? ORDER BY name",
        (rid,),
        what="list artifacts",
    )
    return [{"name": n, "digest": d, "size": s, "created": c} for n, d, s, c in rows]


def run_artifact(store: Store, rid: int, name: str) -> dict[str, Any] | None:
    """Artifact `name` of run `rid` ({name, digest, size, created}), or None."""
    rows = store.read(
        "SELECT name, digest, size, created FROM artifacts WHERE run_id=? AND name=?",
        (rid, name),
        what="read artifact",
    )
    if not rows:
        return None
    n, d, s, c = rows[0]
    return {"name": n, "digest": d, "size": s, "created": c}
