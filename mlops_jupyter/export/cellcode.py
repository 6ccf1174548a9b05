"""Text-level helpers for stage code: the cell's tracking calls rewritten for the pipeline,
trailing expressions shown as the notebook showed them, indentation, small ast queries."""

from __future__ import annotations

import ast
import io
import re
import tokenize

from . import analysis as an
from .notebook import Cell


def split_lines(text: str) -> list[str]:
    return text.splitlines()


def stmt_start(node: ast.stmt) -> int:
    decos = getattr(node, "decorator_list", None) or []
    return min([node.lineno] + [d.lineno for d in decos])


def single_run(cells: list[Cell], mods: set[str], funcs: dict[str, str]) -> bool:
    """True when the stage's code makes at most one tracking run (one `%%mlops_run` cell or
    one `start_run` call, not in a loop or function): that run becomes the stage's run.
    Otherwise each notebook run stays a run of its own, nested under the stage's run."""
    n = sum(c.run_cell for c in cells)
    for c in cells:
        for node in walk_scoped(c.tree, False):
            call, nested = node
            if an.tracking_call(call, mods, funcs) == "start_run":
                n += 2 if nested else 1
    return n <= 1


def walk_scoped(tree: ast.AST, nested: bool):
    """(node, inside a loop/function/comprehension) for every node of `tree`."""
    for child in ast.iter_child_nodes(tree):
        yield child, nested
        inner = nested or isinstance(
            child,
            (
                ast.For,
                ast.AsyncFor,
                ast.While,
                ast.FunctionDef,
                ast.AsyncFunctionDef,
                ast.Lambda,
                ast.ListComp,
                ast.SetComp,
                ast.DictComp,
                ast.GeneratorExp,
            ),
        )
        yield from walk_scoped(child, inner)


def rewrite(
    cell: Cell, mods: set[str], funcs: dict[str, str], single: bool = True, owns: bool = False
) -> tuple[list[str], bool]:
    """The cell's lines with `mj.start_run` -> `stage_run` and `mj.end_run()` statements
    made inert (the pipeline owns its runs). Line count is kept so ast positions still hold.

    `single=False` (several runs in the stage): calls stay as they are, except an
    `end_run()` in a stage that starts no run itself (`owns=False`), which would end the
    stage's run."""
    lines = split_lines(cell.source)
    edits: list[tuple[int, int, int, str]] = []  # (line, start col, end col, text), bytes
    used = False
    for node in ast.walk(cell.tree):
        if not single and (owns or not isinstance(node, ast.Expr)):
            continue
        if isinstance(node, ast.Expr) and an.tracking_call(node.value, mods, funcs) == "end_run":
            raw = lines[node.lineno - 1]
            indent = raw[: len(raw) - len(raw.lstrip())]
            text = ast.get_source_segment(cell.source, node) or "end_run()"
            note = f"# {text.splitlines()[0]}: the pipeline ends each stage's run"
            lines[node.lineno - 1] = f"{indent}pass  {note}" if node.col_offset else note
            for i in range(node.lineno, node.end_lineno or node.lineno):
                lines[i] = ""
        elif isinstance(node, ast.Call) and an.tracking_call(node, mods, funcs) in (
            "start_run",
            "active_run",
        ):
            f = node.func
            if f.lineno == f.end_lineno:
                edits.append((f.lineno, f.col_offset, f.end_col_offset or 0, "stage_run"))
                used = True
    for ln, a, b, text in sorted(edits, reverse=True):
        raw = lines[ln - 1].encode()
        lines[ln - 1] = (raw[:a] + text.encode() + raw[b:]).decode()
    return lines, used


def segment(lines: list[str], start: int, end: int) -> str:
    return "\n".join(lines[start - 1 : end])


def trim(chunk: list[str]) -> list[str]:
    while chunk and not chunk[0].strip():
        chunk.pop(0)
    while chunk and not chunk[-1].strip():
        chunk.pop()
    return chunk


def indent_code(code: str, prefix: str = "    ") -> str:
    """Indent code, leaving the continuation lines of multi-line strings untouched."""
    if not code.strip():
        return f"{prefix}pass"
    keep: set[int] = set()
    try:
        fstart = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+ f-string tokens
        fend = getattr(tokenize, "FSTRING_END", None)
        opened: list[int] = []
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.STRING and tok.start[0] != tok.end[0]:
                keep.update(range(tok.start[0] + 1, tok.end[0] + 1))
            elif fstart is not None and tok.type == fstart:
                opened.append(tok.start[0])
            elif fend is not None and tok.type == fend and opened:
                keep.update(range(opened.pop() + 1, tok.end[0] + 1))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    out = []
    for i, line in enumerate(code.splitlines(), start=1):
        out.append(line if i in keep or not line.strip() else prefix + line)
    return "\n".join(out)


def top_level_await(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    return any(
        isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)) and not nested
        for node, nested in walk_scoped_defs(tree, scopes)
    )


