"""From stage cells to a pipeline plan: the DAG (inputs, outputs, params per stage), the
imports and helpers each stage module needs, and the stage function bodies."""

from __future__ import annotations

import ast
import builtins
import io
import tokenize
from dataclasses import dataclass, field

from . import analysis as an
from .notebook import Cell, ExportError, SplitNotebook, literal_params, magic_experiment

# Names IPython provides in a notebook that plain Python lacks; the runtime supplies them.
RUNTIME_NAMES = {"display"}
_IGNORED = {"get_ipython", "In", "Out", "_", "__", "___", "exit", "quit"}


@dataclass
class StagePlan:
    """One stage: a module `stages/<name>.py` with `run(inputs..., *, params...)`."""

    name: str
    cells: list[int]
    inputs: dict[str, str] = field(default_factory=dict)  # name -> producing stage
    params: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)  # import statements (notebook text)
    code_imports: dict[str, list[str]] = field(default_factory=dict)  # module -> names
    runtime_imports: list[str] = field(default_factory=list)  # stage_run, display
    helpers: list[str] = field(default_factory=list)  # top-level defs/classes (source)
    handles: list[str] = field(default_factory=list)  # run handles bound at the top
    body: str = ""  # the function body, not indented
    is_stage: bool = True  # False: only helpers other stages import, nothing to run
    func: str = "run"
    run_name: str | None = None  # the notebook's own name for this run, if it gave one
    is_async: bool = False  # top-level `await` (IPython allows it): an `async def` stage


@dataclass
class Plan:
    params: dict[str, object]
    stages: list[StagePlan]
    warnings: list[str]
    experiment: str | None = None  # the experiment the notebook's own runs use, if literal

    @property
    def runnable(self) -> list[StagePlan]:
        return [s for s in self.stages if s.is_stage]


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _stmt_start(node: ast.stmt) -> int:
    decos = getattr(node, "decorator_list", None) or []
    return min([node.lineno] + [d.lineno for d in decos])


def _is_import_block(node: ast.stmt) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, ast.Try):  # `try: import x / except ImportError: x = None`
        inner = node.body + [s for h in node.handlers for s in h.body] + node.orelse
        return all(
            isinstance(s, (ast.Import, ast.ImportFrom, ast.Pass))
            or (isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant))
            for s in inner
        ) and any(isinstance(s, (ast.Import, ast.ImportFrom)) for s in node.body)
    return False


def single_run(cells: list[Cell], mods: set[str], funcs: dict[str, str]) -> bool:
    """True when the stage's code makes at most one tracking run (one `%%mlops_run` cell or
    one `start_run` call, not in a loop or function): that run becomes the stage's run.
    Otherwise each notebook run stays a run of its own, nested under the stage's run."""
    n = sum(c.run_cell for c in cells)
    for c in cells:
        for node in _walk_scoped(c.tree, False):
            call, nested = node
            if an.tracking_call(call, mods, funcs) == "start_run":
                n += 2 if nested else 1
    return n <= 1


def _walk_scoped(tree: ast.AST, nested: bool):
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
        yield from _walk_scoped(child, inner)


def _rewrite(
    cell: Cell, mods: set[str], funcs: dict[str, str], single: bool = True, owns: bool = False
) -> tuple[list[str], bool]:
    """The cell's lines with `mj.start_run` -> `stage_run` and `mj.end_run()` statements
    made inert (the pipeline owns its runs). Line count is kept so ast positions still hold.

    `single=False` (several runs in the stage): calls stay as they are, except an
    `end_run()` in a stage that starts no run itself (`owns=False`), which would end the
    stage's run."""
    lines = _lines(cell.source)
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


def _segment(lines: list[str], start: int, end: int) -> str:
    return "\n".join(lines[start - 1 : end])


def _trim(chunk: list[str]) -> list[str]:
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


