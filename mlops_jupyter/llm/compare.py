"""Evaluation runs side by side: scores per run (with intervals) and per example."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import ArtifactNotFoundError, InvalidInputError
from .regress import _ref
from .result import DESCRIPTIVE, LOWER_IS_BETTER, PRIMARY

_SHOWN = ("row", "question", "answer", "error")
MAX_RUNS = 8  # runs side by side in one report (columns of the per-example table)


def _detail(ref: Any, what: str, store: Any = None) -> dict[str, Any]:
    """A run's details from `store` (the server's), else from the module-level API's store."""
    if store is None:
        from ..tracking import api

        return api.get_run(_ref(ref, what))
    from ..store import query as q
    from ..store import runs as rstore

    return q.run_detail(store, rstore.resolve_run(store, _ref(ref, what)))


def compare_scores(runs: Any, prefix: str = "llm", store: Any = None) -> pl.DataFrame:
    """One row per (run, score): run, run_id, metric, mean, ci_low, ci_high.

    `runs`: Run objects, run ids or names (a list), or a `mj.runs()` frame."""
    if hasattr(runs, "columns") and "id" in runs.columns:
        runs = runs["id"].to_list()
    if not isinstance(runs, (list, tuple)) or not runs:
        raise InvalidInputError("runs must be a non-empty list of runs or a mj.runs() frame")
    rows = []
    p = prefix + "/"
    for r in runs:
        d = _detail(r, "runs", store)
        vals = {m["key"][len(p) :]: m["last"] for m in d["metrics"] if m["key"].startswith(p)}
        for k, v in vals.items():
            if k.endswith(("/ci_low", "/ci_high")):
                continue
            rows.append(
                (d["name"], d["id"], k, v, vals.get(f"{k}/ci_low"), vals.get(f"{k}/ci_high"))
            )
    return pl.DataFrame(
        rows,
        schema={
            "run": pl.String,
            "run_id": pl.String,
            "metric": pl.String,
            "mean": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
        },  # fmt: skip
        orient="row",
    )


def eval_table(run: Any, prefix: str = "llm", store: Any = None) -> pl.DataFrame:
    """The per-example table a run's `llm_eval` stored (artifact `<prefix>_eval.parquet`).

    The file is found through the run's artifact index (its digest), never from a path."""
    return pl.read_parquet(_table_path(_detail(run, "run", store), prefix, store))


def _table_path(detail: dict[str, Any], prefix: str, store: Any) -> Path:
    name = f"{prefix}_eval.parquet"
    art = next((a for a in detail["artifacts"] if a["name"] == name), None)
    if art is None:
        raise ArtifactNotFoundError(f"run {detail['name']!r} has no {name} (no mj.llm_eval in it)")
    digest = art["digest"]
    if store is None:
        from ..tracking import api

        if (url := api.remote_url()) is not None:  # a verified copy from the server
            from ..remote import files
            from ..remote.api import remote_store

            return files.artifact_path(remote_store(url), detail["id"], name)
        store = api.current_store()
    return store.artifacts.blob_file(digest)


def compare_examples(
    run_a: Any, run_b: Any, metric: str | None = None, prefix: str = "llm", store: Any = None
) -> pl.DataFrame:
    """The two runs' per-example tables joined on `row`, biggest drops of `metric` first.

    Columns: row, question, answer_a, answer_b, <metric>_a, <metric>_b, delta (b - a, so
    negative is worse for higher-is-better scores), error_a, error_b."""
    a, b = eval_table(run_a, prefix, store), eval_table(run_b, prefix, store)
    common = [c for c in a.columns if c in b.columns]
    if metric is None:
        metric = next((m for m in PRIMARY if m in common), None)
    if metric is None or metric not in common:
        raise InvalidInputError(f"metric must be a score both runs have; they share {common}")
    j = a.select("row", "question", "answer", metric, "error").join(
        b.select("row", "answer", metric, "error"), on="row", how="full", suffix="_b",
        coalesce=True,
    )  # fmt: skip
    j = j.rename({"answer": "answer_a", metric: f"{metric}_a", "error": "error_a"})
    j = j.with_columns((pl.col(f"{metric}_b") - pl.col(f"{metric}_a")).alias("delta"))
    worse_first = metric in LOWER_IS_BETTER
    return j.select(
        "row", "question", "answer_a", "answer_b", f"{metric}_a", f"{metric}_b", "delta",
        "error_a", "error_b",
    ).sort("delta", descending=worse_first, nulls_last=True)  # fmt: skip


