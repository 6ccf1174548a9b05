"""`mj.compare(...)` in real headless Chromium: one interactive Vega-Lite chart with a line
per selected run, in JupyterLab (run live) and in Notebook 7 (the saved notebook).

Screenshots: test-artifacts/compare-lab.png, compare-notebook7.png."""

from __future__ import annotations

import browser_helpers as bh
import pytest
from browser_helpers import make_notebook, open_notebook, run_all, screenshot

pytestmark = pytest.mark.browser
browser, page, lab_server = bh.browser, bh.page, bh.lab_server

CELLS = [
    "import mlops_jupyter as mj",
    """ids = []
for lr in (0.1, 0.03, 0.01):
    with mj.start_run(f"cmp-{lr}", experiment="cmp", params={"lr": lr}) as r:
        for step in range(40):
            mj.log(step=step, loss=1.0 / (1 + lr * 10 * step))
    ids.append(r.id)
mj.flush()""",
    "mj.compare(ids)",
]

LINES = ".mj-vegalite6 .mark-line path"


def _chart_lines(pg, timeout: float = 30_000) -> int:
    pg.wait_for_function(f"() => document.querySelectorAll('{LINES}').length > 0", timeout=timeout)
    return pg.locator(LINES).count()


def test_compare_draws_one_chart_with_every_run(lab_server, page):  # noqa: F811
    make_notebook(lab_server.root_dir / "cmp.ipynb", CELLS)
    open_notebook(page, lab_server, "cmp.ipynb")
    run_all(page)
    assert _chart_lines(page) == 3  # one chart, three curves
    assert page.locator(".mj-vegalite6").count() == 1
    # no per-run static thumbnails in place of the chart
    assert page.locator(".jp-OutputArea-output svg polyline").count() == 0
    # interactive: vega-embed's action menu and a chart that reacts to the mouse
    assert page.locator(".mj-vegalite6 .vega-embed").count() == 1
    legend = page.locator(".mj-vegalite6 .role-legend").text_content() or ""
    assert "cmp-0.1" in legend and "cmp-0.01" in legend
    screenshot(page, "compare-lab")
    page.keyboard.press("Control+s")
    page.wait_for_timeout(1500)
    assert not page.console_errors or all("vega" not in e.lower() for e in page.console_errors)

    # Notebook 7 (served by the same server) renders the saved output the same way
    nb7 = page.context.new_page()
    nb7.goto(lab_server.lab_url("notebooks/cmp.ipynb"))
    nb7.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    assert _chart_lines(nb7) == 3
    assert nb7.locator(".jp-OutputArea-output svg polyline").count() == 0
    screenshot(nb7, "compare-notebook7")
