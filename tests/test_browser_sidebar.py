"""The MLOps sidebar in real headless Chromium driving a real `jupyter lab`.

Screenshots are kept in test-artifacts/ (sidebar-*.png)."""

from __future__ import annotations

import browser_helpers as bh
import pytest
from browser_helpers import (
    make_notebook,
    open_notebook,
    run_all,
    run_cell,
    running_lab,
    screenshot,
    start_lab,
    stop_lab,
)
from sidebar_helpers import XSS_NAME, bulk_runs

pytestmark = pytest.mark.browser
browser, page = bh.browser, bh.page  # shared fixtures

NOTEBOOK = [
    "import mlops_jupyter as mj",
    """import os
for lr in (0.1, 0.01):
    with mj.start_run(f"nb-lr-{lr}", experiment="nb", params={"lr": lr, "epochs": 20}):
        mj.set_tags({"notebook.path": os.path.abspath("other.ipynb")})
        for step in range(20):
            mj.log(step=step, loss=1.0 / (1 + lr * 10 * step), acc=step / 20 * lr * 10)""",
    f"""with mj.start_run({XSS_NAME!r}, experiment="nb", params={{"lr": 0.5}}):
    mj.log(step=0, loss=0.5)
mj.flush()
print(len(mj.runs()))""",
]


def open_sidebar(page):
    """Click the MLOps tab of the left sidebar and wait for its runs list."""
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="mlops-jupyter-sidebar"]').click()
    page.wait_for_selector("#mlops-jupyter-sidebar .mj-run", timeout=30_000)


@pytest.fixture
def lab(tmp_path, monkeypatch):
    store = tmp_path / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    with running_lab(tmp_path / "root", store, env={"MLOPS_JUPYTER_TELEMETRY": "0"}) as server:
        yield server


def test_notebook_runs_show_in_sidebar_and_compare(lab, page):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    make_notebook(lab.root_dir / "train.ipynb", NOTEBOOK)
    make_notebook(lab.root_dir / "other.ipynb", ["print('the notebook a run came from')"])
    open_notebook(page, lab, "train.ipynb")
    run_all(page)
    assert "3" in page.locator(".jp-OutputArea-output").last.text_content()

    open_sidebar(page)
    panel = page.locator("#mlops-jupyter-sidebar")
    page.wait_for_function(
        "() => document.querySelectorAll('#mlops-jupyter-sidebar .mj-run').length === 3"
    )
    assert panel.locator(".mj-count").text_content() == "3 runs"
    names = panel.locator(".mj-run .mj-run-name").all_text_contents()
    assert set(names) == {"nb-lr-0.1", "nb-lr-0.01", XSS_NAME}
    assert panel.locator(".mj-run .mj-badge").first.text_content() == "finished"
    # the XSS-looking name is text: no <img> element was created and no script ran
    assert panel.locator("img").count() == 0
    screenshot(page, "sidebar-runs")

    for name in ("nb-lr-0.1", "nb-lr-0.01"):
        panel.locator(".mj-run", has_text=name).locator("input[type=checkbox]").check()
    panel.locator(".mj-compare-btn").click()
    chart = panel.locator(".mj-body-compare .mj-chart[data-key='loss']")
    chart.wait_for(timeout=20_000)
    page.wait_for_function(
        '() => { const c = document.querySelector("#mlops-jupyter-sidebar '
        ".mj-body-compare .mj-chart[data-key='loss'] canvas\"); return c && c.width > 100; }",
        timeout=20_000,
    )
    # the curves were drawn: the canvas holds pixels of both series colours
    painted = page.evaluate(
        """() => {
            const c = document.querySelector(
                "#mlops-jupyter-sidebar .mj-body-compare .mj-chart[data-key='loss'] canvas");
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const seen = new Set();
            for (let i = 0; i < d.length; i += 4) {
                if (d[i + 3] > 0) seen.add(`${d[i] >> 5},${d[i + 1] >> 5},${d[i + 2] >> 5}`);
            }
            return seen.size;
        }"""
    )
    assert painted >= 3
    legend = chart.locator(".u-legend").text_content()
    assert "nb-lr-0.1" in legend and "nb-lr-0.01" in legend
    differ = panel.locator(".mj-params tr.mj-differ").all_text_contents()
    assert any(t.startswith("lr") for t in differ)
    assert not any(t.startswith("epochs") for t in differ)
    screenshot(page, "sidebar-compare")
    # the metric chips choose the curves: switching "acc" off removes its chart
    assert panel.locator(".mj-body-compare .mj-chart[data-key='acc']").count() == 1
    panel.locator(".mj-key-chip", has_text="acc").click()
    panel.locator(".mj-body-compare .mj-chart[data-key='acc']").wait_for(state="detached")
    assert panel.locator(".mj-body-compare .mj-chart[data-key='loss']").count() == 1

    # run detail of the XSS-named run: still text, still no script
    panel.locator(".mj-tab-runs").click()
    # the key metric column can be switched to another metric
    panel.locator(".mj-metric").select_option("acc")
    page.wait_for_function(
        "() => document.querySelector('#mlops-jupyter-sidebar .mj-head .mj-c-metric')"
        ".textContent.startsWith('acc')"
    )
    acc = panel.locator(".mj-run", has_text="nb-lr-0.1").locator(".mj-c-metric")
    assert acc.text_content() == "0.95"
    panel.locator(".mj-run", has_text="onerror").locator(".mj-run-name").click()
    title = panel.locator(".mj-detail-name")
    title.wait_for()
    assert title.text_content() == XSS_NAME
    assert panel.locator("img").count() == 0
    screenshot(page, "sidebar-detail-xss")
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0

    # "Open notebook" opens the notebook a run came from (its notebook.path tag)
    panel.locator(".mj-back").click()
    panel.locator(".mj-run", has_text="nb-lr-0.1").locator(".mj-run-name").click()
    panel.locator(".mj-open-nb").click()
    page.locator(
        ".jp-MainAreaWidget .lm-TabBar-tab, #jp-main-dock-panel .lm-TabBar-tab",
        has_text="other.ipynb",
    ).first.wait_for(timeout=20_000)
    # everything (chart library included) came from the Jupyter server: no CDN, offline-safe
    foreign = [u for u in requests if not u.startswith((lab.url, "data:", "blob:"))]
    assert foreign == []


