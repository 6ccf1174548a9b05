"""The capture Session (no IPython) against a real store: cell rows, sources stored once,
provenance warnings, parameters cells, re-run chains."""

from __future__ import annotations

import nbformat

import mlops_jupyter as mj
from mlops_jupyter.capture import Session, cell_key, source_hash
from mlops_jupyter.store import capture as cstore
from mlops_jupyter.store import open_store
from mlops_jupyter.tracking import api


def _cell(session: Session, runs, cid, src, n, error=None):
    session.note(cid, src)
    session.record_cell(runs, cid, src, n, 1000.0 + n, 0.01, error)


def _warnings(run) -> list[dict]:
    return [e for e in mj.get_run(run.id)["events"] if e["kind"] == "provenance"]


def test_schema_has_capture_tables(store_path):
    st = api.current_store()
    for table in ("cell_sources", "cell_executions", "run_cells"):
        assert st.columns(table)
    assert (3,) in st.read("SELECT version FROM schema_migrations")


def test_cells_in_order_with_statuses_and_sources_once(store_path):
    s = Session()
    run = mj.start_run("r")
    s.track(run, env=False)
    _cell(s, [run], "a", "x = 1", 1)
    _cell(s, [run], "b", "1/0", 2, ZeroDivisionError())
    _cell(s, [run], "c", "x = 1", 3)  # same text, another cell: one stored source
    _cell(s, [run], "d", "sleep()", 4, KeyboardInterrupt())
    run.end()
    cells = cstore.cells_for_run(run.store, run._rid)
    assert [(c["seq"], c["cell_id"], c["execution_count"]) for c in cells] == [
        (1, "a", 1),
        (2, "b", 2),
        (3, "c", 3),
        (4, "d", 4),
    ]
    assert [c["status"] for c in cells] == ["ok", "error", "ok", "interrupted"]
    assert [c["error"] for c in cells] == [None, "ZeroDivisionError", None, "KeyboardInterrupt"]
    assert cells[0]["source_hash"] == cells[2]["source_hash"] == source_hash("x = 1")
    assert cells[0]["source"] == "x = 1"
    assert run.store.read("SELECT count(*) FROM cell_sources")[0][0] == 3
    assert cstore.cell_source(run.store, source_hash("1/0")) == "1/0"
    assert cstore.cells_for_run(run.store, 999) == []


def test_out_of_order_and_changed_source_warnings(store_path):
    s = Session()
    run = mj.start_run("r")
    s.track(run, env=False)
    _cell(s, [run], "a", "a = 1", 1)
    _cell(s, [run], "b", "b = 2", 2)
    _cell(s, [run], "a", "a = 1", 3)  # back up: out of order, same source
    _cell(s, [run], "b", "b = 3", 4)  # edited
    run.end()
    types = [w["data"]["type"] for w in _warnings(run)]
    assert types == ["out_of_order", "changed_source"]


def test_order_from_saved_notebook(store_path, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"c{i} = {i}") for i in range(4)]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    s = Session(lambda: str(path))
    run = mj.start_run("r")
    s.track(run, env=False)
    ids = [c.id for c in nb.cells]
    _cell(s, [run], ids[0], "c0 = 0", 1)
    _cell(s, [run], ids[2], "c2 = 2", 2)  # skips a cell: fine
    _cell(s, [run], ids[1], "c1 = 1", 3)  # above the previous one: flagged
    _cell(s, [run], None, "print('scratch')", 4)  # not in the file: no order to check
    run.end()
    (w,) = _warnings(run)
    assert w["data"]["index"] == 1 and w["data"]["after_index"] == 2
    assert "notebook cell 2" in w["message"] and "notebook cell 3" in w["message"]


def test_session_out_of_order_before_a_run_is_noted(store_path):
    s = Session()
    for cid, src in [("a", "a = 1"), ("b", "b = 2"), ("a", "a = 5")]:
        s.note(cid, src)
    s.note("run", "%%mlops_run")
    run = mj.start_run("r")
    s.track(run, env=False)
    run.end()
    (w,) = _warnings(run)
    assert w["level"] == "info" and w["data"]["type"] == "session_out_of_order"


