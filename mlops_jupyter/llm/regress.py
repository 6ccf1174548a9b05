"""Regression alerts: a score that dropped against a baseline run beyond its bootstrap CI."""

from __future__ import annotations

import time
from typing import Any

import polars as pl

from ..errors import InvalidInputError
from .result import DESCRIPTIVE, LOWER_IS_BETTER

_SCHEMA = {
    "metric": pl.String,
    "baseline": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "current": pl.Float64,
    "change": pl.Float64,
}


def _ref(run: Any, what: str) -> str:
    if isinstance(run, str) and run:
        return run
    rid = getattr(run, "id", None)
    if isinstance(rid, str):
        return rid
    raise InvalidInputError(f"{what} must be a Run or a run id/name, got {type(run).__name__}")


def _scores(detail: dict, prefix: str) -> dict[str, float]:
    p = prefix + "/"
    return {m["key"][len(p) :]: m["last"] for m in detail["metrics"] if m["key"].startswith(p)}


def llm_regressions(
    run: Any, baseline: Any, prefix: str = "llm", record: bool = True
) -> pl.DataFrame:
    """Metrics of `run` worse than `baseline`'s 95 % bootstrap interval.

    Both runs must hold `llm_eval` scores. Higher is better except for refusal, error_rate,
    latency_s and completion_tokens; text statistics (length, readability) are descriptive
    and never count as regressions. With `record`, each regression is stored on `run` as an
    alert event (rule "llm_regression"), so `mj.alerts(run)` and the sidebar show it."""
    from ..store import runs as rstore
    from ..tracking import api

    cur_ref, base_ref = _ref(run, "run"), _ref(baseline, "baseline")
    cur_d, base_d = api.get_run(cur_ref), api.get_run(base_ref)
    cur, base = _scores(cur_d, prefix), _scores(base_d, prefix)
    if not any(k.endswith("/ci_low") for k in base):
        raise InvalidInputError(
            f"baseline run {base_d['name']!r} has no {prefix}/... scores with intervals; "
            "evaluate it with mj.llm_eval inside the run first"
        )
    rows = []
    for key, lo in base.items():
        if not key.endswith("/ci_low"):
            continue
        m = key[: -len("/ci_low")]
        if m in DESCRIPTIVE:
            continue
        hi, mean, now = base.get(f"{m}/ci_high"), base.get(m), cur.get(m)
        if hi is None or mean is None or now is None or now != now:
            continue
        worse = now > hi if m in LOWER_IS_BETTER else now < lo
        if worse:
            rows.append((m, mean, lo, hi, now, now - mean))
    out = pl.DataFrame(rows, schema=_SCHEMA, orient="row")
    if record and rows:
        url = api.remote_url()
        if url is not None:  # over a tracking server: the run events route, once per alert
            from ..remote import data_more as rmore
            from ..remote.api import remote_store

            rs = remote_store(url)
            add = lambda *a, **kw: rmore.add_run_event(rs, cur_d["id"], *a, **kw)  # noqa: E731
        else:
            store = api.current_store()
            rid = rstore.resolve_run(store, cur_d["id"])
            add = lambda *a, **kw: rstore.add_event(store, rid, *a, **kw)  # noqa: E731
        now_t = time.time()
        for m, mean, lo, hi, now, _change in rows:
            add(
                "alert",
                f"{prefix}/{m} regressed: {now:.4g} vs baseline {base_d['name']} {mean:.4g} "
                f"(95% CI {lo:.4g}..{hi:.4g})",
                level="warning",
                data={
                    "rule": "llm_regression",
                    "metric": f"{prefix}/{m}",
                    "current": now,
                    "baseline": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "baseline_run": base_d["id"],
                },
                start=now_t,
                end=now_t,  # a point-in-time finding, not an open episode
            )
    return out
