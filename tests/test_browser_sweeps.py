"""A sweep run's detail in the sidebar, in real headless Chromium against a real
`jupyter lab`: trial counts, trials/s, best, the per-worker table of a sweep that ran on two
worker processes, and the parallel-coordinates chart drawn on its canvas.

Screenshot: test-artifacts/sidebar-sweep.png."""

from __future__ import annotations

import browser_helpers as bh
import pytest
from browser_helpers import running_lab, screenshot

import mlops_jupyter as mj

pytestmark = pytest.mark.browser
browser, page = bh.browser, bh.page  # shared fixtures
optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective(trial):
    lr = trial.suggest_float("lr", 1e-6, 1.0, log=True)
    opt = trial.suggest_categorical("opt", ["adam", "sgd"])
    if lr > 0.5:
        raise ValueError("diverged")
    return (lr * 10 - 1) ** 2 + (opt == "sgd")


def test_sweep_detail_shows_workers_and_parallel_coordinates(tmp_path, monkeypatch, page):
    store = tmp_path / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    mj.set_store(None)
    r = mj.sweep(
        objective, 12, workers=2, study="brow-sweep", seed=4, gate=False, catch=(ValueError,)
    )
    complete = (r.trials()["state"] == "complete").sum()
    mj.set_store(None)
    with running_lab(tmp_path / "root", store, env={"MLOPS_JUPYTER_TELEMETRY": "0"}) as lab:
        page.goto(lab.lab_url("lab"))
        page.wait_for_selector(".jp-SideBar .lm-TabBar-tab", timeout=60_000)
        page.locator('.jp-SideBar .lm-TabBar-tab[data-id="mlops-jupyter-sidebar"]').click()
        panel = page.locator("#mlops-jupyter-sidebar")
        row = panel.locator(".mj-run", has_text="brow-sweep")
        row.wait_for(timeout=30_000)
        row.locator(".mj-run-name").click()
        counts = panel.locator(".mj-sweep-counts")
        counts.wait_for(timeout=30_000)
        assert counts.get_attribute("data-complete") == str(complete)
        assert counts.text_content().startswith(f"{complete} complete of 12")
        assert "trials/s overall" in panel.locator(".mj-sweep-rate").text_content()
        best = panel.locator(".mj-sweep-best").text_content()
        assert f"trial {r.best_trial.number} =" in best
        # two worker processes, each a row with its counts
        rows = panel.locator(".mj-sweep-workers tbody tr")
        assert rows.count() == 2
        totals = [int(rows.nth(i).locator("td").last.text_content()) for i in range(2)]
        assert sum(totals) == len(r.trials())
        # the chart: one axis per param plus the objective, and lines painted on the canvas
        chart = panel.locator(".mj-sweep-parcoords")
        assert chart.locator(".mj-pc-axis").count() == 3
        assert "log10 lr" in chart.text_content() and "opt: " in chart.text_content()
        painted = chart.locator("canvas").evaluate(
            "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) n++; } return n; }"
        )
        assert painted > 500
        assert chart.get_attribute("data-redraw-ms") is not None
        chart.scroll_into_view_if_needed()
        screenshot(page, "sidebar-sweep")
        # a trial run (a child) shows no sweep section
        panel.locator(".mj-back").click()
        panel.locator(".mj-run", has_text="trial-0").first.locator(".mj-run-name").click()
        panel.locator(".mj-detail-name", has_text="trial-0").wait_for(timeout=20_000)
        assert panel.locator(".mj-sweep").count() == 0
    assert page.console_errors == []