def test_ten_thousand_runs_are_virtualised(tmp_path, page):
    store = tmp_path / "store.db"
    bulk_runs(store, 10_000)
    server = start_lab(tmp_path / "root", store_path=store, env={"MLOPS_JUPYTER_TELEMETRY": "0"})
    try:
        page.goto(server.lab_url("lab"))
        page.wait_for_selector(".jp-SideBar .lm-TabBar-tab", timeout=60_000)
        open_sidebar(page)
        panel = page.locator("#mlops-jupyter-sidebar")
        page.wait_for_function(
            "() => document.querySelector('#mlops-jupyter-sidebar .mj-count')"
            ".textContent === '10000 runs'"
        )
        rendered = panel.locator(".mj-run").count()
        assert 0 < rendered < 150  # only the visible rows exist
        # scroll to the end: the oldest run is fetched on demand and shown
        panel.locator(".mj-viewport").evaluate("v => { v.scrollTop = v.scrollHeight; }")
        page.wait_for_selector("#mlops-jupyter-sidebar .mj-run >> text=bulk-00000")
        screenshot(page, "sidebar-10k-bottom")
        # a server-side filter narrows the list
        panel.locator(".mj-where").fill("params.lr>=0.0999")
        panel.locator(".mj-where").press("Enter")
        page.wait_for_function(
            "() => /^\\d+ runs?$/.test(document.querySelector('#mlops-jupyter-sidebar .mj-count')"
            ".textContent) && document.querySelector('#mlops-jupyter-sidebar .mj-count')"
            ".textContent !== '10000 runs'"
        )
        n = int(panel.locator(".mj-count").text_content().split()[0])
        assert 0 < n < 10_000
    finally:
        stop_lab(server)


