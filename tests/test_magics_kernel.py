"""%%mlops_run and the cell hooks in a real IPython kernel (nbclient), asserting on the
store afterwards."""

from __future__ import annotations

import subprocess

import pytest
from capture_helpers import execute, make_nb, outputs_text, query, use_store
from nbclient.exceptions import CellExecutionError

import mlops_jupyter as mj

pytestmark = pytest.mark.timeout(180)

LOAD = "%load_ext mlops_jupyter"
TRAIN = """%%mlops_run train --no-live
import mlops_jupyter as mj
lr = 3e-4
layers = [64, 64]
opt = "adam"
for step in range(epochs):
    mj.log(step=step, loss=1.0 / (step + 1))
"""


def _run(store, name: str) -> dict:
    (uid,) = query(store, "SELECT uid FROM runs WHERE name=? ORDER BY id DESC LIMIT 1", (name,))[0]
    return mj.get_run(uid)


def _cells(store, name: str) -> list[dict]:
    from mlops_jupyter.store import capture as cstore
    from mlops_jupyter.store import open_store

    (rid,) = query(store, "SELECT id FROM runs WHERE name=? ORDER BY id DESC LIMIT 1", (name,))[0]
    return cstore.cells_for_run(open_store(store), rid)


def test_kernel_runs_the_venv_python(tmp_path, monkeypatch):
    use_store(monkeypatch, tmp_path)
    import sys

    nb = execute(make_nb(["import sys; print(sys.executable)"]), tmp_path)
    assert outputs_text(nb.cells[0]).strip() == sys.executable


