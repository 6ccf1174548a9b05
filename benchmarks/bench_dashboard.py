"""Dashboard figures against a real `jupyter lab` and headless Chromium (run by
bench_server.py, or alone: python benchmarks/bench_dashboard.py).

  - first paint: sidebar button "Open as dashboard" clicked -> the runs table shows its
    first rows with 20 columns (10 params, 10 metrics), over 10k and 100k runs;
  - live run: 4 metric keys growing while the curves tab polls; bytes of a poll with
    since_step against a full refetch of the same curves, and the browser's cost of one
    poll (merge + in-place uPlot redraw) for 4 curves;
  - parallel coordinates: 2,000 trials x 8 params + objective, canvas redraw per brush.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser_helpers import launch_chromium, start_lab, stop_lab  # noqa: E402

API = "mlops/api/v1/"
DASH = "#mlops-jupyter-dashboard"


def bulk_columns(store: Path, n: int, n_params: int, n_metrics: int, experiment: str) -> None:
    """n finished runs with n_params numeric params and n_metrics metric summaries each."""
    import secrets

    from mlops_jupyter.store import open_store

    st = open_store(store)
    t0 = time.time() - n
    with st.write() as c:
        c.execute("INSERT OR IGNORE INTO experiments(name, created) VALUES(?,?)", (experiment, t0))
        eid = c.execute("SELECT id FROM experiments WHERE name=?", (experiment,)).fetchone()[0]
        kids = []
        for m in range(n_metrics):
            c.execute("INSERT OR IGNORE INTO metric_keys(key) VALUES(?)", (f"m{m}",))
            kids.append(
                c.execute("SELECT id FROM metric_keys WHERE key=?", (f"m{m}",)).fetchone()[0]
            )
        first = c.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0] + 1
        runs, params, summ = [], [], []
        for i in range(n):
            rid, start = first + i, t0 + i
            runs.append(
                (
                    rid,
                    secrets.token_hex(6),
                    eid,
                    f"{experiment}-{i:06d}",
                    "finished",
                    start,
                    start + 1 + i % 5,
                    start + 1,
                    "bench",
                    0,
                    None,
                    None,
                    1,
                )
            )
            for p in range(n_params):
                params.append((rid, f"p{p}", json.dumps(round(((i * (p + 3)) % 997) / 997, 4))))
            for m, kid in enumerate(kids):
                v = ((i * (m + 7)) % 1009) / 1009
                summ.append((rid, kid, 10, 9, v, start, v, 1.0))
        c.executemany(
            "INSERT INTO runs(id, uid, experiment_id, name, status, start_time, end_time,"
            " heartbeat, host, pid, pid_start, parent_id, attempt) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
            runs,
        )
        c.executemany("INSERT INTO params VALUES(?,?,?)", params)
        c.executemany("INSERT INTO metric_summary VALUES(?,?,?,?,?,?,?,?)", summ)


def _open_dashboard(page, server) -> float:
    """Click "Open as dashboard" in the sidebar; ms until the first rows are drawn."""
    page.goto(server.lab_url("lab"))
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="mlops-jupyter-sidebar"]')
    tab.wait_for(timeout=60_000)
    page.wait_for_timeout(500)  # let JupyterLab restore its layout (the sidebar may be open)
    if not page.locator("#mlops-jupyter-sidebar").is_visible():
        tab.click()
    page.wait_for_selector("#mlops-jupyter-sidebar .mj-run", timeout=60_000)
    page.wait_for_timeout(300)
    t = time.perf_counter()
    page.locator(".mj-open-dashboard").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#mlops-jupyter-dashboard .mj-dash-row').length > 10"
        " && document.querySelectorAll('#mlops-jupyter-dashboard .mj-dash-th').length >= 25",
        timeout=60_000,
        polling="raf",
    )
    return (time.perf_counter() - t) * 1000


def first_paint(pw, n: int, target_ms: float, repeat: int = 3) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mj-bench-dash-"))
    store = tmp / "store.db"
    t = time.perf_counter()
    bulk_columns(store, n, 10, 10, "wide")
    print(
        f"\ndashboard first paint, {n:,} runs x 20 columns"
        f" (store built in {time.perf_counter() - t:.1f} s):"
    )
    server = start_lab(tmp / "root", store_path=store, env={"MLOPS_JUPYTER_TELEMETRY": "0"})
    b = launch_chromium(pw)
    try:
        out = []
        for _ in range(repeat):
            ctx = b.new_context(viewport={"width": 1600, "height": 1000})
            out.append(_open_dashboard(ctx.new_page(), server))
            ctx.close()
        med = statistics.median(out)
        print(
            "  click -> rows drawn: "
            + ", ".join(f"{x:.0f}" for x in out)
            + f" ms (median {med:.0f} ms; target {target_ms:.0f} ms -> "
            + f"{'OK' if med <= target_ms else 'MISSED'})"
        )
    finally:
        b.close()
        stop_lab(server)


def live_and_parallel(pw) -> None:
    import mlops_jupyter as mj

    tmp = Path(tempfile.mkdtemp(prefix="mj-bench-dash-"))
    store = tmp / "store.db"
    bulk_columns(store, 2000, 8, 1, "sweep")
    mj.set_store(store)
    run = mj.start_run("live", experiment="live")
    for s in range(5000):
        mj.log(step=s, a=s * 1.0, b=-s * 1.0, c=s % 7 * 1.0, d=1.0 / (s + 1))
    mj.flush()
    stop = threading.Event()

    def train() -> None:
        s = 5000
        while not stop.is_set():
            for _ in range(20):  # 20 steps/s of 4 metrics
                mj.log(step=s, a=s * 1.0, b=-s * 1.0, c=s % 7 * 1.0, d=1.0 / (s + 1))
                s += 1
            time.sleep(1.0)

    th = threading.Thread(target=train, daemon=True)
    th.start()
    server = start_lab(tmp / "root", store_path=store, env={"MLOPS_JUPYTER_TELEMETRY": "0"})
    b = launch_chromium(pw)
    try:
        ids = f"ids={run.id}&keys=a,b,c,d&max_points=1000"
        time.sleep(1.5)
        _, full = server.api(API + "compare?" + ids)
        last = min(cv["step"][-1] for k in full["curves"].values() for cv in k)
        time.sleep(3.0)  # one poll interval of new points
        _, inc = server.api(API + f"compare?{ids}&since_step={last}")
        _, full2 = server.api(API + "compare?" + ids)
        new = sum(len(cv["step"]) for k in inc["curves"].values() for cv in k)
        print("\nlive run, 4 curves, one poll (3 s of 20 steps/s):")
        print(
            f"  since_step answer {len(json.dumps(inc)):,} B ({new} new points) vs full refetch"
            f" {len(json.dumps(full2)):,} B"
        )
        ctx = b.new_context(viewport={"width": 1600, "height": 1000})
        page = ctx.new_page()
        page.goto(server.lab_url("lab"))
        page.wait_for_selector(".jp-SideBar .lm-TabBar-tab", timeout=60_000)
        page.keyboard.press("Control+Shift+c")
        page.locator(".lm-CommandPalette-input").fill("Open as dashboard")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"{DASH} .mj-dash-row", timeout=60_000)
        page.locator(f"{DASH} .mj-dash-experiment").select_option("live")
        page.wait_for_function(
            f"() => document.querySelectorAll('{DASH} .mj-chart canvas').length === 4",
            timeout=30_000,
        )
        costs = []
        for _ in range(4):
            n0 = int(page.locator(f"{DASH} .mj-dash-curves").get_attribute("data-polls") or 0)
            page.wait_for_function(
                f"() => Number(document.querySelector('{DASH} .mj-dash-curves').dataset.polls"
                f" || 0) > {n0}",
                timeout=20_000,
            )
            host = page.locator(f"{DASH} .mj-dash-curves")
            costs.append(
                (
                    float(host.get_attribute("data-poll-ms")),
                    int(host.get_attribute("data-poll-points")),
                )
            )
        med = statistics.median(c for c, _ in costs)
        print(
            "  browser cost per poll (merge + in-place redraw of 4 charts): "
            + ", ".join(f"{c:.1f} ms/{p} pts" for c, p in costs)
            + f" (median {med:.1f} ms; target 5 ms -> {'OK' if med <= 5 else 'MISSED'})"
        )
        ctx.close()

        # parallel coordinates over the 2,000-trial sweep
        ctx = b.new_context(viewport={"width": 1600, "height": 1000})
        page = ctx.new_page()
        page.goto(server.lab_url("lab"))
        page.wait_for_selector(".jp-SideBar .lm-TabBar-tab", timeout=60_000)
        page.keyboard.press("Control+Shift+c")
        page.locator(".lm-CommandPalette-input").fill("Open as dashboard")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"{DASH} .mj-dash-row", timeout=60_000)
        page.locator(f"{DASH} .mj-dash-experiment").select_option("sweep")
        page.locator(f"{DASH} .mj-dash-tab-parallel").click()
        page.wait_for_selector(f"{DASH} .mj-pc-hit[data-axis='params.p7']", timeout=30_000)
        n_axes = page.locator(f"{DASH} .mj-pc-axis").count()
        times = []
        for i in range(5):
            hit = page.locator(f"{DASH} .mj-pc-hit").nth(i % 8)
            box = hit.bounding_box()
            x = box["x"] + box["width"] / 2
            page.mouse.move(x, box["y"] + box["height"] * 0.2)
            page.mouse.down()
            page.mouse.move(x, box["y"] + box["height"] * 0.6, steps=4)
            page.mouse.up()
            page.wait_for_timeout(200)
            times.append(
                float(page.locator(f"{DASH} .mj-parcoords").get_attribute("data-redraw-ms"))
            )
        med = statistics.median(times)
        print(
            f"\nparallel coordinates, 2,000 trials x {n_axes - 1} params + objective,"
            " redraw per brush: "
            + ", ".join(f"{t:.1f}" for t in times)
            + f" ms (median {med:.1f} ms; target 100 ms -> {'OK' if med <= 100 else 'MISSED'})"
        )
        ctx.close()
    finally:
        stop.set()
        th.join(5)
        mj.end_run()
        mj.set_store(None)
        b.close()
        stop_lab(server)


def run_all() -> None:
    from playwright.sync_api import sync_playwright

    os.environ["MLOPS_JUPYTER_TELEMETRY"] = "0"
    with sync_playwright() as pw:
        first_paint(pw, 10_000, 1000)
        first_paint(pw, 100_000, 2000)
        live_and_parallel(pw)


if __name__ == "__main__":
    run_all()
