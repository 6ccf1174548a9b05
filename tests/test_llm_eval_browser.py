"""The notebook view of an evaluation sorts when a column header is clicked (real Chromium)."""

from __future__ import annotations

import browser_helpers as bh
import pytest
from llm_eval_data import hash_embedder

import mlops_jupyter as mj

browser, page = bh.browser, bh.page
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
