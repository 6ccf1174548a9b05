"""%%mlops_run in a real IPython kernel (nbclient) whose store is a running
`mlops-jupyter server` (MLOPS_JUPYTER_STORE=http://..., MLOPS_JUPYTER_TOKEN): the server's
store, read directly, holds what a local store gets for the same notebook; a server that
goes away mid-notebook neither stalls nor fails a cell, and nothing is lost."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from capture_helpers import _send_cell_ids, make_nb, outputs_text
from nbclient import NotebookClient
from trackserver_helpers import Server, request

from mlops_jupyter.capture import source_hash
from mlops_jupyter.store import api_queries as aq
from mlops_jupyter.store import capture as cstore
from mlops_jupyter.store import open_store

pytestmark = pytest.mark.timeout(180)

LOAD = "%load_ext mlops_jupyter"
TRAIN = """%%mlops_run train --no-live -t owner=ana
import mlops_jupyter as mj
lr = 3e-4
layers = [64, 64]
for step in range(epochs):
    mj.log(step=step, loss=1.0 / (step + 1))
"""
CELLS = [
    LOAD,
    "# parameters\nepochs = 3",
    TRAIN,
    "%mlops_run start span --no-live",
    "y = 2\nmj.log(v=y)",
    "raise ValueError('boom')",
    "%mlops_status",
    "%mlops_run end",
]
# the training cell and the `start` cell twice: second attempts (the first span superseded);
# cell 4 again after cell 5: out of notebook order (a provenance warning)
ORDER = [0, 1, 2, 2, 3, 3, 4, 5, 4, 6, 7]


@pytest.fixture
def server(child_env, tmp_path):
    with Server(child_env, tmp_path) as s:
        yield s


@pytest.fixture
def wtok(store_path):
    from mlops_jupyter.store import tokens

    return tokens.add(open_store(store_path), "writer", "write")


def _kernel_env(monkeypatch, store: str, tok: str | None, tmp_path: Path) -> None:
    """What the kernels started next see (they inherit this process's environment)."""
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", store)
    if tok:
        monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", tok)
    monkeypatch.setenv("MLOPS_JUPYTER_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("MLOPS_JUPYTER_FLUSH_INTERVAL", "0.05")
    monkeypatch.setenv("MLOPS_JUPYTER_EXIT_WAIT", "20")
    monkeypatch.delenv("MLOPS_JUPYTER_NOTEBOOK", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    root = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


def _execute(nb, cwd: Path, steps) -> list[float]:
    """Run `steps` (cell indexes, or callables run between cells) in one kernel that sends
    cell ids like JupyterLab; the kernel is shut down (and its sender exits) at the end.
    Returns each cell's wall time."""
    current: dict = {}
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=60,
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
        on_cell_execute=lambda cell, cell_index: current.update(id=cell.get("id")),
    )
    took = []
    with client.setup_kernel():
        _send_cell_ids(client.kc, current)
        for s in steps:
            if callable(s):
                s()
                continue
            t = time.monotonic()
            client.execute_cell(nb.cells[s], s)
            took.append(time.monotonic() - t)
    return took


def _runs(store) -> list[dict]:
    """Every run of `store` with its cells, oldest first, in comparable form."""
    rows = store.read("SELECT id, uid FROM runs ORDER BY id")
    uid_of = {rid: uid for rid, uid in rows}
    out = []
    for rid, _ in rows:
        d = aq.run_detail(store, rid)
        prev = store.read("SELECT prev_run_id FROM runs WHERE id=?", (rid,))[0][0]
        out.append(
            {
                "name": d["name"],
                "experiment": d["experiment"],
                "status": d["status"],
                "attempt": d["attempt"],
                "prev": None if prev is None else uid_of[prev],
                "uid": d["id"],
                "params": d["params"],
                "tags": {k: v for k, v in d["tags"].items() if not k.startswith("env.")},
                "env": sorted(k for k in d["tags"] if k.startswith("env.")),
                "metrics": sorted((m["key"], m["count"], m["last"]) for m in d["metrics"]),
                "events": sorted(
                    (e["kind"], e["level"], e["message"])
                    for e in d["events"]
                    if e["kind"] in ("provenance", "lifecycle")
                ),
                "cells": [
                    (c["seq"], c["cell_id"], c["execution_count"], c["source"], c["status"])
                    + (c["error"],)
                    for c in cstore.cells_for_run(store, rid)
                ],
            }
        )
    return out


def _same(a: list[dict], b: list[dict]) -> None:
    """Equal but for the run ids (compared through the attempt links)."""
    skip = {"uid", "prev"}
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x["prev"] is None) == (y["prev"] is None)
        assert {k: v for k, v in x.items() if k not in skip} == {
            k: v for k, v in y.items() if k not in skip
        }


def test_a_notebook_over_the_server_records_what_a_local_store_does(
    server, wtok, store_path, tmp_path, monkeypatch
):
    nb = make_nb(CELLS)
    local = tmp_path / "local" / "store.db"
    _kernel_env(monkeypatch, str(local), None, tmp_path)
    _execute(nb, tmp_path, ORDER)
    want = _runs(open_store(local))

    # the same notebook (the same cell ids) in a kernel logging through the server
    _kernel_env(monkeypatch, server.url, wtok, tmp_path)
    _execute(nb, tmp_path, ORDER)
    store = open_store(store_path)
    got = _runs(store)

    # second attempts are linked to the first ones
    assert [(r["name"], r["attempt"], r["status"]) for r in got] == [
        ("train", 1, "finished"),
        ("train", 2, "finished"),
        ("span", 1, "killed"),
        ("span", 2, "finished"),
    ]
    assert got[1]["prev"] == got[0]["uid"] and got[3]["prev"] == got[2]["uid"]
    assert ("lifecycle", "info", "superseded: its start cell was re-executed") in want[2]["events"]
    assert got[0]["params"] == {"epochs": 3, "lr": 3e-4, "layers": [64, 64]}
    assert got[0]["tags"] == {"owner": "ana"} and "env.python" in got[0]["env"]
    assert [c[4:] for c in got[3]["cells"]] == [
        ("ok", None),
        ("ok", None),
        ("error", "ValueError"),
        ("ok", None),
        ("ok", None),
        ("ok", None),
    ]
    assert any(e[:2] == ("provenance", "warning") for e in want[3]["events"])
    assert got[3]["cells"][1][3] == "y = 2\nmj.log(v=y)"
    _same(want, got)
    # read back through the server (what mj.get_run and the CLI over the server show)
    status, d = request(server.url, "GET", f"/api/v1/runs/{got[3]['uid']}", wtok)
    assert status == 200 and d["attempt"] == 2 and d["params"] == {"epochs": 3, "y": 2}
    assert [(c["seq"], c["source"], c["status"]) for c in d["cells"]] == [
        (c[0], c[3], c[4]) for c in got[3]["cells"]
    ]
    # the re-run chain survives a kernel restart: the server knows the cell's last run
    key = cstore.last_run_for_cell(store, "", f"id:{nb.cells[2]['id']}")
    assert cstore.run_uid(store, key) == got[1]["uid"]
    # %mlops_status read the active run through the server (after the kernel's flush)
    assert "run 'span'" in outputs_text(nb.cells[6])
    assert "4 cell(s) recorded" in outputs_text(nb.cells[6])
    assert not list((tmp_path / "spool").rglob("*.spool"))  # never offline


def test_cells_route_is_idempotent_and_checks_its_input(server, wtok, store_path):
    _, run = request(server.url, "POST", "/api/v1/runs", wtok, {"experiment": "e"})
    src = "x = 1"
    body = {
        "cells": {
            "1": {"source_hash": source_hash(src), "start_time": time.time(), "status": "ok"},
            "2": {
                "cell_id": "c2",
                "execution_count": 4,
                "source_hash": source_hash(src),
                "start_time": time.time(),
                "duration_s": 0.5,
                "status": "error",
                "error": "ValueError",
            },
        },
        "cell_sources": {source_hash(src): src},
        "cell_link": {"notebook": "/nb.ipynb", "cell_key": "id:c1"},
    }
    path = f"/api/v1/runs/{run['id']}/cells"
    assert request(server.url, "POST", path, wtok, body) == (200, {"cells": 2})
    assert request(server.url, "POST", path, wtok, body, gz=True) == (200, {"cells": 0})
    status, got = request(server.url, "GET", path, wtok)
    assert status == 200
    assert [(c["seq"], c["source"], c["status"]) for c in got["cells"]] == [
        (1, src, "ok"),
        (2, src, "error"),
    ]
    q = "/api/v1/cell-runs?notebook=%2Fnb.ipynb&cell_key=id%3Ac1"
    assert request(server.url, "GET", q, wtok) == (200, {"id": run["id"]})
    # a source under another text's hash, a bad seq, a bad status: 400, nothing written
    for bad in (
        {"cell_sources": {source_hash("y"): "x = 2"}},
        {"cells": {"0": body["cells"]["1"]}},
        {"cells": {"a": body["cells"]["1"]}},
        {"cells": {"3": {**body["cells"]["1"], "status": "odd"}}},
        {"cell_link": {"notebook": "n"}},
    ):
        status, err = request(server.url, "POST", path, wtok, bad)
        assert status == 400, (bad, err)
    assert len(cstore.cells_for_run(open_store(store_path), run["id"])) == 2
    from mlops_jupyter.store import tokens

    rtok = tokens.add(open_store(store_path), "reader", "read")
    assert request(server.url, "POST", path, rtok, body)[0] == 403


# A NUL in a cell: not Python, and a text PostgreSQL cannot keep. A Python 3.10/3.11 kernel
# never answers such a cell (its compile raises ValueError inside the kernel, with or
# without this package loaded), so there the bad cell is a plain syntax error.
BAD_IS_NUL = sys.version_info >= (3, 12)
BAD = "bad = 1  # \x00" if BAD_IS_NUL else "bad = = 1"


def test_server_away_mid_notebook_neither_stalls_nor_loses_cells(
    server, wtok, store_path, tmp_path, monkeypatch
):
    _kernel_env(monkeypatch, server.url, wtok, tmp_path)
    nb = make_nb(
        [
            LOAD,
            "%mlops_run start away",
            "import mlops_jupyter as mj\nmj.log(a=1.0)",
            "b = 2\nmj.log(a=2.0)",
            "c = 3",
            BAD,
            "%mlops_run end",
            "%%mlops_run never --no-live\nnever = 1",  # a run cannot start without the server
        ]
    )
    restarted: list[Server] = []

    def restart() -> None:
        restarted.append(Server(server.env, tmp_path, port=server.port).start())

    # cells 3 to 5 run while the server is down; the kernel exits after the restart, and
    # its sender sends the spooled records then
    try:
        took = _execute(nb, tmp_path, [0, 1, 2, server.kill, 3, 4, 5, 6, 7, restart])
    finally:
        for s in restarted:
            s.stop()
    assert max(took[3:]) < 5, took  # no cell waited for the server
    # a run over the server lacks nothing a local one records: no notice (the live
    # monitor, telemetry and data versions go through the server)
    said = outputs_text(nb.cells[1])
    assert "monitor" not in said and "logged through the tracking server" not in said
    errors = [o.get("ename") for c in nb.cells for o in c.outputs if o.get("ename")]
    # the NUL cell's own error, nothing from the capture; a run that cannot start says so
    # in one line (a UsageError, as the magics' other refusals)
    assert errors == ["SyntaxError"]
    said = outputs_text(nb.cells[7])
    assert "the run did not start" in said and "cannot be reached" in said
    assert "Traceback" not in said
    store = open_store(store_path)
    (rid,) = store.read("SELECT id FROM runs WHERE name='away'")[0]
    d = aq.run_detail(store, rid)
    assert d["status"] == "finished"
    assert d["params"] == {"b": 2, "c": 3}
    assert [(m["key"], m["count"]) for m in d["metrics"]] == [("a", 2)]
    cells = cstore.cells_for_run(store, rid)
    # the NUL cell is recorded without its text (which the client does not send: a refused
    # request would drop the points travelling with it)
    want = [c.source for c in nb.cells[1:7]]
    if BAD_IS_NUL:
        want[4] = None
    assert [c["source"] for c in cells] == want
    assert [c["seq"] for c in cells] == [1, 2, 3, 4, 5, 6]
    assert cells[4]["status"] == "error" and cells[4]["error"] == "SyntaxError"
