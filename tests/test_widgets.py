"""Widgets: decimation, the live monitor following a real run, compare(), reprs, and a real
IPython kernel (nbclient) executing a notebook that displays them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import altair as alt
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from notebook_helpers import run_notebook

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.widgets.render import decimate, jsonable, static_html

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
STATE_MIME = "application/vnd.jupyter.widget-state+json"
ROOT = Path(__file__).resolve().parent.parent


# -- pure parts ---------------------------------------------------------------------------
def test_decimate_keeps_extremes_and_gaps():
    n = 1_000_000
    x = np.arange(n)
    y = np.sin(x / 5000.0)
    y[123_457] = 50.0  # a spike must survive
    y[700_001] = np.nan  # and a gap
    dx, dy = decimate(x, y, 1000)
    assert len(dx) <= 2 * 1000 + 20
    assert np.all(np.diff(dx) > 0)
    assert 50.0 in dy and np.isnan(dy).any()
    assert dx[0] == 0 and dx[-1] == n - 1
    short_x, short_y = decimate(x[:100], y[:100], 1000)
    assert len(short_x) == 100
    assert jsonable(np.array([1.0, np.nan, np.inf])) == [1.0, None, None]


def test_static_html_is_self_contained():
    h = static_html(
        "r (abc)",
        "finished",
        {"loss": {"x": [0, 1, 2], "y": [3.0, None, 1.0], "n": 3, "last": 1.0}},
        [{"label": "CPU", "value": "3 %", "level": "ok"}],
        "nominal",
        [{"level": "critical", "message": "loss became nan"}],
    )
    assert "<svg" in h and "loss became nan" in h and "<script" not in h


# -- the live monitor on a real run (no kernel) ---------------------------------------------
def test_live_follows_a_run_and_keeps_the_final_state():
    with mj.start_run("followed") as run:
        w = mj.live(display=False, rate=10)
        assert w.status == "running" and w.title.startswith("followed")
        for i in range(50_000):
            mj.log(step=i, loss=1.0 / (i + 1))
        deadline = time.monotonic() + 10
        while w.series.get("loss", {}).get("n", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0 < w.series["loss"]["n"] <= 50_000  # updated while the run is going
        mj.log(step=50_000, acc=float("nan"))
    w.wait(5)
    assert w.status == "finished"
    s = w.series["loss"]
    assert s["n"] == 50_000 and len(s["x"]) <= 1100 and s["min"] == pytest.approx(2e-5)
    assert w.series["acc"]["y"] == [None]
    assert w.updates >= 2
    # a finished run is drawn once, by id
    w2 = mj.live(run.id, display=False)
    assert w2.series["loss"]["n"] == 50_000 and w2.status == "finished"


def test_live_bad_input():
    with pytest.raises(InvalidInputError, match="no run to show"):
        mj.live(display=False)
    with mj.start_run("x"):
        with pytest.raises(InvalidInputError, match="rate"):
            mj.live(display=False, rate=0)
        with pytest.raises(InvalidInputError, match="keys"):
            mj.live(display=False, keys="loss")
    with pytest.raises(mj.RunNotFoundError):
        mj.live("nope", display=False)


def test_telemetry_panel_samples_without_a_run():
    p = mj.widgets.telemetry_panel(interval=0.1, display=False)
    time.sleep(0.35)
    p.stop()
    assert p.updates >= 2 and "sys/cpu/percent" in p.series
    assert any(it["label"] == "CPU" for it in p.telemetry)
    assert mj.runs().height == 0  # no run was created


# -- compare ------------------------------------------------------------------------------
def _two_runs():
    ids = []
    for lr in (0.1, 0.01):
        with mj.start_run(f"lr={lr}", params={"lr": lr, "batch": 32}) as r:
            for i in range(2000):
                mj.log(step=i, loss=lr * 100 / (i + 1), acc=i / 2000)
        ids.append(r.id)
    return ids


def test_compare_table_chart_and_highlight():
    ids = _two_runs()
    c = mj.compare(ids)
    assert c.metric == "loss" and c.differing == ["lr"]
    fields = c.table["field"].to_list()
    assert {"lr", "batch", "loss.last", "loss.min", "acc.max"} <= set(fields)
    html = c._repr_html_()
    assert html.count("mlops-diff") == 1 and "<svg" in html
    spec = c.chart.to_dict()
    assert spec["mark"]["type"] == "line"
    values = spec["data"]["values"]
    assert len(values) <= 2 * 520 and {v["run"] for v in values} == set(c.labels)
    c2 = mj.compare(mj.runs().head(2), metric="acc")
    assert c2.metric == "acc" and len(c2.runs) == 2
    with pytest.raises(InvalidInputError, match="no run has a metric"):
        mj.compare(ids, metric="f1")
    with pytest.raises(InvalidInputError, match="at least one"):
        mj.compare([])
    with pytest.raises(InvalidInputError):
        mj.compare(42)


def test_run_html_repr():
    ids = _two_runs()
    h = mj.widgets.run_html(ids[0])
    assert "lr=0.1" in h and "<svg" in h and "finished" in h


# -- a real kernel ------------------------------------------------------------------------
CELLS = [
    "%load_ext mlops_jupyter",
    # the live monitor inside a tracked loop
    """import time, mlops_jupyter as mj
