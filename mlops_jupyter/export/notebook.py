"""Reading a notebook and cutting it into stages (cell tags, else markdown headings).

The notebook is read as plain JSON (nbformat 4) so exporting needs no Jupyter package."""

from __future__ import annotations

import ast
import json
import keyword
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInputError, MlopsJupyterError


class ExportError(MlopsJupyterError):
    """The notebook cannot be turned into a pipeline (the message says which cell and why)."""


@dataclass
class Cell:
    """One code cell after IPython syntax was made plain Python."""

    index: int  # 1-based position among all cells of the notebook, as Jupyter shows it
    source: str
    tree: ast.Module
    notes: list[str] = field(default_factory=list)
    run_cell: bool = False  # a `%%mlops_run` cell: its literal assignments are run params
    run_name: str | None = None  # the NAME of its `%%mlops_run NAME` / `%mlops_run start NAME`


@dataclass
class StageCells:
    """The cells of one stage, in notebook order."""

    name: str
    cells: list[Cell]


@dataclass
class SplitNotebook:
    params_cells: list[Cell]
    stages: list[StageCells]
    warnings: list[str]
    experiment: str | None = None  # named by `%%mlops_run --experiment E` in the notebook
    captured: dict[str, object] = field(default_factory=dict)  # params of %%mlops_run cells


# Cell magics whose body is still Python: the line goes, the code stays.
_PY_CELL_MAGICS = {"mlops_run", "time", "timeit", "capture", "prun", "debug"}
_MAGIC_ASSIGN = re.compile(r"^\s*[\w.,\s\[\]()*]+=\s*[!%]")


