"""Figures (matplotlib, altair, plotly) as storable bytes, and the confusion-matrix helper.

A figure is rendered or serialised on the caller's thread: plotting libraries are not
thread-safe, and the caller may change or close the figure right after logging it."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from ..errors import InvalidInputError

VEGA_MIME = "application/vnd.vegalite.v5+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def figure_bytes(fig: Any, dpi: int | None = None) -> tuple[bytes, str, str]:
    """(bytes, mime, file extension) of a matplotlib Figure/Axes, altair Chart or plotly
    Figure. Matplotlib renders to PNG; altair and plotly keep their JSON spec (a PNG of
    them would need a browser engine) and are drawn by the viewer."""
    mod = type(fig).__module__.split(".", 1)[0]
    if mod == "matplotlib":
        if not hasattr(fig, "savefig") and hasattr(fig, "get_figure"):
            fig = fig.get_figure()  # an Axes
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi or "figure", bbox_inches="tight")
        return buf.getvalue(), "image/png", "png"
    if mod == "altair":
        return json.dumps(fig.to_dict()).encode(), VEGA_MIME, "vl.json"
    if mod == "plotly":
        return fig.to_json().encode(), PLOTLY_MIME, "plotly.json"
    raise InvalidInputError(
        "fig must be a matplotlib Figure/Axes, an altair Chart or a plotly Figure, "
        f"got {type(fig).__module__}.{type(fig).__name__}"
    )


def _labels(values: np.ndarray) -> list:
    return sorted(set(values.tolist()))


def confusion_counts(y_true: Any, y_pred: Any, labels: Any = None) -> tuple[np.ndarray, list]:
    """Counts[i, j]: samples of true class labels[i] predicted as labels[j]."""
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise InvalidInputError(
            f"y_true and y_pred must have the same length, got {t.size} and {p.size}"
        )
    if labels is None:
        labels = _labels(np.concatenate([t, p]))
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise InvalidInputError("labels must be distinct")
    index = {v: i for i, v in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    ti = np.fromiter((index.get(v, -1) for v in t.tolist()), dtype=np.int64, count=t.size)
    pi = np.fromiter((index.get(v, -1) for v in p.tolist()), dtype=np.int64, count=p.size)
    ok = (ti >= 0) & (pi >= 0)
    np.add.at(m, (ti[ok], pi[ok]), 1)
    return m, labels


def confusion_frame(counts: np.ndarray, labels: list) -> Any:
    """Long polars frame (actual, predicted, count) of a confusion matrix."""
    import polars as pl

    n = len(labels)
    names = [str(v) for v in labels]
    return pl.DataFrame(
        {
            "actual": [names[i] for i in range(n) for _ in range(n)],
            "predicted": [names[j] for _ in range(n) for j in range(n)],
            "count": counts.ravel().tolist(),
        }
    )
