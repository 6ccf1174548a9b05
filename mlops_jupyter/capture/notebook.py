"""Which notebook a kernel runs, and what its saved file says: cell order, cell ids and
which cells are tagged `parameters` (read as plain JSON, cached by modification time)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

NOTEBOOK_ENV = "MLOPS_JUPYTER_NOTEBOOK"
PARAMETER_TAGS = ("parameters", "injected-parameters")


def resolve_notebook(*candidates: str | None) -> str | None:
    """The first candidate that names an existing `.ipynb` file, as an absolute path.

    Candidates come from, in order of trust: an explicit `--notebook`, the
    MLOPS_JUPYTER_NOTEBOOK env var, the kernel's `__session__` (JupyterLab, from
    JPY_SESSION_NAME), VS Code's `__vsc_ipynb_file__`. A relative path is tried against
    the working directory, then by file name alone (kernels start in the notebook's folder)."""
    for c in candidates:
        if not c or not isinstance(c, str):
            continue
        p = Path(c).expanduser()
        tries = [p] if p.is_absolute() else [Path.cwd() / p, Path.cwd() / p.name]
        for t in tries:
            if t.suffix == ".ipynb" and t.is_file():
                return str(t.resolve())
    return None


def normalize(source: str) -> str:
    """Source text compared between kernel and file: line endings and outer blanks ignored."""
    return source.replace("\r\n", "\n").strip()


@dataclass
class NotebookFile:
    """The saved notebook: code cells in order, by id and by (normalized) source."""

    path: str
    order_by_id: dict[str, int] = field(default_factory=dict)
    # every position of each source text: two cells may hold the same code
    order_by_source: dict[str, list[int]] = field(default_factory=dict)
    param_ids: set[str] = field(default_factory=set)
    param_sources: set[str] = field(default_factory=set)
    # a notebook papermill wrote records the notebook it was made from
    papermill_input: str | None = None

    def index_of(self, cell_id: str | None, source: str, after: int | None = None) -> int | None:
        """Position of a code cell in the saved notebook, or None if it is not there.

        The cell id decides when the file has it. Otherwise the source does; when several
        cells hold that source, the first one at or below position `after` (the cell that
        ran before) is taken, so a top-to-bottom run never looks out of order; if all are
        above it, the nearest one above."""
        if cell_id is not None and cell_id in self.order_by_id:
            return self.order_by_id[cell_id]
        found = self.order_by_source.get(normalize(source))
        if not found:
            return None
        if after is None or len(found) == 1:
            return found[0]
        below = [i for i in found if i >= after]
        return below[0] if below else found[-1]

    def contains(self, cell_id: str | None, source: str) -> bool:
        """Whether the executed cell is one of this notebook's code cells."""
        if cell_id is not None and cell_id in self.order_by_id:
            return True
        return normalize(source) in self.order_by_source

    def is_parameters(self, cell_id: str | None, source: str) -> bool:
        """Whether the executed cell is one the file tags `parameters`."""
        if cell_id is not None and cell_id in self.param_ids:
            return True
        return normalize(source) in self.param_sources


_cache: dict[str, tuple[tuple[int, int], NotebookFile]] = {}


def read_notebook(path: str | None) -> NotebookFile | None:
    """Parse the notebook at `path` (re-read only when it changed); None if unreadable."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
    except (OSError, ValueError):
        return None
    info = NotebookFile(path)
    meta = nb.get("metadata") if isinstance(nb, dict) else None
    pm = meta.get("papermill") if isinstance(meta, dict) else None
    if isinstance(pm, dict) and isinstance(pm.get("input_path"), str):
        info.papermill_input = pm["input_path"]
    i = 0
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        norm = normalize(src)
        cid = cell.get("id")
        if isinstance(cid, str):
            info.order_by_id[cid] = i
        info.order_by_source.setdefault(norm, []).append(i)
        tags = (cell.get("metadata") or {}).get("tags") or []
        if any(t in PARAMETER_TAGS for t in tags):
            if isinstance(cid, str):
                info.param_ids.add(cid)
            info.param_sources.add(norm)
        i += 1
    _cache[path] = (stamp, info)
    return info
