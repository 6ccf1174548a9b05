"""The sidebar's Loop tab in real headless Chromium against a real `jupyter lab`, on the
store test_server_loop.py prepares (the real watcher waits for an approval of clf v2):
the tab lists the models (the one named with HTML shown as text), a model shows its
pending approval, its gate verdict per rule with the evidence folded, its signal and the
lineage picture; clicking Approve with a reason records the decision in the store and the
audit log exactly as `mlops-jupyter approve` does. Nothing stored runs as markup.

Screenshots: test-artifacts/sidebar-loop.png, sidebar-loop-model.png, sidebar-loop-approved.png."""

from __future__ import annotations

import os

import browser_helpers as bh
import pytest
from browser_helpers import running_lab, screenshot
from test_browser_features import _this_build
from test_server_loop import EVIL, EVIL_MODEL, RULE, prepare

import mlops_jupyter as mj
from mlops_jupyter.loop.watch import poll
from mlops_jupyter.store import loop_state, open_store

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]
browser, page = bh.browser, bh.page  # shared fixtures


def test_loop_tab_approves_a_waiting_candidate_and_draws_the_lineage(tmp_path, page, monkeypatch):
    store = tmp_path / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    prepare(store, tmp_path)
    env = {"MLOPS_JUPYTER_TELEMETRY": "0", **_this_build(tmp_path)}
    with running_lab(tmp_path / "root", store, env=env) as lab:
        _, detail = lab.api("mlops/api/v1/loop/clf")
        page.goto(lab.lab_url("lab"))
        page.wait_for_selector(".jp-SideBar .lm-TabBar-tab", timeout=60_000)
        page.locator('.jp-SideBar .lm-TabBar-tab[data-id="mlops-jupyter-sidebar"]').click()
        panel = page.locator("#mlops-jupyter-sidebar")
        panel.locator(".mj-tab-loop").click()
        models = panel.locator(".mj-loop-models")
        models.locator('tr[data-model="clf"]').wait_for(timeout=30_000)
        assert models.locator("tbody tr").count() == 2
        clf = models.locator('tr[data-model="clf"]')
        assert "mj-loop-has-pending" in (clf.get_attribute("class") or "")
        cells = [c.text_content() for c in clf.locator("td").all()]
        assert cells == ["clf1 pending approval", "production v1", "v2 passed vs v1"]
        # the model named with HTML is its text, nothing more
        evil = models.locator('tbody tr:not([data-model="clf"])')
        assert evil.locator(".mj-loop-model-name").text_content() == EVIL_MODEL
        screenshot(page, "sidebar-loop")

        clf.click()
        view = panel.locator(".mj-loop-detail")
        card = view.locator('.mj-loop-approval[data-version="2"]')
        card.wait_for(timeout=30_000)
        assert RULE in card.text_content()
        gate = view.locator('.mj-loop-gate[data-version="2"]')
        assert "mj-loop-gate-passed" in (gate.get_attribute("class") or "")
        gate.locator("summary").first.click()  # unfold the verdict
        rules = gate.locator(".mj-loop-rules tbody tr[data-rule]")
        assert rules.count() == 2
        names = rules.evaluate_all("rows => rows.map(r => [r.dataset.rule, r.dataset.status])")
        assert [f"custom({EVIL})", "pass"] in names
        k = names.index([f"custom({EVIL})", "pass"])
        name = rules.nth(k).locator(".mj-loop-rule-name")
        assert name.text_content() == f"custom({EVIL})"
        evidence = gate.locator(".mj-loop-evidence").filter(has_text="interval")
        evidence.locator("summary").click()
        assert "interval" in evidence.locator("pre").text_content()
        signal = view.locator(".mj-loop-signals tbody tr")
        assert signal.count() == 1 and signal.get_attribute("data-state") == "waiting"
        # the lineage picture: one box per node of the graph, the hostile run name as text
        svg = view.locator(".mj-loop-lineage svg")
        svg.wait_for(timeout=10_000)
        nodes = svg.locator("g[data-node]")
        assert nodes.count() == len(detail["lineage"]["nodes"]) >= 4
        assert svg.locator("path.mj-loop-edge").count() == len(detail["lineage"]["edges"])
        run_box = svg.locator(f'g[data-node="run:{_run_of_v1(store)}"]')
        assert run_box.locator("text").first.text_content() == EVIL[:27] + "…"
        assert nodes.locator("rect").first.bounding_box()["width"] > 100  # drawn, not empty
        drawn = nodes.evaluate_all(
            "gs => gs.map(g => [g.dataset.node, +g.querySelector('rect').getAttribute('x'),"
            " +g.querySelector('rect').getAttribute('y')])"
        )
        assert sorted(drawn) == _python_layout(store)  # where ModelLineage.svg() puts them
        view.locator(".mj-loop-lineage").scroll_into_view_if_needed()
        screenshot(page, "sidebar-loop-model")

        # a forged request with the login cookie but without the XSRF header is refused
        forged = page.evaluate(
            """async url => {
                const r = await fetch(url, {method: 'POST', credentials: 'same-origin',
                                            body: JSON.stringify({version: 2})});
                return [r.status, await r.text()];
            }""",
            lab.url + "mlops/api/v1/loop/clf/approve",
        )
        assert forged[0] == 403, forged
        assert loop_state.get_approval(open_store(store), "clf", 2) is None
        card.locator(".mj-loop-reason").fill(f"reviewed {EVIL}")
        card.locator(".mj-loop-approve").click()
        view.locator(".mj-loop-decisions").wait_for(timeout=30_000)
        assert view.locator(".mj-loop-approval").count() == 0
        row = view.locator(".mj-loop-decisions tbody tr").first
        cells = [c.text_content() for c in row.locator("td").all()]
        assert cells[0] == "approve v2" and cells[1].startswith(_login() + ", ")
        assert cells[2] == f"reviewed {EVIL}"
        assert "v2 approved" in view.locator(".mj-loop-notice").text_content()
        screenshot(page, "sidebar-loop-approved")
        # the watcher's next poll promotes v2; the open view follows by itself (its poll),
        # and the verdict unfolded above stays unfolded
        unfolded = view.locator('.mj-loop-gate[data-version="2"]')
        assert unfolded.get_attribute("open") is not None  # kept through the redraw
        mj.set_store(store)
        try:
            assert [o["state"] for o in poll(str(tmp_path / "loop.toml"))] == ["done"]
        finally:
            mj.set_store(None)
        # the view is redrawn (new elements): look it up by selector each time
        page.wait_for_function(
            """() => (document.querySelector('#mlops-jupyter-sidebar .mj-loop-head .mj-muted')
                      ?.textContent || '').startsWith('production v2')""",
            timeout=20_000,
        )
        assert view.locator(".mj-loop-signals tbody tr").get_attribute("data-state") == "done"
        assert unfolded.get_attribute("open") is not None
        # nothing stored became markup anywhere in the page
        assert page.locator("#mlops-jupyter-sidebar img").count() == 0
        assert page.evaluate("() => window.__mj_xss === undefined")
    got = loop_state.get_approval(open_store(store), "clf", 2)
    assert (got["decision"], got["reason"], got["user"]) == (
        "approved",
        f"reviewed {EVIL}",
        _login(),
    )
    mj.set_store(store)
    try:
        rows = mj.audit(model="clf", action="approve")
    finally:
        mj.set_store(None)
    assert rows.height == 1 and rows["reason"][0] == f"reviewed {EVIL}"
    # the one error: the browser's note on the forged request's 403
    assert [e for e in page.console_errors if "status of 403" not in e] == []


def _login() -> str:
    from mlops_jupyter.registry import _user

    return _user()


def _run_of_v1(store: os.PathLike) -> str:
    from mlops_jupyter.store import registry as rs

    return rs.find_version(open_store(store), "clf", 1)["run_id"]


def _python_layout(store: os.PathLike) -> list:
    """[node id, x, y] of every box of ModelLineage.svg(), sorted."""
    import xml.etree.ElementTree as ET

    mj.set_store(store)
    try:
        svg = mj.lineage("clf").svg()
    finally:
        mj.set_store(None)
    ns = {"s": "http://www.w3.org/2000/svg"}
    out = []
    for g in ET.fromstring(svg).findall("s:g", ns):
        node_id = g.find("s:title", ns).text.split(": ", 1)[1]
        rect = g.find("s:rect", ns)
        out.append([node_id, float(rect.get("x")), float(rect.get("y"))])
    return sorted(out)
