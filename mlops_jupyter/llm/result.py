"""The result of an evaluation: aggregate scores with bootstrap intervals, and the
per-example table (a parquet file, read on demand)."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import InvalidInputError

# where a lower value is the better one (used for "worst first" and for regressions)
LOWER_IS_BETTER = frozenset({"refusal", "error_rate", "latency_s", "completion_tokens"})
# descriptive statistics: neither direction is a regression
DESCRIPTIVE = frozenset({"n_chars", "n_words", "n_sentences", "flesch", "prompt_tokens"})
PRIMARY = ("judge", "groundedness", "token_f1", "similarity", "relevance", "coherence")
EXACT_BOOTSTRAP_MAX = 20_000


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the non-NaN values: percentile bootstrap of the mean.

    Above 20,000 values the normal approximation (mean +- z * sd / sqrt(n)) is used: the
    bootstrap of a mean converges to it and resampling would cost seconds per metric."""
    v = values[~np.isnan(values)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n == 1 or n_boot <= 0:
        return mean, mean, mean, n
    if n > EXACT_BOOTSTRAP_MAX:
        half = 1.959963984540054 * float(v.std(ddof=1)) / math.sqrt(n)
        return mean, mean - half, mean + half, n
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // n)  # resamples per batch, to bound the index matrix
    for i in range(0, n_boot, step):
        k = min(step, n_boot - i)
        means[i : i + k] = v[rng.integers(0, n, size=(k, n))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return mean, float(lo), float(hi), n


@dataclass
class EvalResult:
    """Aggregate scores (`summary`, one row per metric) and the per-example table.

    `table` reads the per-example parquet; `worst(n)` gives the worst examples first;
    `run_id` is the run the scores were logged to (None outside a run)."""

    summary: pl.DataFrame
    path: Path
    n_examples: int
    n_errors: int
    primary: str | None
    run_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"EvalResult({self.n_examples} examples, {self.n_errors} with errors, "
            f"metrics={self.summary['metric'].to_list()}, run={self.run_id})"
        )

    @property
    def scores(self) -> dict[str, float]:
        """{metric: mean} of the aggregate scores."""
        return dict(zip(self.summary["metric"], self.summary["mean"]))

    @property
    def table(self) -> pl.DataFrame:
        """The per-example table (one row per input row, in input order)."""
        return pl.read_parquet(self.path)

    def worst(self, n: int = 20, by: str | None = None) -> pl.DataFrame:
        """Examples with errors first, then by `by` (default: the primary score) worst first."""
        by = by or self.primary
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInputError(f"n must be a non-negative integer, got {n!r}")
        cols = pl.read_parquet_schema(self.path)
        if by is not None and by not in cols:
            raise InvalidInputError(f"by: no score {by!r} in the table; columns: {list(cols)}")
        t = pl.scan_parquet(self.path).with_columns(pl.col("error").is_not_null().alias("_err"))
        keys, desc = ["_err"], [True]
        if by is not None:
            keys.append(by)
            desc.append(by in LOWER_IS_BETTER)
        return t.sort(keys, descending=desc, nulls_last=True).drop("_err").head(n).collect()

    def _repr_html_(self) -> str:
        s = self.summary
        head = "".join(f"<th>{html.escape(c)}</th>" for c in s.columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in s.iter_rows()
        )
        run = f" &middot; run {html.escape(self.run_id)}" if self.run_id else ""
        return (
            f"<div><b>LLM evaluation</b>: {self.n_examples} examples, {self.n_errors} with "
            f"errors{run}<table><tr>{head}</tr>{rows}</table>"
            f"<b>Worst examples</b> (by {html.escape(str(self.primary))}; click a column "
            f"header to sort){sortable_table(self.worst(SHOWN))}</div>"
        )


SHOWN = 50  # worst examples shown in the notebook; the whole table is `result.table`
# Inline handler (no <script> tag, no global name): sorts the rows of its own table by the
# clicked column, numbers numerically, empty cells last; a second click reverses.
_SORT_JS = (
    "(function(th){var t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,"
    "asc=th.getAttribute('data-asc')!=='1',rs=Array.prototype.slice.call(b.rows);"
    "rs.sort(function(x,y){var a=x.cells[i].textContent,c=y.cells[i].textContent;"
    "if(a===''||c===''){return a===c?0:(a===''?1:-1);}"
    "var na=Number(a),nc=Number(c),r=(isNaN(na)||isNaN(nc))?a.localeCompare(c):na-nc;"
    "return asc?r:-r;});"
    "for(var k=0;k<t.tHead.rows[0].cells.length;k++){t.tHead.rows[0].cells[k]"
    ".removeAttribute('data-asc');}"
    "th.setAttribute('data-asc',asc?'1':'0');rs.forEach(function(r){b.appendChild(r);});})(this)"
)


def sortable_table(frame: pl.DataFrame, max_cols: int = 14) -> str:
    """An HTML table whose column headers sort it when clicked (long texts cut)."""
    show = [c for c in frame.columns if c not in ("context", "reference")][:max_cols]
    th = "".join(
        f'<th style="cursor:pointer" title="sort" onclick="{_SORT_JS}">{html.escape(c)}</th>'
        for c in show
    )
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in show) + "</tr>"
        for r in frame.select(show).iter_rows(named=True)
    )
    return (
        f'<table class="mlops-llm-eval"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    if v is None:
        return ""
    if isinstance(v, list):
        v = " | ".join(map(str, v))
    s = str(v)
    return html.escape(s if len(s) <= 120 else s[:117] + "...")
