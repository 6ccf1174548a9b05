"""The notebook view of an evaluation sorts when a column header is clicked, and the
dashboard compares two evaluation runs per score and per example (real Chromium; the
screenshot is test-artifacts/llm-eval-dashboard.png)."""

from __future__ import annotations

import browser_helpers as bh
import pytest
from browser_helpers import run_command, screenshot
from llm_eval_data import hash_embedder

import mlops_jupyter as mj

browser, page, lab_server = bh.browser, bh.page, bh.lab_server
pytestmark = pytest.mark.browser

ROWS = [
    {"question": "q1", "answer": "alpha beta gamma", "reference": "alpha beta gamma"},
    {"question": "q2", "answer": "alpha", "reference": "alpha beta gamma delta"},
    {"question": "q3", "answer": "", "reference": "x"},
    {"question": "q4", "answer": "alpha beta", "reference": "alpha beta gamma"},
    {"question": "q5", "answer": "zeta", "reference": "alpha"},
]


def _column(pg, name: str) -> list[str]:
    return pg.evaluate(
        """(name) => {
            const t = document.querySelector('table.mlops-llm-eval');
            const i = [...t.tHead.rows[0].cells].findIndex(c => c.textContent === name);
            return [...t.tBodies[0].rows].map(r => r.cells[i].textContent);
        }""",
        name,
    )


def test_worst_examples_table_sorts_by_the_clicked_column(page):  # noqa: F811
    res = mj.llm_eval(ROWS, metrics=["token_f1", "relevance"], embedder=hash_embedder, log=False)
    page.set_content(f"<html><body>{res._repr_html_()}</body></html>")
    # as rendered: the example with an error first, then the worst token F1
    assert _column(page, "question") == ["q3", "q5", "q2", "q4", "q1"]
    header = page.locator("table.mlops-llm-eval th", has_text="token_f1")
    header.click()
    f1 = _column(page, "token_f1")
    assert [float(v) for v in f1[:4]] == sorted(float(v) for v in f1[:4]) and f1[4] == ""
    header.click()  # reversed, the empty score still last
    f1 = _column(page, "token_f1")
    assert [float(v) for v in f1[:4]] == sorted((float(v) for v in f1[:4]), reverse=True)
    assert f1[4] == ""
    page.locator("table.mlops-llm-eval th", has_text="question").click()
    assert _column(page, "question") == ["q1", "q2", "q3", "q4", "q5"]
    assert page.console_errors == []


DASH = "#mlops-jupyter-dashboard"
HOSTILE = '<img src=x onerror="window.__pwned=1">what is <b>this</b>?'
REFS = ["paris is the capital of france", "bees make honey", "the sun is a star"]
PROMPT_V2 = ["paris is the capital of france", "i cannot answer that", "the sun is a star"]


def _eval_run(name: str, answers: list[str]) -> str:
    qs = ["capital?", HOSTILE, "sun?"]
    data = [{"question": q, "answer": a, "reference": r} for q, a, r in zip(qs, answers, REFS)]
    with mj.start_run(name, experiment="prompts") as run:
        mj.llm_eval(data, metrics=["token_f1", "relevance"], embedder=hash_embedder)
    return run.id


def test_dashboard_compares_two_evaluation_runs_per_example(lab_server, page):  # noqa: F811
    mj.set_store(lab_server.extra["store"])
    try:
        v1, v2 = _eval_run("prompt-v1", REFS), _eval_run("prompt-v2", PROMPT_V2)
    finally:
        mj.set_store(None)
    page.goto(lab_server.lab_url("lab"))
    page.wait_for_selector(".jp-SideBar .lm-TabBar-tab", timeout=60_000)
    run_command(page, "Open as dashboard")
    dash = page.locator(DASH)
    for rid in (v1, v2):  # the first run selected is the baseline
        box = dash.locator(f".mj-dash-row[data-run-id='{rid}'] input[type=checkbox]")
        box.wait_for(timeout=30_000)
        box.check()
    llm = dash.locator(".mj-dash-llm .mj-llm")
    llm.locator(".mj-llm-examples tbody tr").first.wait_for(timeout=20_000)
    assert llm.get_attribute("data-metric") == "token_f1"
    # per score: v2's token F1 fell below v1's interval, so it is flagged
    f1 = llm.locator(".mj-llm-scores tr[data-metric='token_f1'] td")
    assert f1.nth(2).get_attribute("class") == "mj-llm-regressed"
    assert "±" in (f1.nth(1).text_content() or "") and "(-" in (f1.nth(2).text_content() or "")
    # per example: the hostile question is the biggest drop, shown as text, nothing ran
    first = llm.locator(".mj-llm-examples tbody tr").first
    assert first.locator(".mj-llm-question").text_content() == HOSTILE
    assert first.locator(".mj-llm-answer").all_text_contents() == [REFS[1], PROMPT_V2[1]]
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert page.evaluate("() => window.__pwned === undefined")
    # sortable by the change: a click puts the unchanged examples (delta 0) first
    deltas = ".mj-dash-llm .mj-llm-delta"
    assert dash.locator(deltas).all_text_contents()[0].startswith("-")
    llm.locator(".mj-llm-sort-delta").click()
    page.wait_for_function(
        f"() => document.querySelector('{DASH} {deltas}').textContent === '0'", timeout=5_000
    )
    llm.scroll_into_view_if_needed()
    screenshot(page, "llm-eval-dashboard")
    # the run detail of an evaluation run shows its scores and worst examples too
    dash.locator(f".mj-dash-row[data-run-id='{v2}'] [data-col='name']").click()
    dash.locator(".mj-dash-detail .mj-llm .mj-llm-examples").wait_for(timeout=20_000)
    assert page.console_errors == []
