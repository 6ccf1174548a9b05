"""The live monitor in real JupyterLab + headless Chromium: while a training-loop cell is
still running, the chart's point count grows; after the run it shows the final state."""

from __future__ import annotations

import time

import pytest
from browser_helpers import (  # noqa: F401
    _CELLS,
    browser,
    lab_server,
    make_notebook,
    open_notebook,
    page,
    run_cell,
    screenshot,
    wait_kernel_idle,
)

pytestmark = pytest.mark.browser

N = 150

CELLS = [
    "import time, mlops_jupyter as mj",
    f"""with mj.start_run("browser-live") as run:
    w = mj.live(rate=5)
    for i in range({N}):
        mj.log(step=i, loss=1 / (i + 1), acc=i / {N})
        time.sleep(0.04)
    mj.log(step={N}, acc=float("nan"))
""",
]


@pytest.fixture
def telemetry_env(monkeypatch):
    # set before the server (and so its kernels) starts
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "1")


def _points(pg) -> int:
    return pg.evaluate(
        """() => {
            const c = document.querySelector('.mlw-chart[data-key="loss"]');
            return c ? Number(c.dataset.points || 0) : -1;
        }"""
    )


def _running(pg, index: int) -> bool:
    prompt = pg.locator(_CELLS).nth(index).locator(".jp-InputArea-prompt")
    return "[*]" in (prompt.text_content() or "")


def test_live_chart_grows_while_the_cell_runs(telemetry_env, lab_server, page):  # noqa: F811
    make_notebook(lab_server.root_dir / "live.ipynb", CELLS)
    open_notebook(page, lab_server, "live.ipynb")
    run_cell(page, 0)
    # start the training cell without waiting for it to finish
    page.locator(_CELLS).nth(1).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        """() => {
            const c = document.querySelector('.mlw-chart[data-key="loss"]');
            return c && Number(c.dataset.points) > 0;
        }""",
        timeout=60_000,
    )
    first = _points(page)
    assert _running(page, 1), "the cell finished before the chart could be observed"
    time.sleep(1.5)
    second = _points(page)
    still_running = _running(page, 1)
    screenshot(page, "live-monitor-running")
    assert still_running and 0 < first < second < N, (first, second)
    assert page.locator(".mlw-live .mlw-chip").count() >= 2  # telemetry strip
    # canvas really drew the points it got
    drawn = page.evaluate(
        "() => Number(document.querySelector('.mlw-chart[data-key=\"loss\"]').dataset.drawn)"
    )
    assert drawn > 0

    wait_kernel_idle(page, 60_000)
    page.wait_for_function(
        f"""() => {{
            const c = document.querySelector('.mlw-chart[data-key="loss"]');
            const s = document.querySelector('.mlw-live .mlw-status');
            return c && Number(c.dataset.points) === {N} && s && s.textContent === 'finished';
        }}""",
        timeout=30_000,
    )
    assert page.locator('.mlw-chart[data-key="acc"]').count() == 1
    alert = page.locator(".mlw-live .mlw-alert")
    assert alert.count() == 1 and "acc became nan" in (alert.text_content() or "")
    path = screenshot(page, "live-monitor-final")
    assert path.exists() and path.stat().st_size > 10_000
    errors = [e for e in page.console_errors if "mlw-" in e or "live.js" in e]
    assert not errors, errors
