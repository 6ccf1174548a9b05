"""The live monitor's media view in real JupyterLab + headless Chromium: the latest image
per key is shown, and the step slider brings back an earlier step's image."""

from __future__ import annotations

import pytest
from browser_helpers import (  # noqa: F401
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

CELLS = [
    "import numpy as np, mlops_jupyter as mj",
    """with mj.start_run("browser-media") as run:
    w = mj.live(rate=5)
    for i in range(5):
        img = np.zeros((16, 16, 3), np.uint8)
        img[:, :, 0] = 50 * i  # each step its own red level
        mj.log_image("samples", img, step=i * 10)
        mj.log(step=i, loss=1 / (i + 1))
""",
]

_PIXEL = """(sel) => {
    const img = document.querySelector(sel);
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    return ctx.getImageData(1, 1, 1, 1).data[0];
}"""


def test_media_slider_shows_each_step(lab_server, page):  # noqa: F811
    make_notebook(lab_server.root_dir / "media.ipynb", CELLS)
    open_notebook(page, lab_server, "media.ipynb")
    run_cell(page, 0)
    run_cell(page, 1)
    wait_kernel_idle(page, 60_000)
    box = '.mlw-media-item[data-key="samples"]'
    page.wait_for_function(
        f"""() => {{
            const b = document.querySelector('{box}');
            return b && b.dataset.steps === '5' && b.dataset.step === '40';
        }}""",
        timeout=30_000,
    )
    page.wait_for_function(f"() => document.querySelector('{box} img').complete")
    assert page.evaluate(_PIXEL, f"{box} img") == 200  # the latest step
    slider = page.locator(f"{box} input[type=range]")
    slider.fill("1")  # sets the value and fires input
    page.wait_for_function(f"() => document.querySelector('{box}').dataset.step === '10'")
    page.wait_for_function(f"() => document.querySelector('{box} img').complete")
    assert page.evaluate(_PIXEL, f"{box} img") == 50
    assert "step 10 (2/5)" in (page.locator(f"{box} .mlw-media-step").text_content() or "")
    screenshot(page, "live-media-slider")
    errors = [e for e in page.console_errors if "mlw-" in e or "live.js" in e]
    assert not errors, errors
