"""Environment info (git, packages, host), notebook path resolution and notebook reading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

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