def _num(v: Any) -> float | None:
    """A JSON-safe number: NaN and infinities become None."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _worse(metric: str, value: float, lo: float, hi: float) -> bool:
    return value > hi if metric in LOWER_IS_BETTER else value < lo


def score_rows(details: list[dict[str, Any]], prefix: str = "llm") -> list[dict[str, Any]]:
    """Per aggregate score of `details` (run_detail dicts): each run's mean and interval, the
    change against the first run and whether it fell beyond the first run's interval."""
    p = prefix + "/"
    per_run = [
        {m["key"][len(p) :]: _num(m["last"]) for m in d["metrics"] if m["key"].startswith(p)}
        for d in details
    ]
    names = sorted({k for vals in per_run for k in vals if not k.endswith(("/ci_low", "/ci_high"))})
    rows = []
    for m in names:
        values = [
            {"mean": v.get(m), "ci_low": v.get(f"{m}/ci_low"), "ci_high": v.get(f"{m}/ci_high")}
            if m in v
            else None
            for v in per_run
        ]
        base = values[0] or {}
        b, lo, hi = base.get("mean"), base.get("ci_low"), base.get("ci_high")
        deltas: list[float | None] = [None]
        regressed = [False]
        for v in values[1:]:
            mean = (v or {}).get("mean")
            deltas.append(None if mean is None or b is None else mean - b)
            regressed.append(
                mean is not None
                and lo is not None
                and hi is not None
                and m not in DESCRIPTIVE
                and _worse(m, mean, lo, hi)
            )
        rows.append(
            {
                "metric": m,
                "lower_is_better": m in LOWER_IS_BETTER,
                "descriptive": m in DESCRIPTIVE,
                "values": values,
                "delta": deltas,
                "regressed": regressed,
            }
        )
    return rows


def compare_report(
    runs: Any,
    metric: str | None = None,
    limit: int = 100,
    prefix: str = "llm",
    store: Any = None,
) -> dict[str, Any]:
    """Evaluation runs side by side, as plain JSON-ready data (the sidebar and dashboard).

    `scores`: per aggregate score, each run's mean and 95 % bootstrap interval, the change
    against the first run and whether it fell beyond the first run's interval (a
    regression). `examples`: the per-example tables joined on `row` (question, each run's
    answer, `metric` score and error), biggest drop against the first run first (with one
    run: its worst examples first), at most `limit` rows of `total`."""
    if hasattr(runs, "columns") and "id" in runs.columns:
        runs = runs["id"].to_list()
    if isinstance(runs, str):
        runs = [runs]
    if not isinstance(runs, (list, tuple)) or not runs:
        raise InvalidInputError("runs must be a non-empty list of run ids or names")
    if len(runs) > MAX_RUNS:
        raise InvalidInputError(f"runs: at most {MAX_RUNS} runs side by side, got {len(runs)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise InvalidInputError(f"limit must be an integer in 1..10000, got {limit!r}")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise InvalidInputError(f"metric must be a score name, got {metric!r}")
    details = [_detail(r, "runs", store) for r in runs]
    paths = [_table_path(d, prefix, store) for d in details]
    schemas = [pl.read_parquet_schema(p) for p in paths]
    scores_cols = [
        c
        for c, t in schemas[0].items()
        if c != "row" and t.is_numeric() and all(c in s for s in schemas[1:])
    ]
    if metric is None:
        metric = next(
            (m for m in PRIMARY if m in scores_cols), scores_cols[0] if scores_cols else None
        )
    if metric is None or metric not in scores_cols:
        raise InvalidInputError(
            f"metric must be a per-example score every run has; they share {scores_cols}"
        )
    n = len(paths)
    j: pl.DataFrame | None = None
    for i, (path, schema) in enumerate(zip(paths, schemas)):
        # only the columns shown are read (a table can hold long contexts and references)
        t = pl.read_parquet(path, columns=[c for c in _SHOWN + (metric,) if c in schema])

        def col(name: str, t: pl.DataFrame = t) -> pl.Expr:
            return pl.col(name).cast(pl.String) if name in t.columns else pl.lit(None, pl.String)

        part = t.select(
            "row",
            col("question").alias(f"question_{i}"),
            col("answer").alias(f"answer_{i}"),
            pl.col(metric).cast(pl.Float64).fill_nan(None).alias(f"score_{i}"),
            col("error").alias(f"error_{i}"),
        )
        j = part if j is None else j.join(part, on="row", how="full", coalesce=True)
    assert j is not None
    lower = metric in LOWER_IS_BETTER
    changes = [pl.col(f"score_{i}") - pl.col("score_0") for i in range(1, n)]
    if changes:
        worst = pl.max_horizontal(changes) if lower else pl.min_horizontal(changes)
    else:
        worst = pl.lit(None, pl.Float64)
    key = "delta" if n > 1 else "score_0"
    j = j.with_columns(
        pl.coalesce([pl.col(f"question_{i}") for i in range(n)]).alias("question"),
        worst.alias("delta"),
    ).sort(key, descending=lower, nulls_last=True)
    rows = [
        {
            "row": r["row"],
            "question": r["question"],
            "answers": [r[f"answer_{i}"] for i in range(n)],
            "scores": [_num(r[f"score_{i}"]) for i in range(n)],
            "errors": [r[f"error_{i}"] for i in range(n)],
            "delta": _num(r["delta"]),
        }
        for r in j.head(limit).iter_rows(named=True)
    ]
    return {
        "runs": [{"id": d["id"], "name": d["name"]} for d in details],
        "metric": metric,
        "lower_is_better": lower,
        "metrics_available": scores_cols,
        "scores": score_rows(details, prefix),
        "examples": {"total": j.height, "limit": limit, "rows": rows},
    }