def walk_scoped_defs(tree: ast.AST, scopes: tuple, nested: bool = False):
    for child in ast.iter_child_nodes(tree):
        yield child, nested
        yield from walk_scoped_defs(child, scopes, nested or isinstance(child, scopes))


def has_statements(code: str) -> bool:
    try:
        return bool(ast.parse(code).body)
    except SyntaxError:
        return bool(code.strip())


def literal_experiment(cells: list[Cell], mods: set[str], funcs: dict[str, str]) -> str | None:
    """`experiment="x"` (or the 2nd positional argument) of the notebook's start_run calls."""
    return literal_arg(cells, mods, funcs, "experiment", 1)


def literal_arg(
    cells: list[Cell], mods: set[str], funcs: dict[str, str], kw: str, pos: int
) -> str | None:
    """A literal string argument (`kw=` or positional `pos`) of a start_run call."""
    for c in cells:
        for n in ast.walk(c.tree):
            if an.tracking_call(n, mods, funcs) != "start_run":
                continue
            args = [k.value for k in n.keywords if k.arg == kw] + n.args[pos : pos + 1]
            for a in args:
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value:
                    return a.value
    return None


def loads_of(code: str) -> set[str]:
    """Every name the code reads (at any depth)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def show_trailing(cell: Cell, lines: list[str], mods: set[str], funcs: dict[str, str]) -> None:
    """A cell ending in an expression (`df.head()`, `grid.best_params_`) shows its value in
    the notebook: wrap it in `show_result(...)`, which prints what the notebook showed
    (its repr, nothing for None). A trailing `;` hides the value, as in Jupyter."""
    if not cell.tree.body:
        return
    node = cell.tree.body[-1]
    if not isinstance(node, ast.Expr) or an.tracking_call(node.value, mods, funcs):
        return
    f = node.value.func if isinstance(node.value, ast.Call) else None
    if isinstance(f, ast.Name) and f.id in ("print", "display", *funcs):
        return  # shows its arguments itself, or logs (`mj.log(...)`): returns None
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in mods:
        return
    if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        if len(cell.tree.body) == 1:
            return  # a cell holding only a string is a comment, not something to show
    end = node.end_lineno or node.lineno
    last = lines[end - 1].encode()
    rest = last[node.end_col_offset or 0 :].decode().strip()
    if rest.startswith(";"):
        return
    if lines[node.lineno - 1].lstrip().startswith("#"):
        return  # already made inert (a tracking call)
    bare = isinstance(node.value, ast.Tuple)  # `a.shape, b.shape` shows the tuple
    close, open_ = (b"))", b"show_result((") if bare else (b")", b"show_result(")
    lines[end - 1] = (last[: node.end_col_offset] + close + last[node.end_col_offset :]).decode()
    first = lines[node.lineno - 1].encode()
    col = node.col_offset
    lines[node.lineno - 1] = (first[:col] + open_ + first[col:]).decode()


_SPAN = re.compile(r"^\s*#\s*%mlops_run\s+(start|end)\b(.*)$")


def _logs(node: ast.AST, mods: set[str], funcs: dict[str, str]) -> bool:
    """Whether the code calls an mlops_jupyter logging function (`mj.log(...)`)."""
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                if f.value.id in mods and f.attr.startswith("log"):
                    return True
            elif isinstance(f, ast.Name) and funcs.get(f.id, "").startswith("log"):
                return True
    return False


def span_names(stages: list, mods: set[str], funcs: dict[str, str]) -> dict[int, str]:
    """Stage index -> the NAME of a `%mlops_run start NAME ... %mlops_run end` span: the
    notebook run the span made holds what the span's code logged, so its name goes to the
    first stage that logs inside the span (else the first with code inside it), not to
    the stage that merely holds the `start` line."""
    from .notebook import magic_run_name

    spans: list[tuple[str, list[tuple[int, bool]]]] = []
    open_span: tuple[str, list[tuple[int, bool]]] | None = None
    for si, st in enumerate(stages):
        for cell in st.cells:
            events = []
            for ln, text in enumerate(cell.source.splitlines(), start=1):
                m = _SPAN.match(text)
                if m:
                    name = (
                        magic_run_name(text.lstrip()[1:].strip()) if m.group(1) == "start" else None
                    )
                    events.append((ln, m.group(1), name))
            if not events and open_span is None:
                continue
            for node in cell.tree.body:
                while events and events[0][0] < node.lineno:
                    _, kind, name = events.pop(0)
                    open_span = (name or "", []) if kind == "start" else None
                    if open_span is not None:
                        spans.append(open_span)
                if open_span is not None:
                    open_span[1].append((si, _logs(node, mods, funcs)))
            for _, kind, name in events:
                open_span = (name or "", []) if kind == "start" else None
                if open_span is not None:
                    spans.append(open_span)
    out: dict[int, str] = {}
    for name, members in spans:
        if not name or not members:
            continue
        logging = [si for si, logs in members if logs]
        out.setdefault(logging[0] if logging else members[0][0], name)
    return out
