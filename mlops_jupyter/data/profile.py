"""Column profiles: dtype, counts, nulls, min/max/mean/std, quantiles, a quantile sketch (the
basis of drift between stored versions), a histogram sketch and top categories.

Numeric columns are profiled in linear time: values are counted into a fine grid and only
the few grid cells holding a requested order statistic are sorted, so the sketch quantiles
are exact without sorting whole columns."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import polars as pl

from ..errors import InvalidInputError
from .stats import Binned, grid_size, sketch_cdf

SKETCH_POINTS = 201  # quantiles at p = 0, 0.005, ..., 1
HIST_BINS = 20
TOP_K = 100  # categories kept per column (the rest are summed as "other")
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def to_polars(obj: Any) -> pl.DataFrame:
    """A polars DataFrame view of a polars/pandas DataFrame or Series, or a numpy array."""
    if isinstance(obj, pl.DataFrame):
        return obj
    if isinstance(obj, pl.LazyFrame):
        return obj.collect()
    if isinstance(obj, pl.Series):
        return obj.to_frame(obj.name or "value")
    if isinstance(obj, np.ndarray):
        if obj.ndim == 0:
            obj = obj.reshape(1)
        if obj.ndim == 1:
            return pl.DataFrame({"value": obj})
        if obj.ndim == 2:
            return pl.DataFrame({str(i): obj[:, i] for i in range(obj.shape[1])})
        return pl.DataFrame({"value": obj.reshape(-1)})
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        if isinstance(obj, pd.Series):
            obj = obj.to_frame(obj.name if obj.name is not None else "value")
        default_index = isinstance(obj.index, pd.RangeIndex) and obj.index.start == 0
        try:
            return pl.from_pandas(obj, include_index=not default_index)
        except Exception as e:
            raise InvalidInputError(f"cannot read this pandas DataFrame: {e}") from None
    raise InvalidInputError(
        f"expected a polars/pandas DataFrame, a numpy array, a file or a directory; "
        f"got {type(obj).__name__}"
    )


def _kind(dt: pl.DataType) -> str:
    if dt == pl.Boolean:
        return "boolean"
    if dt.is_numeric():
        return "numeric"
    if dt.is_temporal():
        return "datetime"
    if dt in (pl.String, pl.Categorical) or isinstance(dt, pl.Enum):
        return "categorical"
    return "other"


def numeric_values(s: pl.Series) -> tuple[np.ndarray, int]:
    """Finite float64 values of a numeric/temporal series and how many were missing
    (null, NaN or infinite)."""
    if s.dtype.is_temporal():
        s = s.to_physical()
    if s.dtype == pl.Decimal:
        s = s.cast(pl.Float64)
    x = s.drop_nulls().to_numpy()
    if x.dtype != np.float64:
        x = x.astype(np.float64)
    if x.size and not np.isfinite(x.sum()):
        x = x[np.isfinite(x)]
    return x, len(s) - len(x)


def binned(x: np.ndarray, lo: float | None = None, hi: float | None = None) -> Binned:
    """Bin finite values on [lo, hi] (default: their own min and max)."""
    lo = float(x.min()) if lo is None else lo
    hi = float(x.max()) if hi is None else hi
    return Binned.build(x, lo, hi, grid_size(len(x)))


def order_stats(x: np.ndarray, ranks: np.ndarray, bn: Binned | None = None) -> np.ndarray:
    """x sorted, at the given integer ranks: exact, in O(n) for continuous data."""
    n = len(x)
    if n <= 20000 and bn is None:
        return np.sort(x)[ranks]
    bn = bn or binned(x)
    cum = bn.cum
    cell = np.searchsorted(cum, ranks, side="right")  # cell holding each rank
    need = np.zeros(bn.k, dtype=bool)
    need[cell] = True
    sub = x[need[bn.cells]]
    # order by (cell, value): cells are ordered intervals, so sorting by value suffices
    sub.sort()
    first = np.searchsorted(bn.cell_of(sub), cell, side="left")
    before = np.where(cell > 0, cum[cell - 1], 0)
    return sub[first + (ranks - before)]


def sketch(x: np.ndarray, points: int = SKETCH_POINTS, bn: Binned | None = None) -> np.ndarray:
    """Quantiles at `points` evenly spaced probabilities (numpy's linear interpolation)."""
    n = len(x)
    h = np.linspace(0.0, 1.0, points) * (n - 1)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    ranks = np.unique(np.concatenate([lo, hi]))
    vals = order_stats(x, ranks, bn)
    at = dict(zip(ranks.tolist(), vals.tolist()))
    v_lo = np.array([at[i] for i in lo.tolist()])
    v_hi = np.array([at[i] for i in hi.tolist()])
    return v_lo + (h - lo) * (v_hi - v_lo)


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _std(x: np.ndarray, mean: float) -> float:
    if len(x) < 2:
        return 0.0
    d = x - mean
    d *= d  # not np.dot: a threaded BLAS call stalls on busy machines
    return math.sqrt(float(d.sum()) / (len(x) - 1))


def numeric_profile(s: pl.Series, prepared: tuple | None = None) -> tuple[dict[str, Any], Any]:
    """Profile of a numeric/temporal column, and its values binned for exact tests.

    `prepared`: (values, missing, Binned) with the values already binned on a grid shared
    with another dataset (drift), instead of the column's own range."""
    if prepared is not None:
        x, missing, bn = prepared
    else:
        x, missing = numeric_values(s)
        bn = None
    p: dict[str, Any] = {"nulls": missing, "count": int(len(x))}
    if len(x) == 0:
        return p, None
    if bn is None and len(x) > 20000:
        bn = binned(x)
    sk = sketch(x, bn=bn)
    mean = float(x.sum() / len(x))
    p.update(
        min=float(x.min()),
        max=float(x.max()),
        mean=mean,
        std=_std(x, mean),
        quantiles={
            f"p{round(q * 100):02d}": float(np.interp(q, np.linspace(0, 1, len(sk)), sk))
            for q in QUANTILES
        },
        sketch=[float(v) for v in sk],
        hist=hist_from_sketch(sk, len(x)),
    )
    return p, bn


def hist_from_sketch(sk: np.ndarray, count: int, bins: int = HIST_BINS) -> dict[str, list]:
    """Equal-width histogram between min and max, derived from the sketch (display only)."""
    lo, hi = float(sk[0]), float(sk[-1])
    if not hi > lo:
        return {"edges": [lo, hi], "counts": [count]}
    edges = np.linspace(lo, hi, bins + 1)
    cdf = sketch_cdf(sk, edges)
    cdf[0], cdf[-1] = 0.0, 1.0
    return {"edges": [float(e) for e in edges], "counts": [round(c * count) for c in np.diff(cdf)]}


def category_counts(s: pl.Series) -> tuple[list[str], np.ndarray, int]:
    """All distinct non-null values (as strings) with their counts, most frequent first."""
    s2 = s.drop_nulls()
    if s2.dtype != pl.String:
        s2 = s2.cast(pl.String)
    vc = s2.value_counts(sort=True, name="n")
    return vc[s2.name].to_list(), vc["n"].to_numpy().astype(np.int64), s.null_count()


def categorical_profile(s: pl.Series) -> tuple[dict[str, Any], tuple[list[str], np.ndarray]]:
    """Profile of a string/categorical/boolean column and its full value counts."""
    values, counts, nulls = category_counts(s)
    top = [[v, int(c)] for v, c in zip(values[:TOP_K], counts[:TOP_K])]
    p = {
        "nulls": int(nulls),
        "count": int(counts.sum()),
        "n_unique": len(values),
        "top": top,
        "other": int(counts[TOP_K:].sum()),
    }
    return p, (values, counts)


def column_profile(
    s: pl.Series, kind: str | None = None, prepared: tuple | None = None
) -> tuple[dict[str, Any], Any]:
    """Profile of one column and the raw summary used for exact tests."""
    kind = kind or _kind(s.dtype)
    base: dict[str, Any] = {"name": s.name, "dtype": str(s.dtype), "kind": kind, "n": len(s)}
    if kind in ("numeric", "datetime"):
        p, raw = numeric_profile(s, prepared)
        if kind == "datetime":
            p["unit"] = getattr(s.dtype, "time_unit", None) or "d"
    elif kind in ("categorical", "boolean"):
        p, raw = categorical_profile(s)
    else:
        p, raw = {"nulls": s.null_count(), "count": len(s) - s.null_count()}, None
    base.update(p)
    return base, raw


def frame_profile(
    df: pl.DataFrame, categorical: list[str] | None = None, done: dict | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Profiles of every column, plus the raw summaries keyed by column name.

    `done`: {column: (profile, raw)} computed elsewhere (drift bins both sides together)."""
    profiles, raws = [], {}
    cats = set(categorical or ())
    done = done or {}
    for s in df.get_columns():
        if s.name in done:
            prof, raw = done[s.name]
        else:
            prof, raw = column_profile(s, "categorical" if s.name in cats else None)
        profiles.append(prof)
        raws[s.name] = raw
    return profiles, raws


def schema_of(profiles: list[dict[str, Any]]) -> list[dict[str, str]]:
    """[{name, dtype, kind}] from column profiles."""
    return [{"name": p["name"], "dtype": p["dtype"], "kind": p["kind"]} for p in profiles]