def read_notebook(path: str | os.PathLike) -> dict:
    """Load an .ipynb file as a dict, with a clear error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"notebook not found: {p}")
    try:
        nb = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ExportError(f"{p} is not a notebook (invalid JSON: {e})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ExportError(f"{p} is not a notebook (no 'cells' list)")
    if nb.get("nbformat", 4) < 4:
        raise ExportError(f"{p} uses nbformat {nb.get('nbformat')}; save it as nbformat 4")
    return nb


def _text(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: dict) -> list[str]:
    tags = (cell.get("metadata") or {}).get("tags") or []
    return [str(t).strip() for t in tags]


def stage_tag(tags: list[str]) -> str | None:
    """The stage name of a `stage=NAME` (or `stage:NAME`) tag, if any."""
    for t in tags:
        m = re.match(r"^stage\s*[=:]\s*(.+)$", t)
        if m:
            return m.group(1).strip()
    return None


def identifier(text: str, fallback: str = "stage") -> str:
    """A Python identifier from free text: `Load the data!` -> `load_the_data`."""
    s = re.sub(r"[^0-9a-zA-Z_]+", "_", text.strip().lower()).strip("_")
    s = re.sub(r"_+", "_", s)
    if len(s) > 40:  # cut long headings at a word boundary
        s = s[:41].rsplit("_", 1)[0] if "_" in s[:41] else s[:40]
    s = s.strip("_")
    if not s:
        s = fallback
    if s[0].isdigit():
        s = f"s{s}"
    if keyword.iskeyword(s) or s in {"params", "pipeline", "stages", "runtime"}:
        s = f"{s}_"
    return s


def to_python(src: str, index: int) -> tuple[str | None, list[str]]:
    """IPython cell text -> plain Python (magics and shell lines become comments).

    Returns (None, notes) for a cell that is not Python at all (`%%bash`, `%%html`...)."""
    notes: list[str] = []
    lines = src.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        magic = lines[0].strip()[2:].split()[0] if lines[0].strip()[2:] else ""
        if magic not in _PY_CELL_MAGICS:
            return None, [f"cell {index}: `%%{magic}` cell is not Python; left out"]
        lines[0] = f"# {lines[0].strip()}"
    out = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped.startswith(("%", "!")) and not stripped.startswith("%%"):
            notes.append(f"cell {index}: IPython line `{stripped}` is not run by the pipeline")
            out.append(f"{indent}pass  # {stripped}" if indent else f"# {stripped}")
        elif _MAGIC_ASSIGN.match(line) and not _is_python(line):
            notes.append(f"cell {index}: `{stripped}` uses IPython syntax; left out")
            out.append(f"{indent}pass  # {stripped}" if indent else f"# {stripped}")
        else:
            out.append(line)
    return "\n".join(out) + "\n", notes


def magic_run_name(src: str) -> str | None:
    """The NAME of a `%%mlops_run NAME ...` cell (or `%mlops_run start NAME`), if any."""
    import shlex

    for line in src.splitlines():
        m = re.match(r"^\s*%%mlops_run\b(.*)$|^\s*%mlops_run\s+start\b(.*)$", line)
        if not m:
            continue
        try:
            words = shlex.split(m.group(1) if m.group(1) is not None else m.group(2))
        except ValueError:
            return None
        # the name is the first word that is neither an option nor an option's value
        skip = False
        for w in words:
            if skip:
                skip = False
            elif w.startswith("-"):  # options of %%mlops_run that take a value
                skip = w in ("-e", "--experiment", "-t", "--tag", "-p", "--param")
            else:
                return w
    return None


def magic_experiment(src: str) -> str | None:
    """The `--experiment`/`-e` of a `%%mlops_run` or `%mlops_run start` line, if any."""
    import shlex

    for line in src.splitlines():
        m = re.match(r"^\s*%%?mlops_run\b(.*)$", line)
        if not m:
            continue
        try:
            words = shlex.split(m.group(1))
        except ValueError:
            continue
        for i, w in enumerate(words[:-1]):
            if w in ("-e", "--experiment"):
                return words[i + 1]
        for w in words:
            if w.startswith("--experiment="):
                return w.split("=", 1)[1]
    return None


def _is_python(line: str) -> bool:
    try:
        ast.parse(line.strip())
        return True
    except SyntaxError:
        return False


def _parse(src: str, index: int) -> ast.Module:
    try:
        return ast.parse(src)
    except SyntaxError as e:
        raise ExportError(f"cell {index} is not valid Python (line {e.lineno}: {e.msg})") from None


def _heading(md: str) -> str | None:
    for line in md.splitlines():
        m = re.match(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", line)
        if m:
            return m.group(1)
    return None


def split_stages(nb: dict) -> SplitNotebook:
    """Group the notebook's code cells into stages.

    With any `stage=NAME` tag: a tagged cell opens (or continues) stage NAME and untagged
    cells join the stage above them. Without: each markdown heading opens a stage named
    after it. Cells tagged `skip` are left out; cells tagged `parameters` (or starting with a
    `# parameters` comment) hold the pipeline's parameters."""
    cells = nb["cells"]
    tagged = any(stage_tag(_tags(c)) for c in cells if c.get("cell_type") == "code")
    warnings: list[str] = []
    params_cells: list[Cell] = []
    stages: list[StageCells] = []
    seen: dict[str, int] = {}
    current: StageCells | None = None
    pending_heading: str | None = None
    experiment: str | None = None

    def open_stage(name: str, index: int, explicit: bool) -> StageCells:
        nonlocal current
        ident = identifier(name)
        if explicit and ident in seen and (current is None or current.name != ident):
            raise ExportError(
                f"stage {ident!r} appears again at cell {index} after other stages; "
                "the cells of a stage must be next to each other (tag them, or rename one)"
            )
        if not explicit and ident in seen:
            n = 2
            while f"{ident}_{n}" in seen:
                n += 1
            ident = f"{ident}_{n}"
        if current is not None and current.name == ident:
            return current
        current = StageCells(ident, [])
        seen[ident] = index
        stages.append(current)
        return current

    for i, cell in enumerate(cells, start=1):
        kind = cell.get("cell_type")
        if kind == "markdown" and not tagged:
            h = _heading(_text(cell))
            if h:
                pending_heading = h
            continue
        if kind != "code":
            continue
        tags = _tags(cell)
        raw = _text(cell)
        if not raw.strip() or "skip" in tags:
            continue
        experiment = experiment or magic_experiment(raw)
        src, notes = to_python(raw, i)
        warnings.extend(notes)
        if src is None:
            continue
        c = Cell(i, src, _parse(src, i), notes, raw.lstrip().startswith("%%mlops_run"))
        c.run_name = magic_run_name(raw)
        if {"parameters", "injected-parameters"} & set(tags) or _is_params_comment(raw):
            params_cells.append(c)
            continue
        name = stage_tag(tags)
        if name is not None:
            stage = open_stage(name, i, True)
        elif not tagged and pending_heading is not None:
            stage = open_stage(pending_heading, i, False)
            pending_heading = None
        elif current is not None:
            stage = current
        else:
            stage = open_stage("setup", i, False)
        stage.cells.append(c)
    run_cells = [c for st in stages for c in st.cells if c.run_cell]
    captured = promote_run_params(run_cells, literal_params(params_cells))
    return SplitNotebook(params_cells, stages, warnings, experiment, captured)


