"""Environment info (git, packages, host), notebook path resolution and notebook reading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_jupyter.capture import environment, git_info, read_notebook, resolve_notebook


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q", "-b", "main")
    (r / "train.py").write_text("x = 1\n")
    _git(r, "add", "train.py")
    _git(r, "commit", "-q", "-m", "first")
    return r


def test_git_clean_dirty_and_untracked_notebook(repo):
    info = git_info(repo)
    assert info["git.commit"] == _git(repo, "rev-parse", "HEAD")
    assert info["git.branch"] == "main"
    assert Path(info["git.root"]).resolve() == repo.resolve()
    assert info["git.dirty"] is False
    nb = repo / "new.ipynb"
    nb.write_text("{}")
    assert git_info(repo)["git.dirty"] is False  # untracked files elsewhere don't count
    assert git_info(nb)["git.dirty"] is True  # ...but the notebook itself being untracked does
    (repo / "train.py").write_text("x = 2\n")
    assert git_info(repo)["git.dirty"] is True


def test_outside_a_repo_gives_no_git_tags(tmp_path):
    assert git_info(tmp_path) == {}


def test_environment_tags_without_importing_packages(tmp_path):
    # read versions from metadata only: torch must not get imported (slow, GPU init)
    code = (
        "import sys, json; from mlops_jupyter.capture import environment; "
        "t = environment(); "
        "print(json.dumps([t, 'torch' in sys.modules, 'mlx' in sys.modules, "
        "'IPython' in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    tags, torch_loaded, mlx_loaded, ipython_loaded = json.loads(out.stdout)
    assert not torch_loaded and not mlx_loaded
    assert not ipython_loaded  # capture is layer 3: usable in plain scripts
    assert tags["env.python"] == ".".join(map(str, sys.version_info[:3]))
    assert tags["env.numpy"] and tags["env.polars"]
    assert tags["env.host"]
    from importlib import metadata

    try:
        expected = metadata.version("torch")
    except metadata.PackageNotFoundError:  # the compat venvs have no torch
        expected = None
    assert tags.get("env.torch") == expected


def test_environment_with_notebook(repo):
    nb = repo / "a.ipynb"
    nb.write_text("{}")
    tags = environment(str(nb))
    assert tags["notebook.path"] == str(nb)
    assert tags["git.commit"] and tags["git.dirty"] is True


def test_resolve_notebook(tmp_path, monkeypatch):
    nb = tmp_path / "sub" / "x.ipynb"
    nb.parent.mkdir()
    nb.write_text("{}")
    monkeypatch.chdir(nb.parent)
    assert resolve_notebook(None, "", str(nb)) == str(nb.resolve())
    assert resolve_notebook("x.ipynb") == str(nb.resolve())
    # a session name relative to the server root: found by file name in the kernel's folder
    assert resolve_notebook("some/dir/x.ipynb") == str(nb.resolve())
    assert resolve_notebook("missing.ipynb", "not-a-notebook.txt", 3) is None
    assert resolve_notebook(os.fspath(tmp_path / "nope.ipynb"), str(nb)) == str(nb.resolve())


def test_read_notebook_order_tags_and_cache(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("import x"),
        nbformat.v4.new_code_cell("lr = 0.1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("lr = 0.2", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("train()"),
    ]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    info = read_notebook(str(path))
    ids = [c.id for c in nb.cells]
    assert info.index_of(ids[1], "") == 0 and info.index_of(ids[4], "") == 3
    assert info.index_of(None, "  train()\n") == 3  # no id: matched by source
    assert info.index_of("unknown", "other") is None
    assert info.is_parameters(ids[2], "") and info.is_parameters(None, "lr = 0.2")
    assert not info.is_parameters(ids[4], "train()")
    assert read_notebook(str(path)) is info  # unchanged file: cached
    nb.cells.insert(1, nbformat.v4.new_code_cell("first()"))
    nbformat.write(nb, str(path))
    os.utime(path, ns=(1, 2))
    assert read_notebook(str(path)).index_of(ids[1], "") == 1
    assert read_notebook(str(tmp_path / "missing.ipynb")) is None
    (tmp_path / "broken.ipynb").write_text("{not json")
    assert read_notebook(str(tmp_path / "broken.ipynb")) is None


def test_kernel_launcher_is_not_a_script(tmp_path):
    code = (
        "import json, sys; from mlops_jupyter.capture.env import script_path; "
        "print(json.dumps(script_path()))"
    )
    user = tmp_path / "train.py"
    user.write_text(code)
    launcher = tmp_path / "ipykernel_launcher.py"
    launcher.write_text(code)
    tool = tmp_path / "lib" / "site-packages" / "tool.py"
    tool.parent.mkdir(parents=True)
    tool.write_text(code)

    def run(p: Path):
        out = subprocess.run([sys.executable, str(p)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    assert run(user) == str(user.resolve())
    assert run(launcher) is None
    assert run(tool) is None


def test_duplicate_sources_and_papermill_input_in_the_saved_notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in ["a()", "b()", "a()", "c()"]]
    nb.metadata["papermill"] = {"input_path": "in.ipynb"}
    path = tmp_path / "dup.ipynb"
    nbformat.write(nb, str(path))
    info = read_notebook(str(path))
    assert info.papermill_input == "in.ipynb"
    assert info.index_of(None, "a()") == 0
    assert info.index_of(None, "a()", after=1) == 2  # the next one down
    assert info.index_of(None, "a()", after=3) == 2  # all above: the nearest one
    assert info.index_of(nb.cells[2].id, "a()", after=0) == 2  # an id decides
    assert info.contains(None, " c() ") and not info.contains("x", "d()")


def test_pick_notebook_by_executed_cells(tmp_path):
    from mlops_jupyter.capture.locate import folder_notebooks, notebook_args, pick_notebook

    def write(name: str, sources: list[str], **meta) -> str:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
        nb.metadata.update(meta)
        p = tmp_path / name
        nbformat.write(nb, str(p))
        return str(p.resolve())

    a = write("a.ipynb", ["x = 1", "train()"])
    b = write("b.ipynb", ["y = 2", "plot()"])
    out = write(
        "a_out.ipynb",
        ["x = 1", "# Parameters\nx = 5", "train()"],
        papermill={"input_path": "a.ipynb"},
    )
    folder = folder_notebooks(str(tmp_path))
    assert folder == sorted([a, b, out])
    ran = [(None, "x = 1"), (None, "# Parameters\nx = 5"), (None, "train()")]
    assert pick_notebook([], folder, ran) == a  # the output stands for its input
    assert pick_notebook([], folder, [(None, "plot()")]) == b
    assert pick_notebook([], folder, [(None, "unknown()")]) is None
    # half of the cells fit, but the one running now is not in it (a terminal IPython
    # session next to a notebook that also loads the extension): not this notebook
    assert pick_notebook([], [a], [(None, "x = 1"), (None, "other()")]) is None
    assert pick_notebook([], [a], [(None, "other()"), (None, "x = 1")]) == a
    assert pick_notebook([], [a], []) == a  # nothing ran yet: the only notebook
    assert pick_notebook([], [a, b], []) is None
    assert pick_notebook([b], [a, b], []) == b  # named by the runner
    argv = ["papermill", "--cwd", "x.ipynb", "a.ipynb", "-o", "b.ipynb", "missing.ipynb"]
    assert notebook_args(argv, str(tmp_path)) == [a]


def test_locator_reads_papermills_injected_input_path_and_remembers(tmp_path):
    from mlops_jupyter.capture.locate import PAPERMILL_INPUT, Locator

    nb = tmp_path / "nbs" / "in.ipynb"
    nb.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), str(nb))
    ns: dict = {}
    history: list = [(None, "x = 1")]
    empty = tmp_path / "empty"
    empty.mkdir()
    loc = Locator(lambda: history, lambda: ns, folder=str(empty))
    assert loc() is None  # nothing to go on
    ns[PAPERMILL_INPUT] = "nbs/in.ipynb"  # relative to the kernel's folder: not there
    assert loc() is None
    ns[PAPERMILL_INPUT] = str(nb)
    assert loc() == str(nb.resolve())
    ns.clear()
    assert loc() == str(nb.resolve())  # found once, kept for the kernel's life


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a()", "b()", "c = 1", "print(x)"]), min_size=1, max_size=12))
def test_top_to_bottom_positions_never_go_back(sources):
    # cells with equal sources, no ids (nbclient, papermill): a plain run is in order
    import tempfile

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "n.ipynb")
        nbformat.write(nb, path)
        info = read_notebook(path)
    last = None
    for src in sources:
        idx = info.index_of(None, src, after=last)
        assert sources[idx] == src
        assert last is None or idx >= last
        last = idx
