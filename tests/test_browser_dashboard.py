"""The dashboard tab in real JupyterLab + headless Chromium: opened from the command
palette, column picker, filter, parallel-coordinates brushing driving the table, CSV export
checked against `mj.runs()`, run detail in the tab, hostile names shown as text.

Screenshots: test-artifacts/dashboard-*.png."""

from __future__ import annotations

import csv
import io
import math

import browser_helpers as bh
import numpy as np
import pytest
from browser_helpers import run_command, running_lab, screenshot
from sidebar_helpers import XSS_NAME, populate

import mlops_jupyter as mj

pytestmark = pytest.mark.browser
browser, page = bh.browser, bh.page

DASH = "#mlops-jupyter-dashboard"
HOSTILE_TEXT = "<script>window.__pwned = 1</script><b>bold?</b>"


@pytest.fixture
def lab(tmp_path, monkeypatch):
    store = tmp_path / "store.db"
    populate(store)
    mj.set_store(store)
    try:  # media of one run: images at three steps and a text whose content is markup
        with mj.start_run("pics", experiment="media") as run:
            img = np.zeros((16, 24, 3), np.uint8)
            for step in range(3):
                img[:, : 8 * (step + 1)] = 200
                mj.log_image("samples", img, step=step)
            mj.log_text("notes", HOSTILE_TEXT, step=1)
        mj.flush_media()
    finally:
        mj.set_store(None)
    monkeypatch.setenv("MJ_TEST_MEDIA_RUN", run.id)
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    with running_lab(tmp_path / "root", store, env={"MLOPS_JUPYTER_TELEMETRY": "0"}) as server:
        yield server


def count(pg) -> int:
    return int((pg.locator(f"{DASH} .mj-dash-count").text_content() or "0 ").split()[0])


def wait_count(pg, pred: str) -> None:
    pg.wait_for_function(
        "() => { const c = document.querySelector('#mlops-jupyter-dashboard .mj-dash-count');"
        f" if (!c || !c.textContent) return false; const n = parseInt(c.textContent); return {pred}; }}",
        timeout=20_000,
    )


def open_dashboard(pg) -> None:
    """Open the dashboard from the command palette."""
    run_command(pg, "Open as dashboard")
    pg.wait_for_selector(f"{DASH} .mj-dash-row", timeout=30_000)


def col_values(pg, col: str) -> list[str]:
    return pg.locator(f"{DASH} .mj-dash-row [data-col='{col}']").all_text_contents()


