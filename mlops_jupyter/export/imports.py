"""Import statements of a notebook for the stage modules: every statement kept as written
(`import xml.dom.minidom` and `import xml.etree.ElementTree` both), in notebook order, with
the code they depend on (`sys.path.insert(0, "..")` before `import helper`)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from . import analysis as an


@dataclass
class ImportItem:
    """One import statement (or one piece of code later imports depend on)."""

    seq: int  # position in the notebook, for ordering
    stage: int  # index of the stage it was written in
    text: str
    names: set[str] = field(default_factory=set)  # names it binds
    reads: set[str] = field(default_factory=set)  # names it reads (a prelude: sys, os...)
    prelude: bool = False


def is_import_block(node: ast.stmt) -> bool:
    """`import x`, `from x import y`, or `try: import x / except ImportError: x = None`."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, ast.Try):
        inner = node.body + [s for h in node.handlers for s in h.body] + node.orelse
        return all(
            isinstance(s, (ast.Import, ast.ImportFrom, ast.Pass))
            or (isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant))
            for s in inner
        ) and any(isinstance(s, (ast.Import, ast.ImportFrom)) for s in node.body)
    return False


def _dotted(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - unparse handles every expression node
        return ""


def is_prelude(node: ast.stmt) -> bool:
    """Code that imports after it may depend on: changes to `sys.path` or the environment
    (`sys.path.insert(0, "..")`, `site.addsitedir(p)`, `os.environ["KERAS_BACKEND"] = "x"`)."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        f = _dotted(node.value.func)
        return f.startswith(("sys.path.", "os.environ.")) or f in ("site.addsitedir", "os.putenv")
    if isinstance(node, (ast.Assign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return all(_dotted(t).startswith(("sys.path", "os.environ[")) for t in targets)
    return False


def preludes_of(body: list[ast.stmt]) -> set[int]:
    """Indexes of the prelude statements of a cell that an import later in the cell follows."""
    out: set[int] = set()
    last_import = max((i for i, n in enumerate(body) if is_import_block(n)), default=-1)
    for i, node in enumerate(body[:last_import]):
        if is_prelude(node):
            out.add(i)
    return out


def own_import(node: ast.stmt, name: str) -> str | None:
    """`from mlops_jupyter import log, start_run` is split per name, so that names the
    export replaced (start_run -> stage_run) are not imported unused."""
    if isinstance(node, ast.ImportFrom) and node.module in (
        "mlops_jupyter",
        "mlops_jupyter.tracking",
    ):
        for a in node.names:
            if (a.asname or a.name) == name:
                return ast.unparse(ast.ImportFrom(node.module, [a], 0))
    return None


def items_of(node: ast.stmt, text: str, seq: int, stage: int) -> list[ImportItem]:
    """The import items of one import block (mlops_jupyter imports split per name)."""
    names = an.flow_of([node]).imports
    split = {n: own_import(node, n) for n in names}
    if names and all(split.values()):
        return [ImportItem(seq, stage, t, {n}) for n, t in split.items() if t]
    return [ImportItem(seq, stage, text, set(names))]


def prelude_item(node: ast.stmt, text: str, seq: int, stage: int) -> ImportItem:
    reads = set(an.flow_of([node]).reads)
    return ImportItem(seq, stage, text, set(), reads, prelude=True)


def select(items: list[ImportItem], needed: set[str], upto: int) -> list[str]:
    """Import statements (in notebook order, exact duplicates once) for a stage module that
    reads `needed`, from the items of stages up to `upto`; every statement binding a needed
    name is kept, and so is the prelude code written before the chosen imports."""
    pool = [it for it in items if it.stage <= upto]
    chosen = {id(it): it for it in pool if not it.prelude and it.names & needed}
    while True:
        last = max((it.seq for it in chosen.values()), default=-1)
        more = [it for it in pool if it.prelude and it.seq < last and id(it) not in chosen]
        want = {n for it in [*chosen.values(), *more] for n in it.reads}
        more += [
            it
            for it in pool
            if not it.prelude and it.names & want and id(it) not in chosen and it not in more
        ]
        if not more:
            break
        chosen.update({id(it): it for it in more})
    out: list[str] = []
    for it in sorted(chosen.values(), key=lambda it: it.seq):
        if it.text not in out:
            out.append(it.text)
    return out