with mj.start_run("nb-live", params={"lr": 0.1}) as run:
    w = mj.live()
    for i in range(3000):
        mj.log(step=i, loss=1 / (i + 1))
        if i % 1000 == 0:
            time.sleep(0.3)
    mj.log(step=3000, acc=float("nan"))  # raises a `nonfinite` alert
""",
    "print(w.status, w.series['loss']['n'])",
    # %%mlops_run shows the live monitor itself
    """%%mlops_run magic-run
lr = 0.01
for i in range(500):
    mj.log(step=i, loss=2 / (i + 1))
""",
    "%mlops_compare --last 2 --metric loss",
    "%mlops_telemetry --interval 0.2",
    "time.sleep(0.5)\n%mlops_telemetry --stop",
    "run",
    "mj.live(run)  # displayed once, even as the cell's value",
]


def test_notebook_displays_widgets_with_valid_state(tmp_path, monkeypatch):
    store = tmp_path / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = run_notebook(CELLS, tmp_path)
    nbformat.validate(nb)
    state = nb.metadata["widgets"][STATE_MIME]["state"]

    def widget_outputs(cell):
        return [o for o in cell.outputs if WIDGET_MIME in o.get("data", {})]

    # live monitor of mj.live(): one output, a known model, with the final state in it
    (out,) = widget_outputs(nb.cells[1])
    model = state[out["data"][WIDGET_MIME]["model_id"]]
    st = model["state"]
    assert model["model_name"] == "AnyModel"
    assert st["series"]["loss"]["n"] == 3000 and st["status"] == "finished"
    assert len(st["series"]["loss"]["x"]) == len(st["series"]["loss"]["y"]) <= 1100
    assert st["telemetry"] and st["updates"] >= 2
    assert [a["message"] for a in st["alerts"]] == ["acc became nan at step 3000"]
    assert st["series"]["acc"]["y"] == [None]
    esm = st["_esm"]
    assert "export default" in esm and "http" not in esm.replace("http-equiv", "")  # no CDN
    # the same output carries a static copy for front ends without widgets
    assert "<svg" in out["data"]["text/html"]
    assert "finished 3000" in "".join(o.get("text", "") for o in nb.cells[2].outputs)

    # %%mlops_run: the capture magic shows the same monitor
    (out,) = widget_outputs(nb.cells[3])
    st = state[out["data"][WIDGET_MIME]["model_id"]]["state"]
    assert st["title"].startswith("magic-run") and st["series"]["loss"]["n"] == 500
    assert st["status"] == "finished"

    # %mlops_compare: an HTML table and one vega-lite chart, labelled with the version
    # altair writes, and no text/html that front ends would prefer over it
    datas = [o["data"] for o in nb.cells[4].outputs if o["output_type"] == "display_data"]
    assert any("mlops-compare" in d.get("text/html", "") for d in datas)
    vl = f"application/vnd.vegalite.v{alt.SCHEMA_VERSION.lstrip('v').split('.')[0]}+json"
    chart = next(d for d in datas if any(k.startswith("application/vnd.vegalite") for k in d))
    assert set(chart) == {vl, "text/plain"}
    spec = chart[vl]
    assert spec["$schema"].endswith(f"/vega-lite/{alt.SCHEMA_VERSION}.json")
    assert {v["run"].split(" ")[0] for v in spec["data"]["values"]} == {"nb-live", "magic-run"}

    # %mlops_telemetry: a live panel without a run
    (out,) = widget_outputs(nb.cells[5])
    st = state[out["data"][WIDGET_MIME]["model_id"]]["state"]
    assert st["mode"] == "telemetry" and "sys/cpu/percent" in st["series"]

    # a Run has an HTML repr once the extension is loaded
    html = nb.cells[7].outputs[0]["data"]["text/html"]
    assert "nb-live" in html and "mlops-run" in html
    (out,) = widget_outputs(nb.cells[8])
    assert state[out["data"][WIDGET_MIME]["model_id"]]["state"]["series"]["loss"]["n"] == 3000
    json.dumps(state)  # the saved state is plain JSON


def test_example_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(tmp_path / "store.db"))
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(ROOT / "notebooks" / "telemetry.ipynb", as_version=4)
    NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert sum(WIDGET_MIME in o.get("data", {}) for o in outputs) >= 3
    mj.set_store(tmp_path / "store.db")
    assert mj.alerts()["rule"].to_list() == ["loss_rising"]
