"""The sidebar's Serving tab in real headless Chromium against a real `jupyter lab`: a store
with an A/B split of "clf" (prepared as in test_server_serving.py) shows its variants with
their traffic, the per-window charts, the A/B verdict with its recommended action and the
rollout history; a model that starts logging while the tab is open appears by itself.

Screenshots: test-artifacts/sidebar-serving.png, sidebar-serving-verdict.png."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import browser_helpers as bh
import pytest
from browser_helpers import REPO_ROOT, running_lab, screenshot
from serving_view_helpers import LAYOUT, MODEL, prepare

from mlops_jupyter.store import open_store
from mlops_jupyter.store import serving as sstore

pytestmark = pytest.mark.browser
browser, page = bh.browser, bh.page  # shared fixtures


def _this_build(tmp: Path) -> dict[str, str]:
    """JUPYTER_PATH naming this checkout's built extension first (a copy installed into the
    environment earlier may predate it; in CI both are the same build)."""
    built = REPO_ROOT / "mlops_jupyter" / "labextension"
    if not (built / "package.json").exists():
        return {}
    ext = tmp / "jupyter-path" / "labextensions"
    ext.mkdir(parents=True)
    (ext / "mlops-jupyter-labextension").symlink_to(built, target_is_directory=True)
    return {"JUPYTER_PATH": str(tmp / "jupyter-path")}


def test_serving_tab_shows_variants_verdict_and_rollouts(tmp_path, page):
    store = tmp_path / "store.db"
    data = prepare(store, n=600)
    rows = [r for r in data["rows"] if r[1] == MODEL]
    env = {"MLOPS_JUPYTER_TELEMETRY": "0", **_this_build(tmp_path)}
    with running_lab(tmp_path / "root", store, env=env) as lab:
        page.goto(lab.lab_url("lab"))
        page.wait_for_selector(".jp-SideBar .lm-TabBar-tab", timeout=60_000)
        page.locator('.jp-SideBar .lm-TabBar-tab[data-id="mlops-jupyter-sidebar"]').click()
        panel = page.locator("#mlops-jupyter-sidebar")
        panel.locator(".mj-tab-serving").click()
        table = panel.locator(".mj-serving-variants")
        table.locator('tr[data-variant="v1"]').wait_for(timeout=30_000)
        # the most recently active model is picked: clf (the other model logged earlier)
        assert panel.locator(".mj-serving-model").input_value() == MODEL
        for variant in ("v1", "v2", "shadow:v2"):
            row = table.locator(f'tr[data-variant="{variant}"]')
            n = sum(r[3] == variant for r in rows)
            assert row.get_attribute("data-requests") == str(n)
        assert "(shadow)" in table.locator('tr[data-variant="shadow:v2"]').text_content()
        screenshot(page, "sidebar-serving")
        # one chart per measure, drawn with one series per variant
        charts = panel.locator(".mj-serving-charts .mj-chart")
        assert charts.count() == 3
        page.wait_for_function(
            "() => document.querySelectorAll('.mj-serving-charts .mj-chart[data-drawn=true]')"
            ".length === 3",
            timeout=10_000,
        )
        # the verdict: v2 is clearly better, and the action says so
        action = panel.locator(".mj-serving-action")
        assert action.get_attribute("data-winner") == "v2"
        assert "promote v2" in action.text_content()
        ab_row = panel.locator('.mj-serving-ab[data-variant="v2"]')
        assert ab_row.locator(".mj-serving-ab-action").text_content() == "promote v2"
        assert LAYOUT in panel.locator(".mj-serving-rollouts").text_content()
        drifted = panel.locator(".mj-serving-drift tr.mj-serving-drifted")
        assert drifted.count() == 1 and drifted.locator("td").last.text_content() == "x"
        assert panel.locator(".mj-serving-drift tbody tr").count() == 2
        ab_row.scroll_into_view_if_needed()
        screenshot(page, "sidebar-serving-verdict")
        # auto-refresh while the tab is visible: a newly served model shows up by itself
        sstore.log_predictions(
            open_store(store),
            [(uuid.uuid4().hex, "late", 1, "v1", time.time(), 2.0, 200, None, 1, 1, "[0]", "w")],
        )
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.mj-serving-model option'))"
            ".some(o => o.value === 'late')",
            timeout=20_000,
        )
    assert page.console_errors == []