def _values(stmt_src: str) -> dict[str, object]:
    """Literal values a single assignment binds, by the rules the notebook run used to
    record params (constant arithmetic such as `1e-3 * 4` included)."""
    try:
        from ..capture import literal_params as recorded
    except ImportError:  # capture not available: plain literals only
        recorded = None
    if recorded is not None:
        return recorded(stmt_src)
    try:
        node = ast.parse(stmt_src).body[0]
        v = ast.literal_eval(node.value)  # type: ignore[attr-defined]
    except (ValueError, SyntaxError, TypeError, IndexError, AttributeError):
        return {}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]  # type: ignore
    return {t.id: v for t in targets if isinstance(t, ast.Name)}


def _target_names(node: ast.stmt) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return [n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)]


def literal_params(cells: list[Cell]) -> dict[str, object]:
    """`name = value` assignments of the parameters cells, in order (later wins)."""
    out: dict[str, object] = {}
    for c in cells:
        for node in c.tree.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # a docstring or a bare string comment
            names = _target_names(node)
            ok = isinstance(node, (ast.Assign, ast.AnnAssign)) and getattr(node, "value", None)
            if not ok or not names:
                raise ExportError(
                    f"parameters cell {c.index}, line {node.lineno}: only `name = value` "
                    "assignments of plain values belong in the parameters cell"
                )
            vals = _values(ast.get_source_segment(c.source, node) or "")
            if not set(names) <= set(vals):
                raise ExportError(
                    f"parameters cell {c.index}, line {node.lineno}: "
                    f"`{ast.unparse(node)}` is not a plain value (number, string, bool, None, "
                    "list or dict, not too large); compute it in a stage instead"
                )
            for n in names:
                out[n] = vals[n]
    return out


def promote_run_params(cells: list[Cell], declared: dict[str, object]) -> dict[str, object]:
    """The literal assignments of `%%mlops_run` cells are params of the notebook run; make
    them pipeline params too (removed from the code, moved to params.yaml).

    A name whose value differs between cells or from the parameters cell stays in code."""
    found: dict[int, dict[str, tuple[object, list[ast.stmt]]]] = {}
    values: dict[str, list[object]] = {}
    for c in cells:
        final = _values(c.source)
        mine: dict[str, tuple[object, list[ast.stmt]]] = {}
        body = c.tree.body
        for node in body:
            names = _target_names(node) if isinstance(node, (ast.Assign, ast.AnnAssign)) else []
            if not names or not all(n in final for n in names):
                continue
            shares_line = any(
                o is not node
                and o.lineno <= (node.end_lineno or 0)
                and (o.end_lineno or 0) >= node.lineno
                for o in body
            )
            if shares_line or not set(names) <= set(
                _values(ast.get_source_segment(c.source, node) or "")
            ):
                continue
            for n in names:
                mine.setdefault(n, (final[n], []))[1].append(node)
        found[c.index] = mine
        for n, (v, _) in mine.items():
            values.setdefault(n, []).append(v)
    ok = {
        n
        for n, vs in values.items()
        if all(v == vs[0] for v in vs) and (n not in declared or declared[n] == vs[0])
    }
    out: dict[str, object] = {}
    for c in cells:
        drop: set[int] = set()
        for n, (v, nodes) in found[c.index].items():
            if n not in ok:
                continue
            if any(set(_target_names(nd)) - ok for nd in nodes):
                continue  # `a, b = 1, 2` with only `a` promotable: keep the statement
            out[n] = v
            for nd in nodes:
                drop.update(range(nd.lineno, (nd.end_lineno or nd.lineno) + 1))
        if drop:
            lines = [ln for i, ln in enumerate(c.source.splitlines(), 1) if i not in drop]
            c.source = "\n".join(lines) + "\n"
            c.tree = _parse(c.source, c.index)
    return out


def _is_params_comment(raw: str) -> bool:
    first = raw.lstrip().splitlines()[0].lower() if raw.strip() else ""
    return first.startswith("# parameters") or first == "#parameters"