def test_dashboard_columns_filter_brush_export(lab, page, tmp_path):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(lab.lab_url("lab"))
    page.wait_for_selector(".jp-SideBar .lm-TabBar-tab", timeout=60_000)
    open_dashboard(page)
    dash = page.locator(DASH)
    wait_count(page, "n === 36")
    # a hostile run name is text in the table: no element made of it, no script ran
    xss = dash.locator(".mj-dash-row [data-col='name']", has_text="onerror")
    assert xss.text_content() == XSS_NAME
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0
    screenshot(page, "dashboard-all")

    # one experiment; the default columns are its params and metrics
    dash.locator(".mj-dash-experiment").select_option("exp-a")
    wait_count(page, "n === 30")
    heads = dash.locator(".mj-dash-th").evaluate_all("hs => hs.map(h => h.dataset.col)")
    assert {"params.lr", "params.opt", "params.depth", "metrics.loss.last"} <= set(heads)
    # column picker: drop depth, remembered for this experiment
    dash.locator(".mj-dash-columns").click()
    dash.locator(".mj-colpick input[data-col='params.depth']").uncheck()
    page.wait_for_function(
        "() => !document.querySelector(\"#mlops-jupyter-dashboard .mj-dash-th[data-col='params.depth']\")"
    )
    saved = page.evaluate("() => localStorage.getItem('mlops-jupyter:dashboard-columns:exp-a')")
    assert "params.depth" not in saved and "params.lr" in saved
    dash.locator(".mj-dash-columns").click()

    # sort by lr (a param column sorts descending first)
    dash.locator(".mj-dash-th[data-col='params.lr']").click()
    page.wait_for_function(
        "() => (document.querySelector(\"#mlops-jupyter-dashboard .mj-dash-row [data-col='params.lr']\")"
        " || {}).textContent === '0.3'"
    )

    # filter with the runs-list conditions
    dash.locator(".mj-dash-where").fill("params.opt=adam")
    dash.locator(".mj-dash-where").press("Enter")
    wait_count(page, "n === 15")
    assert set(col_values(page, "params.opt")) == {"adam"}
    # group by a param: runs per value with mean ± std of the metric columns
    dash.locator(".mj-dash-group").select_option("params.opt")
    group = dash.locator(".mj-dash-group-table tbody tr")
    group.first.wait_for()
    cells = group.first.locator("td").all_text_contents()
    assert cells[:2] == ["adam", "15"] and "±" in cells[2]
    dash.locator(".mj-dash-group").select_option("")

    # parallel coordinates: brush the top of the lr axis; the table follows
    dash.locator(".mj-dash-tab-parallel").click()
    hit = dash.locator(".mj-pc-hit[data-axis='params.lr']")
    hit.wait_for()
    box = hit.bounding_box()
    x = box["x"] + box["width"] / 2
    # from 30% below the top to above the axis' end: the highest values are inside
    page.mouse.move(x, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(x, box["y"] - 10, steps=5)
    page.mouse.up()
    wait_count(page, "n > 0 && n < 15")
    n = count(page)
    page.wait_for_timeout(300)
    lrs = [float(v) for v in col_values(page, "params.lr")]
    assert len(lrs) == n and min(lrs) >= 0.2  # the top 30% of 0.02..0.3
    redraw = float(dash.locator(".mj-parcoords").get_attribute("data-redraw-ms"))
    assert redraw < 100
    assert "▾" in dash.locator(".mj-dash-th[data-col='params.lr']").text_content()
    screenshot(page, "dashboard-parallel")

    # CSV export of exactly what the table shows, compared with mj.runs()
    with page.expect_download() as dl:
        dash.locator(".mj-dash-export").click()
    path = tmp_path / "runs.csv"
    dl.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == n
    mj.set_store(lab.extra["store"])
    try:
        frame = mj.runs(experiment="exp-a")
    finally:
        mj.set_store(None)
    by_id = {r["id"]: r for r in frame.to_dicts()}
    for r in rows:
        ref = by_id[r["id"]]
        assert r["name"] == ref["name"] and r["params.opt"] == ref["params.opt"] == "adam"
        assert math.isclose(float(r["params.lr"]), ref["params.lr"])
        assert math.isclose(float(r["metrics.loss.last"]), ref["metrics.loss.last"])
    expected = {
        k for k, v in by_id.items() if v["params.opt"] == "adam" and v["params.lr"] >= min(lrs)
    }
    assert {r["id"] for r in rows} == expected

    # scatter of a param against a metric and a histogram, over the same (brushed) runs
    dash.locator(".mj-dash-tab-scatter").click()
    dash.locator(".mj-dash-x").select_option("params.lr")
    page.wait_for_function(
        f"() => document.querySelectorAll('{DASH} svg.mj-scatter circle.mj-dot').length === {n}"
    )
    dash.locator(".mj-dash-tab-histogram").click()
    hist = dash.locator("svg.mj-histogram")
    hist.wait_for()
    assert f"({n} runs)" in hist.text_content()
    screenshot(page, "dashboard-histogram")

    # curves of two selected runs, then a run's detail inside the tab
    dash.locator(".mj-dash-row input[type=checkbox]").nth(0).check()
    dash.locator(".mj-dash-row input[type=checkbox]").nth(1).check()
    dash.locator(".mj-dash-tab-curves").click()
    page.wait_for_function(
        "() => { const c = document.querySelector(\"#mlops-jupyter-dashboard .mj-chart[data-key='loss'] canvas\");"
        " return c && c.width > 100; }",
        timeout=20_000,
    )
    legend = dash.locator(".mj-chart[data-key='loss'] .u-legend").text_content()
    assert legend.count("a-") == 2
    screenshot(page, "dashboard-curves")
    dash.locator(".mj-dash-row [data-col='name']").first.click()
    dash.locator(".mj-dash-detail .mj-detail-name").wait_for()
    assert dash.locator(".mj-dash-detail .mj-detail-name").text_content().startswith("a-")
    screenshot(page, "dashboard-detail")
    dash.locator(".mj-back").click()

    # media of a run: images per step with a slider; text shown as text
    dash.locator(".mj-dash-where").fill("")
    dash.locator(".mj-dash-experiment").select_option("media")
    wait_count(page, "n === 1")
    dash.locator(".mj-dash-tab-media").click()
    img = dash.locator(".mj-media-key[data-key='samples'] img.mj-media-img")
    img.wait_for(timeout=20_000)
    page.wait_for_function(
        '() => { const i = document.querySelector("#mlops-jupyter-dashboard .mj-media-img");'
        " return i && i.complete && i.naturalWidth === 24; }",
        timeout=20_000,
    )
    slider = dash.locator(".mj-media-key[data-key='samples'] .mj-media-step")
    last_src = img.get_attribute("src")
    slider.fill("0")
    page.wait_for_function(
        f"() => document.querySelector('{DASH} .mj-media-img').getAttribute('src') !== {last_src!r}"
    )
    assert "step 0" in dash.locator(".mj-media-key[data-key='samples']").text_content()
    notes = dash.locator(".mj-media-key[data-key='notes'] .mj-media-text")
    page.wait_for_function(
        f"() => (document.querySelector(\"{DASH} .mj-media-key[data-key='notes'] "
        ".mj-media-text\") || {}).textContent !== '…'"
    )
    assert notes.text_content() == HOSTILE_TEXT
    assert page.evaluate("() => window.__pwned === undefined")
    assert dash.locator(".mj-media b").count() == 0
    screenshot(page, "dashboard-media")

    # a run that appears later is listed without a click (the tab polls the store)
    mj.set_store(lab.extra["store"])
    try:
        with mj.start_run("late", experiment="media"):
            mj.log(loss=0.5)
    finally:
        mj.set_store(None)
    wait_count(page, "n === 2")
    assert dialogs == []
