"""Param capture that does not depend on cell order or front end, in real kernels: a
`parameters` cell run before `%load_ext`, the notebook found under nbclient and papermill
(no front end tells the kernel its path), and cells with identical sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from capture_helpers import execute, make_nb, query, use_store

import mlops_jupyter as mj

pytestmark = pytest.mark.timeout(180)

LOAD = "%load_ext mlops_jupyter"
TRAIN = "%%mlops_run train --no-live\nwidth = 8\n"


def _run(store: Path, name: str) -> dict:
    (uid,) = query(store, "SELECT uid FROM runs WHERE name=? ORDER BY id DESC LIMIT 1", (name,))[0]
    return mj.get_run(uid)


def _provenance(store: Path, name: str) -> list[dict]:
    return [e for e in _run(store, name)["events"] if e["kind"] == "provenance"]


@pytest.mark.parametrize("cell_ids", [False, True], ids=["nbclient", "with-cell-ids"])
def test_tagged_parameters_cell_before_load_ext_is_captured(tmp_path, monkeypatch, cell_ids):
    store = use_store(monkeypatch, tmp_path)
    path = tmp_path / "train.ipynb"
    nb = make_nb([("epochs = 4\nlr = 0.05", ["parameters"]), "import math", LOAD, TRAIN], path)
    execute(nb, tmp_path, cell_ids=cell_ids)
    run = _run(store, "train")
    assert run["params"] == {"epochs": 4, "lr": 0.05, "width": 8}
    # nbclient starts the kernel in the notebook's folder, the only notebook there
    assert run["tags"]["notebook.path"] == str(path.resolve())
    assert "script.path" not in run["tags"]


def test_commented_parameters_cell_before_load_ext_without_a_notebook_file(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    nb = make_nb(["# Parameters\nepochs = 2\nopt = 'sgd'", LOAD, TRAIN])
    execute(nb, tmp_path)
    run = _run(store, "train")
    assert run["params"] == {"epochs": 2, "opt": "sgd", "width": 8}
    assert "notebook.path" not in run["tags"]
    # the kernel launcher is not the user's script
    assert "script.path" not in run["tags"]


def test_notebook_found_among_several_by_the_cells_that_ran(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    folder = tmp_path / "work"
    folder.mkdir()
    make_nb(["other = 1", "print(other)"], folder / "a_other.ipynb")
    mine = folder / "b_mine.ipynb"
    nb = make_nb([LOAD, ("epochs = 3", ["parameters"]), TRAIN], mine)
    make_nb(["unrelated = 2"], folder / "c_more.ipynb")
    execute(nb, folder)
    run = _run(store, "train")
    assert run["tags"]["notebook.path"] == str(mine.resolve())
    assert run["params"]["epochs"] == 3  # the tag is read from the notebook found


def test_two_equally_fitting_notebooks_are_not_guessed(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    cells = [LOAD, TRAIN]
    nb = make_nb(cells, tmp_path / "one.ipynb")
    make_nb(cells, tmp_path / "copy.ipynb")
    execute(nb, tmp_path)
    assert "notebook.path" not in _run(store, "train")["tags"]


def test_env_var_override_wins_over_the_kernel_folder(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    nb = make_nb([LOAD, TRAIN], tmp_path / "here.ipynb")
    elsewhere = tmp_path / "sub" / "named.ipynb"
    elsewhere.parent.mkdir()
    make_nb([LOAD, TRAIN], elsewhere)
    monkeypatch.setenv("MLOPS_JUPYTER_NOTEBOOK", str(elsewhere))
    execute(nb, tmp_path)
    assert _run(store, "train")["tags"]["notebook.path"] == str(elsewhere.resolve())


def _papermill_nb(path: Path) -> None:
    make_nb(
        [
            ("epochs = 1\nlr = 0.1", ["parameters"]),
            LOAD,
            "%%mlops_run pm --no-live\nimport mlops_jupyter as mj\nmj.log(loss=lr * epochs)",
        ],
        path,
    )


def test_papermill_cli_from_another_folder(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    store = use_store(monkeypatch, tmp_path)
    src = tmp_path / "nbs" / "in.ipynb"
    src.parent.mkdir()
    _papermill_nb(src)
    out = tmp_path / "out" / "result.ipynb"
    out.parent.mkdir()
    cli = shutil.which("papermill", path=os.path.dirname(sys.executable)) or "papermill"
    # the kernel starts in papermill's folder (tmp_path, no notebook there): the notebook
    # is the one papermill was told to run
    subprocess.run(
        [cli, "nbs/in.ipynb", str(out), "-p", "epochs", "3", "--no-progress-bar"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=150,
    )
    run = _run(store, "pm")
    assert run["status"] == "finished"
    assert run["tags"]["notebook.path"] == str(src.resolve())
    assert run["params"] == {"epochs": 3, "lr": 0.1}  # injected value wins over the default
    assert "script.path" not in run["tags"]


def test_papermill_api_output_next_to_input(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    store = use_store(monkeypatch, tmp_path)
    folder = tmp_path / "nbs"
    folder.mkdir()
    src = folder / "in.ipynb"
    _papermill_nb(src)
    # the output, written while the notebook runs, names its input in papermill's metadata
    papermill.execute_notebook(
        str(src),
        str(folder / "in-out.ipynb"),
        parameters={"lr": 0.5},
        cwd=str(folder),
        progress_bar=False,
        kernel_name="python3",
    )
    run = _run(store, "pm")
    assert run["tags"]["notebook.path"] == str(src.resolve())
    assert run["params"] == {"epochs": 1, "lr": 0.5}


DUPES = [
    LOAD,
    "import math",
    "import math",  # a repeated import, as real notebooks have
    "%mlops_run start dup --no-live",
    "print('checkpoint')",
    "x = 1",
    "print('checkpoint')",
    "%mlops_run end",
]


@pytest.mark.parametrize("saved", [True, False], ids=["saved-notebook", "no-notebook-file"])
def test_identical_cells_top_to_bottom_give_no_order_warning(tmp_path, monkeypatch, saved):
    store = use_store(monkeypatch, tmp_path)
    path = tmp_path / "dupes.ipynb"
    nb = make_nb(DUPES, path if saved else None)
    if saved:
        monkeypatch.setenv("MLOPS_JUPYTER_NOTEBOOK", str(path))
    execute(nb, tmp_path)
    assert _provenance(store, "dup") == []
    assert _run(store, "dup")["tags"].get("notebook.path") == (
        str(path.resolve()) if saved else None
    )


def test_going_back_among_identical_cells_is_still_flagged(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    path = tmp_path / "dupes.ipynb"
    nb = make_nb(DUPES, path)
    # the second print, then back up to `x = 1` (above it): out of order, no cell ids needed
    execute(nb, tmp_path, order=[0, 1, 2, 3, 4, 5, 6, 5, 7])
    warns = _provenance(store, "dup")
    assert [w["data"]["type"] for w in warns] == ["out_of_order"]
    assert "notebook cell 6" in warns[0]["message"] and "notebook cell 7" in warns[0]["message"]
