"""Drift on text: a frame of text statistics plus an embedding cluster per text, so two
evaluation sets (this week's prompts vs last week's) go through `mj.drift` like any data.

Clusters come from k-means on the reference set's embeddings; the current set is assigned
to the nearest reference centroid, so a shift in topic shows as a change in the cluster
proportions (chi-squared / Jensen-Shannon in `mj.drift`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from ..errors import InvalidInputError
from .textstats import text_stats


def _texts(x: Any, column: str | None, what: str) -> list[str]:
    if hasattr(x, "columns"):
        if column is None:
            raise InvalidInputError(f"{what}: give column= to pick the text column of a frame")
        if column not in x.columns:
            raise InvalidInputError(f"{what}: no column {column!r}; columns: {list(x.columns)}")
        x = list(x[column])
    if isinstance(x, str) or not isinstance(x, Sequence):
        raise InvalidInputError(f"{what} must be a list of strings or a frame with column=")
    bad = [type(t).__name__ for t in x if not isinstance(t, str)]
    if bad:
        raise InvalidInputError(f"{what}: every text must be a string, got {bad[0]}")
    if not x:
        raise InvalidInputError(f"{what} is empty")
    return list(x)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    """Centroids of k-means (k-means++ start, Lloyd iterations) on unit rows."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    cent = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min(((x[:, None, :] - np.asarray(cent)[None]) ** 2).sum(-1), axis=1)
        if d.sum() <= 0:
            break
        cent.append(x[rng.choice(len(x), p=d / d.sum())])
    c = np.asarray(cent)
    for _ in range(iters):
        lab = np.argmax(x @ c.T, axis=1)
        new = np.stack([x[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(len(c))])
        new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
        if np.allclose(new, c):
            break
        c = new
    return c


def text_profiles(
    reference: Any,
    current: Any,
    column: str | None = None,
    k: int = 8,
    embedder: Any = None,
    seed: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two frames (reference, current) of text statistics and a `cluster` label per text."""
    from .embed import as_embedder

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    ref, cur = _texts(reference, column, "reference"), _texts(current, column, "current")
    emb = as_embedder(embedder)
    rv, cv = emb(ref), emb(cur)
    cent = kmeans(rv.astype(np.float64), k, seed)

    def frame(texts: list[str], vecs: np.ndarray) -> pl.DataFrame:
        stats = pl.DataFrame([text_stats(t) for t in texts])
        lab = np.argmax(vecs.astype(np.float64) @ cent.T, axis=1)
        return stats.with_columns(pl.Series("cluster", [f"c{j}" for j in lab]))

    return frame(ref, rv), frame(cur, cv)


def text_drift(
    reference: Any,
    current: Any,
    column: str | None = None,
    k: int = 8,
    embedder: Any = None,
    **drift_kwargs: Any,
):
    """`mj.drift` on the text profiles of two sets of texts (lists, or frames + column)."""
    from ..data import drift

    r, c = text_profiles(reference, current, column, k, embedder)
    return drift(r, c, categorical=["cluster"], **drift_kwargs)
