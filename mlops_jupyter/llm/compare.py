"""Evaluation runs side by side: scores per run (with intervals) and per example."""

from __future__ import annotations

from typing import Any

import polars as pl

from ..errors import ArtifactNotFoundError, InvalidInputError
from .regress import _ref
from .result import LOWER_IS_BETTER, PRIMARY


def compare_scores(runs: Any, prefix: str = "llm") -> pl.DataFrame:
    """One row per (run, score): run, run_id, metric, mean, ci_low, ci_high.

    `runs`: Run objects, run ids or names (a list), or a `mj.runs()` frame."""
    from ..tracking import api

    if hasattr(runs, "columns") and "id" in runs.columns:
        runs = runs["id"].to_list()
    if not isinstance(runs, (list, tuple)) or not runs:
        raise InvalidInputError("runs must be a non-empty list of runs or a mj.runs() frame")
    rows = []
    p = prefix + "/"
    for r in runs:
        d = api.get_run(_ref(r, "runs"))
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


def eval_table(run: Any, prefix: str = "llm") -> pl.DataFrame:
    """The per-example table a run's `llm_eval` stored (artifact `<prefix>_eval.parquet`)."""
    from ..tracking import api

    d = api.get_run(_ref(run, "run"))
    name = f"{prefix}_eval.parquet"
    art = next((a for a in d["artifacts"] if a["name"] == name), None)
    if art is None:
        raise ArtifactNotFoundError(f"run {d['name']!r} has no {name} (no mj.llm_eval in it)")
    digest = art["digest"]
    return pl.read_parquet(api.current_store().artifacts_dir / digest[:2] / digest[2:])


def compare_examples(
    run_a: Any, run_b: Any, metric: str | None = None, prefix: str = "llm"
) -> pl.DataFrame:
    """The two runs' per-example tables joined on `row`, biggest drops of `metric` first.

    Columns: row, question, answer_a, answer_b, <metric>_a, <metric>_b, delta (b - a, so
    negative is worse for higher-is-better scores), error_a, error_b."""
    a, b = eval_table(run_a, prefix), eval_table(run_b, prefix)
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
