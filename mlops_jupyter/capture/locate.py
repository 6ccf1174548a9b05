"""Which notebook a headless kernel runs (nbclient, nbconvert, papermill), where no front end
says it: the runner's own traces are read, never guessed from names.

In order: papermill's injected `PAPERMILL_INPUT_PATH` parameter, the `.ipynb` arguments of
the process that started the kernel (`papermill in.ipynb out.ipynb`, `jupyter nbconvert
--execute x.ipynb`), and the notebooks in the kernel's starting folder (the runners start
the kernel there). A notebook is taken only when the cells executed so far are its cells
(by the cell ids the runner sends, else by source) and no other candidate fits as well;
a papermill output notebook stands for the notebook it was made from."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from .notebook import NotebookFile, normalize, read_notebook

PAPERMILL_INPUT = "PAPERMILL_INPUT_PATH"
_MAX_NOTEBOOKS = 50  # notebooks looked at in one folder
_MAX_BYTES = 50 * 2**20  # bigger files are not parsed to find the notebook
_RECENT = 200  # executed cells compared with a candidate
_OPTIONS_WITH_VALUE = ("-o", "--output", "--output-dir", "--output_dir", "--cwd")


def parent_process() -> tuple[list[str], str | None]:
    """(command line, working directory) of the process that started this one; empty when
    the platform does not say."""
    ppid = os.getppid()
    proc = Path(f"/proc/{ppid}")
    if proc.is_dir():
        try:
            raw = (proc / "cmdline").read_bytes()
            argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        except OSError:
            return [], None
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            cwd = None
        return argv, cwd
    try:
        import psutil

        p = psutil.Process(ppid)
        return p.cmdline(), p.cwd()
    except Exception:  # no psutil, or the process is gone or not ours
        return [], None


def notebook_args(argv: list[str], cwd: str | None) -> list[str]:
    """Existing `.ipynb` files named on a command line, inputs first (the value of
    `--output`/`-o` and option-style arguments are skipped), as absolute paths."""
    out: list[str] = []
    skip = False
    for a in argv[1:]:
        if skip:
            skip = False
            continue
        if a in _OPTIONS_WITH_VALUE:
            skip = True
            continue
        if a.startswith("-") or not a.endswith(".ipynb"):
            continue
        p = Path(a).expanduser()
        if not p.is_absolute() and cwd:
            p = Path(cwd) / p
        if p.is_file():
            out.append(str(p.resolve()))
    return out


def folder_notebooks(folder: str | None) -> list[str]:
    """The `.ipynb` files of `folder` (not checkpoints), sorted, at most _MAX_NOTEBOOKS."""
    if not folder:
        return []
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".ipynb"))
    except OSError:
        return []
    found = []
    for n in names[:_MAX_NOTEBOOKS]:
        p = os.path.join(folder, n)
        try:
            if os.path.isfile(p) and os.path.getsize(p) <= _MAX_BYTES:
                found.append(os.path.abspath(p))
        except OSError:
            continue
    return found


def _score(nb: NotebookFile, cells: list[tuple[str | None, str]]) -> float:
    """Share of the executed cells (id, normalized source) that are cells of `nb`."""
    ids, srcs = nb.order_by_id, nb.order_by_source
    return sum((cid is not None and cid in ids) or src in srcs for cid, src in cells) / len(cells)


def _original(path: str, nb: NotebookFile, bases: tuple[str, ...]) -> str:
    """A papermill output stands for its input notebook, when that file exists (papermill
    records the input path as it was given: relative to papermill's folder, which is the
    runner's working directory, or to the output's)."""
    src = nb.papermill_input
    if not src:
        return path
    p = Path(src).expanduser()
    tries = [p] if p.is_absolute() else [Path(b) / p for b in (os.path.dirname(path), *bases)]
    for t in tries:
        if t.suffix == ".ipynb" and t.is_file():
            return str(t.resolve())
    return path


def pick_notebook(
    preferred: list[str],
    folder: list[str],
    history: list[tuple[str | None, str]],
    bases: tuple[str, ...] = (),
) -> str | None:
    """The notebook that the executed `history` comes from, among the runner's named
    notebooks (`preferred`) and those of the kernel's folder; None when none fits or two
    fit equally well. `bases`: folders a relative papermill input path may start from."""
    cells = [(cid, norm) for cid, src in history[-_RECENT:] if (norm := normalize(src))]
    pool: dict[str, int] = {}  # path -> rank (0: named by the runner)
    for rank, paths in enumerate((preferred, folder)):
        for p in paths:
            pool.setdefault(p, rank)
    if not cells:
        # nothing ran yet: the runner's first notebook, else the only one in the folder
        if preferred:
            return preferred[0]
        return folder[0] if len(folder) == 1 else None
    best: dict[str, tuple[float, int]] = {}
    for path, rank in pool.items():
        nb = read_notebook(path)
        if nb is None:
            continue
        # the cell running now must be one of its cells, and most of those that ran before
        score = _score(nb, cells)
        if score < 0.5 or not _score(nb, cells[-1:]):
            continue
        orig = _original(path, nb, bases)
        if orig != path:
            onb = read_notebook(orig)
            # the input lacks the injected parameters cell: it inherits the output's score
            score = max(score, _score(onb, cells)) if onb is not None else score
        prev = best.get(orig)
        if prev is None or (score, -rank) > (prev[0], -prev[1]):
            best[orig] = (score, rank)
    if not best:
        return None
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None  # two notebooks fit equally: say nothing rather than guess
    return ranked[0][0]


class Locator:
    """Finds the notebook of a headless kernel once and remembers it.

    `history` returns the executed cells; `namespace` the user namespace (for papermill's
    injected parameter). The runner's process and the starting folder are read when the
    locator is made (the kernel's cwd may change later)."""

    def __init__(
        self,
        history: Callable[[], list[tuple[str | None, str]]],
        namespace: Callable[[], dict],
        folder: str | None = None,
    ) -> None:
        self._history = history
        self._namespace = namespace
        self.folder = folder if folder is not None else os.getcwd()
        argv, pcwd = parent_process() if sys.platform != "win32" else ([], None)
        self.parent_notebooks = notebook_args(argv, pcwd)
        self._bases = tuple(b for b in (pcwd, self.folder) if b)
        self.found: str | None = None
        self._next_try = 0

    def __call__(self) -> str | None:
        if self.found is not None:
            return self.found
        pm = self._namespace().get(PAPERMILL_INPUT)
        if isinstance(pm, str) and pm.endswith(".ipynb"):
            p = Path(pm).expanduser()
            p = p if p.is_absolute() else Path(self.folder) / p
            if p.is_file():
                self.found = str(p.resolve())
                return self.found
        history = self._history()
        n = len(history)
        if n < self._next_try:
            return None  # looked already; look again after more cells ran
        # a look costs a folder listing: at every new cell at first, then ever more rarely
        self._next_try = n + 1 if n < 20 else n + n // 2
        self.found = pick_notebook(
            self.parent_notebooks, folder_notebooks(self.folder), history, self._bases
        )
        return self.found