def test_params_from_cell_and_parameters_cell_with_environment(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    repo = tmp_path / "proj"
    repo.mkdir()
    nb_path = repo / "train.ipynb"
    nb = make_nb([LOAD, ("epochs = 3\nlr = 0.1\nbatch = 2**5", ["parameters"]), TRAIN], nb_path)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "train.ipynb"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "nb"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.setenv("MLOPS_JUPYTER_NOTEBOOK", str(nb_path))

    execute(nb, repo)

    run = _run(store, "train")
    assert run["status"] == "finished"
    # the training cell's own literals win over the parameters cell
    assert run["params"] == {
        "epochs": 3,
        "lr": 3e-4,
        "batch": 32,
        "layers": [64, 64],
        "opt": "adam",
    }
    tags = run["tags"]
    assert tags["notebook.path"] == str(nb_path.resolve())
    assert tags["git.commit"] == head
    assert tags["git.dirty"] is False
    assert tags["env.python"]
    assert tags["env.numpy"] and tags["env.polars"]
    assert tags["env.host"] == run["host"]
    (loss,) = [m for m in run["metrics"] if m["key"] == "loss"]
    assert loss["count"] == 3 and loss["last"] == pytest.approx(1 / 3)


def test_papermill_style_injected_parameters_without_notebook_path(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    nb = make_nb([LOAD, "epochs = 1", "# Parameters\nepochs = 2\nname = 'injected'\n", TRAIN])
    execute(nb, tmp_path)
    run = _run(store, "train")
    # the plain `epochs = 1` cell is not a parameters cell; the injected one is
    assert run["params"]["epochs"] == 2
    assert run["params"]["name"] == "injected"
    assert "notebook.path" not in run["tags"]


def test_cells_recorded_in_order_with_statuses(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    nb = make_nb(
        [
            LOAD,
            "x = 1",  # before the run: not recorded
            "%mlops_run start span --no-live",
            "y = x + 1\nimport mlops_jupyter as mj\nmj.log(v=y)",
            "raise ValueError('boom')",
            "z = 3",
            "%mlops_run end",
            "after = 1",  # after the run: not recorded
        ]
    )
    execute(nb, tmp_path, cell_ids=True, allow_errors=True)
    cells = _cells(store, "span")
    assert [c["cell_id"] for c in cells] == [c.id for c in nb.cells[2:7]]
    assert [c["status"] for c in cells] == ["ok", "ok", "error", "ok", "ok"]
    assert [c["error"] for c in cells] == [None, None, "ValueError", None, None]
    assert [c["seq"] for c in cells] == [1, 2, 3, 4, 5]
    counts = [c["execution_count"] for c in cells]
    assert counts == sorted(counts) and len(set(counts)) == 5
    assert cells[1]["source"] == nb.cells[3].source
    assert all(c["duration_s"] >= 0 and c["start_time"] > 0 for c in cells)
    starts = [c["start_time"] for c in cells]
    assert starts == sorted(starts)
    run = _run(store, "span")
    assert run["status"] == "finished"
    # literal assignments of cells inside a spanning run become params too
    assert run["params"] == {"z": 3}
    assert [m["key"] for m in run["metrics"]] == ["v"]


def test_idle_extension_writes_nothing(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    execute(make_nb([LOAD, "a = 1", "b = a * 2", "print(b)"]), tmp_path)
    if store.exists():
        assert query(store, "SELECT count(*) FROM runs")[0][0] == 0
        assert query(store, "SELECT count(*) FROM cell_executions")[0][0] == 0


def test_failing_cell_makes_failed_run_and_an_error_cell(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    nb = make_nb([LOAD, "%%mlops_run broken --no-live\nlr = 0.5\n1 / 0", "never = 1"])
    with pytest.raises(CellExecutionError) as exc:
        execute(nb, tmp_path)
    assert "ZeroDivisionError" in str(exc.value)
    run = _run(store, "broken")
    assert run["status"] == "failed"
    assert run["params"] == {"lr": 0.5}
    out = nb.cells[1].outputs
    assert [o["output_type"] for o in out].count("error") == 1  # the traceback, shown once
    cells = _cells(store, "broken")
    assert [(c["status"], c["error"]) for c in cells] == [("error", "ZeroDivisionError")]
    # run-all stops at the failed cell, as it would without the magic
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None


@pytest.mark.parametrize("cell_ids", [True, False], ids=["cell-id", "source-hash"])
def test_reexecution_makes_a_linked_new_attempt(tmp_path, monkeypatch, cell_ids):
    store = use_store(monkeypatch, tmp_path)
    nb = make_nb([LOAD, "epochs = 2", TRAIN])
    execute(nb, tmp_path, order=[0, 1, 2, 2, 2], cell_ids=cell_ids)
    rows = query(store, "SELECT id, status, attempt, prev_run_id FROM runs ORDER BY id")
    assert [(s, a) for _, s, a, _ in rows] == [("finished", 1), ("finished", 2), ("finished", 3)]
    assert [p for *_, p in rows] == [None, rows[0][0], rows[1][0]]
    df = mj.runs()
    assert sorted(df["attempt"].to_list()) == [1, 2, 3]
    assert "already active" not in outputs_text(nb.cells[2])


def test_rerun_after_kernel_restart_continues_the_chain(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    nb = make_nb([LOAD, "epochs = 1", TRAIN])
    execute(nb, tmp_path, cell_ids=True)
    execute(nb, tmp_path, cell_ids=True)  # a fresh kernel, same notebook cells
    rows = query(store, "SELECT id, attempt, prev_run_id FROM runs ORDER BY id")
    assert [(a, p) for _, a, p in rows] == [(1, None), (2, rows[0][0])]


def test_out_of_order_and_edited_cells_are_flagged(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    nb = make_nb(
        [LOAD, "%mlops_run start explore --no-live", "a = 1", "b = a + 1", "%mlops_run end"]
    )
    # cells 2, 3, then 2 again (edited), then end
    execute(
        nb,
        tmp_path,
        order=[0, 1, 2, 3, 2, 4],
        cell_ids=True,
        edits={4: {2: "a = 10"}},
    )
    run = _run(store, "explore")
    warns = [e for e in run["events"] if e["kind"] == "provenance"]
    types = sorted(e["data"]["type"] for e in warns)
    assert types == ["changed_source", "out_of_order"]
    assert all(e["level"] == "warning" for e in warns)
    ooo = next(e for e in warns if e["data"]["type"] == "out_of_order")
    assert ooo["data"]["cell_id"] == nb.cells[2].id
    assert "out of notebook order" in ooo["message"]
    assert run["params"] == {"a": 10}


def test_out_of_order_uses_the_saved_notebook_order(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    path = tmp_path / "order.ipynb"
    nb = make_nb(
        [LOAD, "%mlops_run start ordered --no-live", "a = 1", "b = 2", "%mlops_run end"], path
    )
    monkeypatch.setenv("MLOPS_JUPYTER_NOTEBOOK", str(path))
    # the cell below runs first: only the saved file can tell that this is out of order
    execute(nb, tmp_path, order=[0, 1, 3, 2, 4], cell_ids=True)
    run = _run(store, "ordered")
    warns = [e for e in run["events"] if e["kind"] == "provenance"]
    assert [e["data"]["type"] for e in warns] == ["out_of_order"]
    assert "notebook cell 3" in warns[0]["message"] and "notebook cell 4" in warns[0]["message"]


def test_in_order_run_has_no_warnings(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    nb = make_nb([LOAD, "%mlops_run start clean --no-live", "a = 1", "b = 2", "%mlops_run end"])
    execute(nb, tmp_path, cell_ids=True)
    assert [e for e in _run(store, "clean")["events"] if e["kind"] == "provenance"] == []


def test_runs_and_status_magics_and_help(tmp_path, monkeypatch):
    use_store(monkeypatch, tmp_path)
    nb = make_nb(
        [
            LOAD,
            "%mlops_status",
            "%mlops_runs",
            "%mlops_run start shown --no-live -e exp1 -t team=vision\nlr = 0.1",
            "%mlops_status",
            "%mlops_run end",
            "%mlops_runs --experiment exp1 --last 5",
            "print(get_ipython().find_magic('mlops_run').__doc__)",
            "%mlops_run bogus",
            "%%mlops_run aw --no-live\nimport asyncio\nawait asyncio.sleep(0)",
        ]
    )
    execute(nb, tmp_path, allow_errors=True)
    assert "no active run" in outputs_text(nb.cells[1])
    assert "no runs yet" in outputs_text(nb.cells[2])
    status = outputs_text(nb.cells[4])
    assert "run 'shown'" in status and "experiment: exp1" in status
    table = outputs_text(nb.cells[6])
    assert "shown" in table and "exp1" in table and "finished" in table
    # `%mlops_run?` shows this docstring, generated from the argument definitions
    page = outputs_text(nb.cells[7])
    assert "%mlops_run [-e EXPERIMENT]" in page
    assert "--no-live" in page and "--tag <KEY=VALUE>" in page and "start [NAME]" in page
    assert "UsageError" in outputs_text(nb.cells[8])
    # top-level await cannot run nested in the kernel's loop: a clear error, no run
    assert "%mlops_run start" in outputs_text(nb.cells[9])
    assert query(tmp_path / "store.db", "SELECT count(*) FROM runs WHERE name='aw'") == [(0,)]
    run = _run(tmp_path / "store.db", "shown")
    assert run["tags"]["team"] == "vision" and run["experiment"] == "exp1"


def test_reexecuted_start_cell_supersedes_its_open_run(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    nb = make_nb([LOAD, "%mlops_run start span --no-live", "a = 1", "%mlops_run end"])
    execute(nb, tmp_path, order=[0, 1, 2, 1, 2, 3], cell_ids=True)
    rows = query(store, "SELECT id, status, attempt, prev_run_id FROM runs ORDER BY id")
    assert [(s, a) for _, s, a, _ in rows] == [("killed", 1), ("finished", 2)]
    assert rows[1][3] == rows[0][0]
    first = mj.get_run(query(store, "SELECT uid FROM runs WHERE id=?", (rows[0][0],))[0][0])
    assert any("superseded" in e["message"] for e in first["events"])
    # no nesting: the new attempt is a top-level run
    assert query(store, "SELECT parent_id FROM runs WHERE id=?", (rows[1][0],)) == [(None,)]


def test_nested_cell_magics_record_the_users_cell_once(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    wrapped = "%%capture cap\n%%mlops_run wrapped --no-live\nx = 1\nprint('hidden')"
    nb = make_nb([LOAD, wrapped, "print(cap.stdout)"])
    execute(nb, tmp_path)
    assert "hidden" in outputs_text(nb.cells[2])
    cells = _cells(store, "wrapped")
    assert [(c["source"], c["status"]) for c in cells] == [(wrapped, "ok")]
    assert _run(store, "wrapped")["status"] == "finished"


def test_cell_run_inside_a_spanning_run_is_a_child_and_both_record_it(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    inner = "%%mlops_run inner --no-live\nk = 7"
    nb = make_nb([LOAD, "%mlops_run start outer --no-live", inner, "%mlops_run end"])
    execute(nb, tmp_path, cell_ids=True)
    rows = dict(query(store, "SELECT name, parent_id FROM runs"))
    (outer_id,) = query(store, "SELECT id FROM runs WHERE name='outer'")[0]
    assert rows == {"outer": None, "inner": outer_id}
    assert [c["source"] for c in _cells(store, "inner")] == [inner]
    assert [c["cell_id"] for c in _cells(store, "outer")] == [c.id for c in nb.cells[1:4]]
    assert _run(store, "inner")["params"] == {"k": 7}
    assert [_run(store, n)["status"] for n in ("inner", "outer")] == ["finished", "finished"]
