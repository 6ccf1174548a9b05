"""GET /mlops/api/v1/llm/compare against a real `jupyter lab` subprocess, with two real
evaluation runs (prompt v1 and v2) made by `mj.llm_eval` with a small embedding callable."""

from __future__ import annotations

import math
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from browser_helpers import running_lab
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_eval_data import hash_embedder

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.llm.compare import compare_examples, compare_report

pytest.importorskip("jupyter_server")
API = "mlops/api/v1/llm/compare"
HOSTILE = '<img src=x onerror="window.__pwned=1">who?'
REFS = [
    "paris is the capital of france",
    "water boils at one hundred degrees",
    "the sun is a star",
    "python was released in 1991",
    "bees make honey",
    "the heart has four chambers",
]
QUESTIONS = ["capital?", "boiling point?", "sun?", "python?", HOSTILE, "heart?"]
V1 = list(REFS)
V2 = [REFS[0], "i do not know", REFS[2], "python is a snake", REFS[4], "the heart has chambers"]


def rows(answers: list[str]) -> list[dict[str, str]]:
    return [
        {"question": q, "answer": a, "reference": r}
        for q, a, r in zip(QUESTIONS, answers, REFS, strict=True)
    ]


def evaluate(name: str, answers: list[str]) -> str:
    with mj.start_run(name, experiment="prompts", params={"prompt": name}) as run:
        mj.llm_eval(rows(answers), metrics=["token_f1", "relevance"], embedder=hash_embedder)
    return run.id


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llm-srv")
    store = tmp / "store.db"
    mj.set_store(store)
    try:
        v1, v2 = evaluate("prompt-v1", V1), evaluate("prompt-v2", V2)
        with mj.start_run("plain") as plain:
            mj.log(loss=1.0)
        expected = compare_examples(v1, v2, "token_f1")
    finally:
        mj.set_store(None)
    extra = {"v1": v1, "v2": v2, "plain": plain.id, "expected": expected}
    with running_lab(tmp / "root", store, **extra) as server:
        yield server


def test_scores_per_run_with_intervals_and_regressions(srv):
    v1, v2 = srv.extra["v1"], srv.extra["v2"]
    status, body = srv.api(f"{API}?runs={v1},{v2}")
    assert status == 200, body
    assert [r["name"] for r in body["runs"]] == ["prompt-v1", "prompt-v2"]
    assert body["metric"] == "token_f1" and body["lower_is_better"] is False
    by = {s["metric"]: s for s in body["scores"]}
    f1 = by["token_f1"]
    a, b = f1["values"]
    assert a["mean"] == pytest.approx(1.0) and a["ci_low"] <= a["mean"] <= a["ci_high"]
    assert b["mean"] < a["ci_low"]  # v2 answers lost words: beyond v1's interval
    assert f1["delta"] == [None, pytest.approx(b["mean"] - a["mean"])]
    assert f1["regressed"] == [False, True]
    # the same numbers the Python API logged
    mj.set_store(srv.extra["store"])
    try:
        logged = {m["key"]: m["last"] for m in mj.get_run(v2)["metrics"]}
    finally:
        mj.set_store(None)
    assert b["mean"] == pytest.approx(logged["llm/token_f1"])
    assert b["ci_low"] == pytest.approx(logged["llm/token_f1/ci_low"])
    # descriptive statistics never count as regressions
    assert not any(any(s["regressed"]) for s in body["scores"] if s["descriptive"])


def test_examples_joined_worst_drop_first(srv):
    v1, v2 = srv.extra["v1"], srv.extra["v2"]
    status, body = srv.api(f"{API}?runs={v1},{v2}&metric=token_f1")
    assert status == 200
    ex = body["examples"]
    assert ex["total"] == len(REFS)
    deltas = [r["delta"] for r in ex["rows"]]
    assert deltas == sorted(deltas)
    exp = srv.extra["expected"]  # compare_examples of the same two runs, same order
    assert [r["row"] for r in ex["rows"]] == exp["row"].to_list()
    worst = ex["rows"][0]
    assert worst["answers"] == [V1[worst["row"]], V2[worst["row"]]]
    assert worst["scores"][1] == 0.0 and worst["delta"] == pytest.approx(-1.0)
    # user text comes back as it was stored (escaping is the view's job)
    assert HOSTILE in [r["question"] for r in ex["rows"]]


def test_metric_and_limit(srv):
    v1, v2 = srv.extra["v1"], srv.extra["v2"]
    status, body = srv.api(f"{API}?runs={v2},{v1}&metric=relevance&limit=2")
    assert status == 200
    assert body["metric"] == "relevance" and body["runs"][0]["name"] == "prompt-v2"
    assert len(body["examples"]["rows"]) == 2 and body["examples"]["total"] == len(REFS)
    assert {"token_f1", "relevance"} <= set(body["metrics_available"])
    # one run: its worst examples first, no deltas
    status, one = srv.api(f"{API}?runs={v2}")
    scores = [r["scores"][0] for r in one["examples"]["rows"]]
    assert status == 200 and scores == sorted(scores)
    assert all(r["delta"] is None for r in one["examples"]["rows"])