def test_parameters_from_history(store_path, tmp_path):
    nb = nbformat.v4.new_notebook()
    tagged = nbformat.v4.new_code_cell("lr = 0.1\nepochs = 2", metadata={"tags": ["parameters"]})
    nb.cells = [tagged, nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "p.ipynb"
    nbformat.write(nb, str(path))
    s = Session(lambda: str(path))
    s.note(tagged.id, tagged.source)
    s.note(nb.cells[1].id, "x = 1")
    s.note(None, "# Parameters\nepochs = 5\n")  # papermill's injected cell
    assert s.parameters() == {"lr": 0.1, "epochs": 5}
    # without ids, the saved source identifies the tagged cell
    s2 = Session(lambda: str(path))
    s2.note(None, "lr = 0.1\nepochs = 2\n")
    assert s2.parameters() == {"lr": 0.1, "epochs": 2}
    assert Session().parameters() == {}


def test_previous_run_chain_in_memory_and_from_store(store_path):
    s = Session()
    key = cell_key("cell-1", "%%mlops_run\nx = 1")
    store = api.current_store()
    assert s.previous_run(key, store) is None
    r1 = mj.start_run("a")
    s.remember_cell_run(key, r1)
    r1.end()
    assert s.previous_run(key, store) is r1
    # a new kernel (new Session) finds the link in the store, by cell id
    assert Session().previous_run(key, store) == r1.id
    # a source-hash key without a known notebook is only chained within one kernel
    k2 = cell_key(None, "y = 2")
    r2 = mj.start_run("b")
    s.remember_cell_run(k2, r2)
    r2.end()
    assert Session().previous_run(k2, store) is None
    assert s.previous_run(k2, store) is r2


def test_records_into_several_runs_and_forgets_ended_ones(store_path):
    s = Session()
    outer = mj.start_run("outer")
    inner = mj.start_run("inner")
    s.track(outer, env=False)
    _cell(s, [inner, outer], "a", "a = 1", 1)  # inner is tracked on first sight
    inner.end()
    _cell(s, [inner, outer], "b", "b = 1", 2)
    assert not s.is_tracked(inner) and s.is_tracked(outer)
    outer.end()
    st = open_store(store_path)
    assert [c["cell_id"] for c in cstore.cells_for_run(st, outer._rid)] == ["a", "b"]
    assert [c["cell_id"] for c in cstore.cells_for_run(st, inner._rid)] == ["a", "b"]


def test_auto_params_only_for_spanning_runs(store_path):
    s = Session()
    run = mj.start_run("span")
    s.track(run, auto_params=True, env=False)
    _cell(s, [run], "a", "lr = 0.1\nx = compute()", 1)
    _cell(s, [run], "b", "lr = 0.2", 2)
    run.end()
    assert mj.get_run(run.id)["params"] == {"lr": 0.2}
    plain = mj.start_run("plain")
    s.track(plain, env=False)
    _cell(s, [plain], "c", "lr = 0.3", 3)
    plain.end()
    assert mj.get_run(plain.id)["params"] == {}


def test_environment_tags_on_track(store_path):
    s = Session()
    run = mj.start_run("env")
    s.track(run)
    run.end()
    tags = mj.get_run(run.id)["tags"]
    assert tags["env.python"] and tags["env.host"]


def test_attach_tags_top_level_runs_only(store_path):
    from mlops_jupyter.capture import attach

    parent = mj.start_run("p")
    child = mj.start_run("c")
    attach(parent)
    attach(child)
    child.end()
    parent.end()
    assert mj.get_run(parent.id)["tags"]["env.python"]
    assert mj.get_run(child.id)["tags"] == {}


def test_cells_for_run_takes_the_public_id_name_or_run(store_path):
    import pytest

    from mlops_jupyter.errors import InvalidInputError, RunNotFoundError

    s = Session()
    run = mj.start_run("pub")
    s.track(run, env=False)
    _cell(s, [run], "a", "x = 1", 1)
    run.end()
    by_row = cstore.cells_for_run(run.store, run._rid)
    assert [c["cell_id"] for c in by_row] == ["a"]
    assert cstore.cells_for_run(run.store, run.id) == by_row  # what mj.runs() shows
    assert cstore.cells_for_run(run.store, "pub") == by_row
    assert cstore.cells_for_run(run.store, run) == by_row
    with pytest.raises(RunNotFoundError, match="nope"):
        cstore.cells_for_run(run.store, "nope")
    with pytest.raises(InvalidInputError, match="run must be"):
        cstore.cells_for_run(run.store, 1.5)


def test_identical_sources_in_order_are_not_out_of_order(store_path, tmp_path):
    # no cell ids (nbclient, papermill): equal sources are told apart by position
    src = ["import math", "print('x')", "y = 1", "print('x')", "z = 2"]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in src]
    path = tmp_path / "d.ipynb"
    nbformat.write(nb, str(path))
    for session in (Session(lambda: str(path)), Session()):
        run = mj.start_run("dupes")
        session.track(run, env=False)
        for n, c in enumerate(src, 1):
            _cell(session, [run], None, c, n)
        run.end()
        assert _warnings(run) == []
    # with the file, going back to a cell above is still flagged
    s = Session(lambda: str(path))
    run = mj.start_run("back")
    s.track(run, env=False)
    for n, c in enumerate(src[:4] + ["y = 1"], 1):
        _cell(s, [run], None, c, n)
    run.end()
    (w,) = _warnings(run)
    assert w["data"]["index"] == 2 and w["data"]["after_index"] == 3
