"""The sidebar's Features tab in real headless Chromium against a real `jupyter lab`: a store
prepared as in test_server_features.py lists both feature views (the stale one marked);
clicking one shows its versions, the drift per feature between its materializations (the
drifted feature marked) and the training set, run and registered model that used it.

Screenshots: test-artifacts/sidebar-features.png, sidebar-features-view.png."""

from __future__ import annotations

from pathlib import Path

import browser_helpers as bh
import pytest
from browser_helpers import REPO_ROOT, running_lab, screenshot
from features_view_helpers import prepare

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


def test_features_tab_lists_views_and_shows_drift_and_usage(tmp_path, page, monkeypatch):
    store = tmp_path / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    data = prepare(store)
    a, b, c = data["infos"]
    env = {"MLOPS_JUPYTER_TELEMETRY": "0", **_this_build(tmp_path)}
    with running_lab(tmp_path / "root", store, env=env) as lab:
        page.goto(lab.lab_url("lab"))
        page.wait_for_selector(".jp-SideBar .lm-TabBar-tab", timeout=60_000)
        page.locator('.jp-SideBar .lm-TabBar-tab[data-id="mlops-jupyter-sidebar"]').click()
        panel = page.locator("#mlops-jupyter-sidebar")
        panel.locator(".mj-tab-features").click()
        views = panel.locator(".mj-features-views")
        views.locator('tr[data-view="user_stats"]').wait_for(timeout=30_000)
        assert views.locator("tbody tr").count() == 2
        stale = views.locator('tr[data-view="user_stats"]')
        assert "mj-features-stale" in (stale.get_attribute("class") or "")
        assert "stale" in stale.locator("td").nth(3).text_content()
        fresh = views.locator('tr[data-view="fresh"]')
        assert "mj-features-stale" not in (fresh.get_attribute("class") or "")
        assert "user_stats v2" in stale.text_content()
        screenshot(page, "sidebar-features")
        # one view: versions, drift per feature (drifted marked), usage
        stale.click()
        detail = panel.locator(".mj-features-detail")
        detail.locator(".mj-features-versions").wait_for(timeout=30_000)
        assert detail.locator('.mj-features-versions tr[data-version="2"]').count() == 1
        assert detail.locator('.mj-features-versions tr[data-version="1"]').count() == 1
        pairs = detail.locator(".mj-features-pair")
        assert pairs.count() == 2
        newest = detail.locator(f'.mj-features-pair[data-to="{c.data_version}"]')
        assert newest.get_attribute("data-from") == b.data_version
        drifted = newest.locator("tr.mj-features-drifted")
        assert drifted.count() == 1 and drifted.get_attribute("data-feature") == "score"
        older = detail.locator(f'.mj-features-pair[data-to="{b.data_version}"]')
        assert older.locator("tr.mj-features-drifted").get_attribute("data-feature") == "clicks"
        usage = detail.locator(".mj-features-usage")
        assert usage.locator(f'tr[data-run="{data["run"].id}"]').count() == 1
        assert "ts_train" in usage.text_content()
        models = detail.locator(".mj-features-models").text_content()
        assert "churn" in models
        detail.locator(".mj-features-models").scroll_into_view_if_needed()
        screenshot(page, "sidebar-features-view")
        # back to the list
        detail.locator(".mj-back").click()
        views.locator('tr[data-view="fresh"]').wait_for(timeout=10_000)
    assert page.console_errors == []