@pytest.mark.parametrize(
    ("query", "code", "needle"),
    [
        ("", 400, "runs"),
        ("?runs=", 400, "runs"),
        ("?runs={v1},nope", 404, "nope"),
        ("?runs={v1},{plain}", 404, "llm_eval"),
        ("?runs={v1},{v2}&metric=bogus", 400, "metric"),
        ("?runs={v1},{v2}&metric=question", 400, "metric"),
        ("?runs={v1}&limit=0", 400, "limit"),
        ("?runs={v1}&limit=ten", 400, "limit"),
        ("?runs=" + ",".join(["{v1}"] * 9), 400, "at most"),
        ("?runs=..%2F..%2Fstore.db", 404, "store.db"),
    ],
)
def test_bad_queries_are_json_errors(srv, query, code, needle):
    q = query.format(**{k: srv.extra[k] for k in ("v1", "v2", "plain")})
    status, body = srv.api(API + q)
    assert status == code, body
    assert isinstance(body, dict) and body["status"] == code and needle in body["error"]


def test_route_needs_credentials(srv):
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{srv.url}{API}?runs={srv.extra['v1']}", timeout=10)
    assert exc.value.code == 403


def test_report_checks_its_arguments(srv):
    mj.set_store(srv.extra["store"])
    try:
        for bad in ({"limit": True}, {"limit": 10_001}, {"metric": ""}):
            with pytest.raises(InvalidInputError):
                compare_report([srv.extra["v1"]], **bad)
        with pytest.raises(InvalidInputError, match="runs"):
            compare_report([])
    finally:
        mj.set_store(None)


def test_mj_compare_shows_scores_per_run(srv):
    mj.set_store(srv.extra["store"])
    try:
        c = mj.compare([srv.extra["v1"], srv.extra["v2"]])
        plain = mj.compare([srv.extra["plain"]])
    finally:
        mj.set_store(None)
    f1 = c.llm.filter(metric="token_f1")
    assert f1["run"].to_list() == c.labels
    assert f1["regressed"].to_list() == [False, True]
    assert f1["delta"][1] == pytest.approx(f1["mean"][1] - f1["mean"][0])
    assert f1["ci_low"][0] <= f1["mean"][0] <= f1["ci_high"][0]
    html = c._repr_html_()
    assert "mlops-compare-llm" in html and html.count("mlops-regressed") >= 1
    assert plain.llm.is_empty() and "mlops-compare-llm" not in plain._repr_html_()


def test_flagged_scores_are_the_baselines_regressions(srv):
    v1, v2 = srv.extra["v1"], srv.extra["v2"]
    _, body = srv.api(f"{API}?runs={v1},{v2}")
    flagged = {s["metric"] for s in body["scores"] if s["regressed"][1]}
    mj.set_store(srv.extra["store"])
    try:
        reg = mj.llm_regressions(v2, v1, record=False)
    finally:
        mj.set_store(None)
    assert flagged == set(reg["metric"].to_list()) and "token_f1" in flagged


_score = st.one_of(st.none(), st.floats(0, 1), st.just(float("nan")))


def _table_run(rows: dict[int, float | None], metric: str) -> str:
    """A run holding a per-example table with the given scores (no scoring needed)."""
    t = pl.DataFrame(
        {
            "row": list(rows),
            "question": [f"q{r}" for r in rows],
            "answer": [f"a{r}" for r in rows],
            metric: list(rows.values()),
            "error": [None] * len(rows),
        },
        schema_overrides={metric: pl.Float64, "error": pl.String},
    )
    with tempfile.TemporaryDirectory() as d, mj.start_run("synthetic") as run:
        t.write_parquet(Path(d) / "llm_eval.parquet")
        mj.log_artifact(Path(d) / "llm_eval.parquet")
        mj.log(**{f"llm/{metric}": 0.5})
    return run.id


@settings(max_examples=25, deadline=None)
@given(
    a=st.dictionaries(st.integers(0, 30), _score, min_size=1, max_size=12),
    b=st.dictionaries(st.integers(0, 30), _score, min_size=1, max_size=12),
    metric=st.sampled_from(["token_f1", "refusal"]),
)
def test_examples_join_any_rows_and_sort_worst_first(a, b, metric):
    with tempfile.TemporaryDirectory() as d:
        mj.set_store(Path(d) / "s.db")
        try:
            ra, rb = _table_run(a, metric), _table_run(b, metric)
            rep = compare_report([ra, rb], metric=metric, limit=100)
        finally:
            mj.set_store(None)

    def num(v):
        return None if v is None or math.isnan(v) else v

    out = rep["examples"]["rows"]
    assert rep["examples"]["total"] == len(set(a) | set(b)) == len(out)
    for r in out:
        sa, sb = num(a.get(r["row"])), num(b.get(r["row"]))
        assert r["scores"] == [sa, sb] and r["question"] == f"q{r['row']}"
        assert r["answers"] == [f"a{r['row']}" if r["row"] in x else None for x in (a, b)]
        assert r["delta"] == (None if sa is None or sb is None else pytest.approx(sb - sa))
    deltas = [r["delta"] for r in out if r["delta"] is not None]
    assert [r["delta"] is None for r in out] == sorted(r["delta"] is None for r in out)
    assert deltas == sorted(deltas, reverse=metric == "refusal")  # worst change first