def test_running_run_refreshes_by_itself(tmp_path, monkeypatch, page):
    store = tmp_path / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    server = start_lab(tmp_path / "root", store_path=store)
    try:
        make_notebook(
            server.root_dir / "live.ipynb",
            [
                "%load_ext mlops_jupyter\nimport mlops_jupyter as mj\n"
                "run = mj.start_run('live-one', experiment='nb', params={'lr': 0.1})\n"
                "mj.log(step=0, loss=1.0)\nmj.flush()",
                "mj.log(step=1, loss=0.5)\nmj.end_run()",
                "with mj.start_run('late-one', experiment='nb'):\n    mj.log(loss=0.1)",
            ],
        )
        open_notebook(page, server, "live.ipynb")
        run_cell(page, 0)
        open_sidebar(page)
        panel = page.locator("#mlops-jupyter-sidebar")
        row = panel.locator(".mj-run", has_text="live-one")
        assert row.locator(".mj-badge").text_content() == "running"
        # the telemetry strip lists the active run
        page.wait_for_selector("#mlops-jupyter-sidebar .mj-strip-name >> text=live-one")
        panel.locator(".mj-tab-live").click()
        page.wait_for_selector("#mlops-jupyter-sidebar .mj-card >> text=live-one")
        screenshot(page, "sidebar-live")
        panel.locator(".mj-tab-runs").click()
        # the running run's detail: its chart is updated in place by the poll (only the
        # new points are fetched), not rebuilt
        row.locator(".mj-run-name").click()
        chart = panel.locator(".mj-detail .mj-chart[data-key='loss']")
        page.wait_for_function(
            '() => { const c = document.querySelector("#mlops-jupyter-sidebar .mj-detail '
            ".mj-chart[data-key='loss']\"); return c && c.dataset.points === '1'; }",
            timeout=20_000,
        )
        chart.evaluate("c => { c.__original = true; }")
        run_cell(page, 1)
        page.wait_for_function(
            '() => { const c = document.querySelector("#mlops-jupyter-sidebar .mj-detail '
            ".mj-chart[data-key='loss']\"); return c && c.dataset.points === '2'; }",
            timeout=20_000,
        )
        assert chart.evaluate("c => c.__original === true && Number(c.dataset.updates) >= 1")
        panel.locator(".mj-back").click()
        # no click: the poll picks up the new status and the new key metric value
        page.wait_for_function(
            "() => { const b = document.querySelector('#mlops-jupyter-sidebar .mj-run .mj-badge');"
            " return b && b.textContent === 'finished'; }",
            timeout=20_000,
        )
        assert row.locator(".mj-c-metric").text_content() == "0.5"
        assert panel.locator(".mj-strip-name").count() == 0
        # a run started (and finished) later shows up without a click as well
        run_cell(page, 2)
        page.wait_for_selector(
            "#mlops-jupyter-sidebar .mj-run .mj-run-name >> text=late-one", timeout=20_000
        )
        assert panel.locator(".mj-count").text_content() == "2 runs"
        # with the extension loaded the run knows its notebook and the cells it executed
        row.locator(".mj-run-name").click()
        panel.locator(".mj-open-nb").wait_for()
        cells = panel.locator(".mj-section", has_text="Cells executed")
        assert "mj.end_run()" in cells.text_content()
        screenshot(page, "sidebar-detail-cells")
    finally:
        stop_lab(server)


def test_telemetry_drift_and_data_versions_from_a_notebook(tmp_path, monkeypatch, page):
    """Real telemetry sampling and real data versions/drift from the kernel, in the panel."""
    pytest.importorskip("mlops_jupyter.telemetry.sampler")
    pytest.importorskip("mlops_jupyter.store.data")
    store = tmp_path / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    server = start_lab(
        tmp_path / "root",
        store_path=store,
        env={"MLOPS_JUPYTER_TELEMETRY": "1", "MLOPS_JUPYTER_TELEMETRY_INTERVAL": "0.25"},
    )
    try:
        make_notebook(
            server.root_dir / "data.ipynb",
            [
                "import time, numpy as np, polars as pl\nimport mlops_jupyter as mj\n"
                "rng = np.random.default_rng(0)\n"
                "ref = pl.DataFrame({'x': rng.normal(0, 1, 2000), 'y': rng.integers(0, 5, 2000)})\n"
                "cur = pl.DataFrame({'x': rng.normal(2, 1, 2000), 'y': rng.integers(0, 5, 2000)})\n"
                "run = mj.start_run('data-run', experiment='nb')\n"
                "mj.version(ref, name='train'); mj.version(cur, name='live')\n"
                "mj.drift(ref, cur)\nmj.log(step=0, loss=1.0)\ntime.sleep(1.5)\nmj.flush()",
            ],
        )
        open_notebook(page, server, "data.ipynb")
        run_cell(page, 0)
        open_sidebar(page)
        panel = page.locator("#mlops-jupyter-sidebar")
        # strip: the active run with its CPU/MEM chips from real samples
        page.wait_for_selector("#mlops-jupyter-sidebar .mj-strip-item >> text=data-run")
        chips = panel.locator(".mj-strip-item .mj-chip").all_text_contents()
        assert any(c.startswith("CPU ") for c in chips) and any(c.startswith("MEM ") for c in chips)
        panel.locator(".mj-tab-live").click()
        card = panel.locator(".mj-card", has_text="data-run")
        card.wait_for()
        assert "cpu/percent" in card.text_content()
        screenshot(page, "sidebar-live-telemetry")
        panel.locator(".mj-tab-data").click()
        drift_row = panel.locator(".mj-body-data tr", has_text="train → live")
        drift_row.wait_for()
        assert "drift" in drift_row.text_content() and "x" in drift_row.text_content()
        screenshot(page, "sidebar-drift")
        panel.locator(".mj-tab-runs").click()
        panel.locator(".mj-run", has_text="data-run").locator(".mj-run-name").click()
        versions = panel.locator(".mj-section", has_text="Data versions")
        versions.locator("tr", has_text="train").wait_for()
        assert "2000 × 2" in versions.text_content()
        screenshot(page, "sidebar-detail-data")
    finally:
        stop_lab(server)