def build_plan(split: SplitNotebook) -> Plan:
    """Derive the DAG and the code of every stage from the notebook's stage cells."""
    params = {**literal_params(split.params_cells), **split.captured}
    warnings = list(split.warnings)
    all_cells = [c for s in split.stages for c in s.cells]
    mods, funcs = an.mlops_aliases([c.tree for c in split.params_cells + all_cells])

    # 1. classify top-level statements of every stage
    per_stage: list[dict] = []
    import_text: dict[str, str] = {}  # bound name -> import statement (latest wins)
    defs: dict[str, tuple[int, ast.stmt]] = {}  # top-level def name -> (stage no, node)
    body_binds: set[str] = set(params)
    handles_all: set[str] = set()
    for si, st in enumerate(split.stages):
        single = single_run(st.cells, mods, funcs)
        owns = any(
            an.tracking_call(n, mods, funcs) == "start_run"
            for c in st.cells
            for n in ast.walk(c.tree)
        )
        info: dict = {"cells": [], "stmts": [], "imports": {}, "single": single}
        for cell in st.cells:
            lines, used = _rewrite(cell, mods, funcs, single, owns)
            info["cells"].append((cell, lines))
            for node in cell.tree.body:
                info["stmts"].append(node)
                if _is_import_block(node):
                    text = _segment(lines, _stmt_start(node), node.end_lineno or node.lineno)
                    for name in an.flow_of([node]).imports:
                        t = _own_import(node, name) or text
                        import_text[name] = t
                        info["imports"][name] = t
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    defs[node.name] = (si, node)
                else:
                    body_binds.update(an.flow_of([node]).binds)
        handles_all |= an.run_handles(info["stmts"], mods, funcs)
        per_stage.append(info)
    data_names = (body_binds - set(import_text)) - handles_all

    # 2. top-level defs/classes move to module level unless they read notebook variables
    hoist = {n for n, (_, node) in defs.items() if not (an.free_names(node) & data_names)}
    changed = True
    while changed:
        changed = False
        for n in list(hoist):
            if (an.free_names(defs[n][1]) & set(defs)) - hoist:
                hoist.discard(n)
                changed = True

    # 3. per stage: body text, flow, inputs
    stages: list[StagePlan] = []
    producer: dict[str, int] = {}  # data name -> last stage index binding it so far
    code_home: dict[str, int] = {}  # hoisted def name -> stage index defining it
    imports_so_far: dict[str, str] = {}
    handle_seen: set[str] = set()
    for si, (st, info) in enumerate(zip(split.stages, per_stage)):
        sp = StagePlan(st.name, [c.index for c in st.cells])
        if info["single"]:  # the stage's run is the notebook's run: keep its name
            sp.run_name = next((c.run_name for c in st.cells if c.run_name), None) or (
                _literal_arg(st.cells, mods, funcs, "name", 0)
            )
        flow = an.flow_of(info["stmts"])
        chunks: list[str] = []
        for cell, lines in info["cells"]:
            keep = [True] * len(lines)
            for node in cell.tree.body:
                is_def = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                if _is_import_block(node) or (is_def and node.name in hoist):
                    a, b = _stmt_start(node), node.end_lineno or node.lineno
                    if is_def:
                        sp.helpers.append(_segment(lines, a, b))
                    for i in range(a - 1, b):
                        keep[i] = False
                    while b < len(lines) and not lines[b].strip():  # blank lines after it
                        keep[b] = False
                        b += 1
            chunk = _trim([ln for ln, k in zip(lines, keep) if k])
            if chunk and cell.run_cell and not info["single"]:
                # one of several `%%mlops_run` cells: it stays a run of its own
                head = [chunk.pop(0)] if chunk[0].lstrip().startswith("# %%mlops_run") else []
                args = repr(cell.run_name) if cell.run_name else ""
                exp = magic_experiment("%" + head[0].lstrip()[2:]) if head else None
                args += (", " if args else "") + f"experiment={exp!r}" if exp else ""
                chunk = [*head, f"with notebook_run({args}):", indent_code("\n".join(chunk))]
            if chunk:
                chunks.append("\n".join(chunk))
        sp.body = "\n\n".join(chunks)
        sp.is_stage = _has_statements(sp.body)  # comments alone are nothing to run
        sp.is_async = _top_level_await(sp.body)
        code = "\n\n".join([*sp.helpers, sp.body])
        loads = _loads(code)

        for name in flow.reads:
            if name in handles_all and name not in flow.binds:
                if name in handle_seen:
                    sp.handles.append(name)
                continue
            if name in import_text and name not in producer:
                continue  # resolved with the imports below
            if name in hoist and name in code_home and code_home[name] != si:
                home = split.stages[code_home[name]].name
                sp.code_imports.setdefault(home, []).append(name)
            elif name in producer:
                src = split.stages[producer[name]].name
                if name in defs and name not in hoist and producer[name] == defs[name][0]:
                    raise ExportError(
                        f"stage {st.name!r} (cells {sp.cells}) uses `{name}`, defined in stage "
                        f"{src!r}, but `{name}` reads notebook variables "
                        f"({', '.join(sorted(an.free_names(defs[name][1]) & data_names))}); "
                        "pass them as arguments so it can move to module level"
                    )
                sp.inputs[name] = src
            elif name in params:
                sp.params.append(name)
            elif name in RUNTIME_NAMES:
                sp.runtime_imports.append(name)
            elif name in hoist and defs[name][0] == si:
                pass  # a helper of this stage, defined at module level
            elif not hasattr(builtins, name) and name not in _IGNORED and name not in flow.binds:
                warnings.append(
                    f"stage {st.name!r} uses `{name}`, which no earlier cell defines "
                    "(it fails with NameError unless a `skip` cell was meant to define it)"
                )
        imports_so_far.update(info["imports"])
        for name, text in imports_so_far.items():
            if name in loads and name not in producer and text not in sp.imports:
                sp.imports.append(text)
        if "notebook_run" in loads:
            sp.runtime_imports.insert(0, "notebook_run")
        if "stage_run" in loads or sp.handles:
            sp.runtime_imports.insert(0, "stage_run")
        for name in flow.binds:
            if name in hoist and defs[name][0] == si:
                code_home[name] = si
            elif name in handles_all:
                handle_seen.add(name)
            elif name not in flow.imports:
                producer[name] = si
        for name, src_name in sp.inputs.items():
            src = next(s for s in stages if s.name == src_name)
            if name not in src.outputs:
                src.outputs.append(name)
        if "run" in hoist or "run" in import_text:  # module-level names of the stage file
            sp.func = "run_stage"
        stages.append(sp)
    if not any(s.is_stage for s in stages):
        raise ExportError(
            "the notebook has no code to run as a pipeline (every cell is empty, skipped, "
            "parameters or imports)"
        )
    return Plan(
        params, stages, warnings, split.experiment or _literal_experiment(all_cells, mods, funcs)
    )


def _top_level_await(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    return any(
        isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)) and not nested
        for node, nested in _walk_scoped_defs(tree, scopes)
    )


def _walk_scoped_defs(tree: ast.AST, scopes: tuple, nested: bool = False):
    for child in ast.iter_child_nodes(tree):
        yield child, nested
        yield from _walk_scoped_defs(child, scopes, nested or isinstance(child, scopes))


def _has_statements(code: str) -> bool:
    try:
        return bool(ast.parse(code).body)
    except SyntaxError:
        return bool(code.strip())


def _own_import(node: ast.stmt, name: str) -> str | None:
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


def _literal_experiment(cells: list[Cell], mods: set[str], funcs: dict[str, str]) -> str | None:
    """`experiment="x"` (or the 2nd positional argument) of the notebook's start_run calls."""
    return _literal_arg(cells, mods, funcs, "experiment", 1)


def _literal_arg(
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


def _loads(code: str) -> set[str]:
    """Every name the code reads (at any depth)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
