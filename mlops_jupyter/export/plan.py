"""From stage cells to a pipeline plan: the DAG (inputs, outputs, params per stage), the
imports and helpers each stage module needs, and the stage function bodies."""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field

from . import analysis as an
from . import imports as im
from .cellcode import (
    has_statements,
    indent_code,
    literal_arg,
    loads_of,
    rewrite,
    segment,
    show_trailing,
    single_run,
    span_names,
    stmt_start,
    top_level_await,
    trim,
)
from .notebook import Cell, ExportError, SplitNotebook, literal_params, magic_experiment

__all__ = ["Plan", "StagePlan", "build_plan", "indent_code"]

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
    # notebook variables that functions the stage calls read: module globals of the stage
    # module (`global x` in the stage function), set by the runner instead of passed in
    globals: list[str] = field(default_factory=list)
    rebind: list[str] = field(default_factory=list)  # imported functions given our globals


@dataclass
class Plan:
    params: dict[str, object]
    stages: list[StagePlan]
    warnings: list[str]
    experiment: str | None = None  # the experiment the notebook's own runs use, if literal

    @property
    def runnable(self) -> list[StagePlan]:
        return [s for s in self.stages if s.is_stage]


_DEF = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class _Def:
    stage: int
    cell: Cell
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _check_defs(defs: dict[str, list[_Def]]) -> None:
    """Refuse what cannot be exported exactly: a function that rebinds a notebook variable
    with `global x` (the pipeline passes values between stages, not a shared namespace)."""
    for name, versions in defs.items():
        for d in versions:
            g = an.global_decls(d.node)
            if g:
                kind = "class" if isinstance(d.node, ast.ClassDef) else "function"
                raise ExportError(
                    f"cell {d.cell.index}: {kind} `{name}` rebinds notebook variables with "
                    f"`global {', '.join(g)}`, which a pipeline cannot reproduce exactly; "
                    f"return the new value instead (`{g[0]} = {name}(...)`)"
                )


def _def_time_reads(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> set[str]:
    """Names read when the def statement itself runs: decorators, defaults, class bases
    and the statements of a class body (a class body runs when the class is defined)."""
    exprs: list[ast.AST | None] = list(node.decorator_list)
    if isinstance(node, ast.ClassDef):
        exprs += [*node.bases, *(k.value for k in node.keywords)]
        return _names(exprs) | _class_body_reads(node)
    exprs += [*node.args.defaults, *node.args.kw_defaults]
    return _names(exprs)


def _names(exprs: list) -> set[str]:
    return {n.id for e in exprs if e is not None for n in ast.walk(e) if isinstance(n, ast.Name)}


def _class_body_reads(node: ast.ClassDef) -> set[str]:
    """Names the statements of a class body read (not its methods' bodies)."""
    out: set[str] = set()
    for stmt in node.body:
        if isinstance(stmt, _DEF):
            out |= _def_time_reads(stmt)
        else:
            out |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
    return out


def _in_place(defs: dict[str, list[_Def]], n_stages: int, data: set[str]) -> list[set[str]]:
    """Per stage, the defs that stay where they are in the stage code: a name defined more
    than once in one stage (each call must see the version defined above it), a def whose
    decorators or defaults read notebook variables (evaluated where the def runs), and the
    defs of that stage that call such a name."""
    out: list[set[str]] = [set() for _ in range(n_stages)]
    for name, versions in defs.items():
        for si in {d.stage for d in versions}:
            if sum(d.stage == si for d in versions) > 1:
                out[si].add(name)
        for d in versions:
            if _def_time_reads(d.node) & data:
                out[d.stage].add(name)
    for si in range(n_stages):
        changed = True
        while changed:
            changed = False
            for name, versions in defs.items():
                if name in out[si]:
                    continue
                if any(d.stage == si and an.free_names(d.node) & out[si] for d in versions):
                    out[si].add(name)
                    changed = True
    return out


def _free_data(defs: dict[str, list[_Def]], data: set[str]) -> dict[str, set[str]]:
    """Notebook variables each def reads when called, directly or through other defs."""
    direct = {n: set().union(*(an.free_names(d.node) for d in vs)) for n, vs in defs.items()}
    out = {n: names & data for n, names in direct.items()}
    changed = True
    while changed:
        changed = False
        for n, names in direct.items():
            for other in names & set(defs):
                if not out[other] <= out[n]:
                    out[n] |= out[other]
                    changed = True
    return out


def _drop_unused_related(stages: list[StagePlan], related_of: list[set[str]]) -> None:
    """A name a stage took only because it may share state with what the stage changed is
    needed only if a later stage reads that stage's version: otherwise it is no input."""
    for sp, related in zip(stages, related_of):
        for name in related:
            if name not in sp.outputs:
                sp.inputs.pop(name, None)
    wanted = {(src, n) for sp in stages for n, src in sp.inputs.items()}
    for sp in stages:
        sp.outputs = [o for o in sp.outputs if (sp.name, o) in wanted]


def _links(
    per_stage: list[list[tuple[list[str], list[str]]]], data: set[str]
) -> dict[str, set[str]]:
    """Notebook variables whose objects may share state (`b = a`, `w = model.weight`),
    both ways (modules, functions and params are not data that travels)."""
    out: dict[str, set[str]] = {}
    for links in per_stage:
        for bound, held in links:
            for b in bound:
                for h in held:
                    if b != h and b in data and h in data:
                        out.setdefault(b, set()).add(h)
                        out.setdefault(h, set()).add(b)
    return out


def _related(linked: dict[str, set[str]], names: set[str]) -> set[str]:
    """Every name connected to `names` through shared objects."""
    seen = set(names)
    todo = list(names)
    while todo:
        for other in linked.get(todo.pop(), ()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


def build_plan(split: SplitNotebook) -> Plan:
    """Derive the DAG and the code of every stage from the notebook's stage cells."""
    params = {**literal_params(split.params_cells), **split.captured}
    warnings = list(split.warnings)
    all_cells = [c for s in split.stages for c in s.cells]
    mods, funcs = an.mlops_aliases([c.tree for c in split.params_cells + all_cells])

    # 1. classify top-level statements of every stage
    per_stage: list[dict] = []
    items: list[im.ImportItem] = []
    import_names: set[str] = set()
    defs: dict[str, list[_Def]] = {}
    body_binds: set[str] = set(params)
    handles_all: set[str] = set()
    seq = 0
    for si, st in enumerate(split.stages):
        single = single_run(st.cells, mods, funcs)
        owns = any(
            an.tracking_call(n, mods, funcs) == "start_run"
            for c in st.cells
            for n in ast.walk(c.tree)
        )
        info: dict = {"cells": [], "stmts": [], "single": single, "moved": []}
        for cell in st.cells:
            lines, _ = rewrite(cell, mods, funcs, single, owns)
            show_trailing(cell, lines, mods, funcs)
            info["cells"].append((cell, lines))
            pre = im.preludes_of(cell.tree.body)
            for k, node in enumerate(cell.tree.body):
                seq += 1
                info["stmts"].append(node)
                text = segment(lines, stmt_start(node), node.end_lineno or node.lineno)
                if im.is_import_block(node):
                    new = im.items_of(node, text, seq, si)
                    items += new
                    import_names.update(*(it.names for it in new))
                    info["moved"].append(node)
                elif k in pre:
                    items.append(im.prelude_item(node, text, seq, si))
                    info["moved"].append(node)
                elif isinstance(node, _DEF):
                    defs.setdefault(node.name, []).append(_Def(si, cell, node))
                else:
                    body_binds.update(an.flow_of([node]).binds)
        handles_all |= an.run_handles(info["stmts"], mods, funcs)
        per_stage.append(info)
    data_names = (body_binds - import_names) - handles_all
    _check_defs(defs)
    in_place = _in_place(defs, len(split.stages), data_names | set(params))
    free = _free_data(defs, (data_names | set(params)) - set(defs))

    spans = span_names(split.stages, mods, funcs)
    linked = _links(
        [an.flow_of(info["stmts"]).links for info in per_stage],
        data_names - set(params) - set(defs),
    )

    # 2. per stage: body text, flow, inputs
    stages: list[StagePlan] = []
    producer: dict[str, int] = {}  # data name -> last stage index binding it so far
    code_home: dict[str, int] = {}  # def name -> stage index defining it last
    handle_seen: set[str] = set()
    related_of: list[set[str]] = []
    for si, (st, info) in enumerate(zip(split.stages, per_stage)):
        sp = StagePlan(st.name, [c.index for c in st.cells])
        if info["single"]:  # the stage's run is the notebook's run: keep its name
            cell_name = next((c.run_name for c in st.cells if c.run_cell and c.run_name), None)
            sp.run_name = (
                spans.get(si) or cell_name or literal_arg(st.cells, mods, funcs, "name", 0)
            )
        flow = an.flow_of(info["stmts"])
        sp.body = _body(sp, info, in_place[si])
        sp.is_stage = has_statements(sp.body)  # comments alone are nothing to run
        sp.is_async = top_level_await(sp.body)
        code = "\n\n".join([*sp.helpers, sp.body])
        loads = loads_of(code)
        mine = {n for n, vs in defs.items() if any(d.stage == si for d in vs)}

        # notebook variables read by the functions this stage calls
        called = (loads | set(flow.reads)) & set(defs)
        wanted = set().union(*(free[n] for n in called)) if called else set()
        sp.globals = sorted(wanted)
        # names only the bodies of module-level defs read are read when those run: inputs
        # only where a def is called (`wanted`), not of the stage that merely defines it
        plain = [n for n in info["stmts"] if not isinstance(n, _DEF) or n.name in in_place[si]]
        late = (set(flow.reads) - set(an.flow_of(plain).reads) - wanted) & (
            data_names | set(params)
        ) - set(defs)
        late -= {r for n in info["stmts"] if isinstance(n, _DEF) for r in _def_time_reads(n)}
        # objects that may share state with what the stage changes travel with it
        touched = set(flow.mutates) | wanted
        related = _related(linked, touched) - touched - set(flow.binds) - set(defs)
        related &= (data_names - set(params) - handles_all) & set(producer)
        extra = sorted((wanted | related) - set(flow.reads))
        for name in [*(r for r in flow.reads if r not in late), *extra]:
            if name in handles_all and name not in flow.binds:
                if name in handle_seen:
                    sp.handles.append(name)
                continue
            if name in import_names and name not in producer:
                continue  # resolved with the imports below
            if name in defs and name in mine and name in code_home:
                raise ExportError(
                    f"stage {st.name!r} (cells {sp.cells}) uses `{name}` of stage "
                    f"{stages[code_home[name]].name!r} and then defines a new `{name}`; "
                    "start a new stage at the new definition (tag its cell stage=NAME)"
                )
            if name in defs and name in code_home and code_home[name] != si:
                home = stages[code_home[name]]
                _export_def(home, defs[name], in_place[code_home[name]], data_names | set(params))
                sp.code_imports.setdefault(home.name, []).append(name)
                if free[name]:
                    if isinstance(defs[name][-1].node, ast.ClassDef):
                        raise ExportError(
                            f"stage {st.name!r} (cells {sp.cells}) uses class `{name}` of stage "
                            f"{home.name!r}, which reads notebook variables "
                            f"({', '.join(sorted(free[name]))}); pass them to it as arguments"
                        )
                    sp.rebind.append(name)
            elif name in defs and name in mine:
                pass  # a def of this stage
            elif name in producer:
                sp.inputs[name] = stages[producer[name]].name
            elif name in params:
                sp.params.append(name)
            elif name in RUNTIME_NAMES:
                sp.runtime_imports.append(name)
            elif not hasattr(builtins, name) and name not in _IGNORED and name not in flow.binds:
                warnings.append(
                    f"stage {st.name!r} uses `{name}`, which no earlier cell defines "
                    "(it fails with NameError unless a `skip` cell was meant to define it)"
                )
        needed = {n for n in loads if n not in producer}
        sp.imports = im.select(items, needed, si)
        for name in ("show_result", "notebook_run"):
            if name in loads:
                sp.runtime_imports.insert(0, name)
        if sp.rebind:
            sp.runtime_imports.append("use_globals")
        if "stage_run" in loads or sp.handles:
            sp.runtime_imports.insert(0, "stage_run")
        # what the stage binds, or may change in place, is its new version of that name
        changed = [*flow.binds, *flow.mutates, *(n for n in sp.globals if n not in params)]
        changed += sorted(related)
        related_of.append(related)
        for name in changed:
            if name in defs and name in mine:
                code_home[name] = si
            elif name in handles_all:
                handle_seen.add(name)
            elif name in flow.binds and name not in flow.imports:
                producer[name] = si
            elif name in producer and name in data_names and name not in params:
                producer[name] = si  # changed in place: later stages read this version
        for name, src_name in sp.inputs.items():
            src = next(s for s in stages if s.name == src_name)
            if name not in src.outputs:
                src.outputs.append(name)
        if "run" in mine or "run" in import_names:  # module-level names of the stage file
            sp.func = "run_stage"
        stages.append(sp)
    _drop_unused_related(stages, related_of)
    if not any(s.is_stage for s in stages):
        raise ExportError(
            "the notebook has no code to run as a pipeline (every cell is empty, skipped, "
            "parameters or imports)"
        )
    from .cellcode import literal_experiment

    return Plan(
        params, stages, warnings, split.experiment or literal_experiment(all_cells, mods, funcs)
    )


def _body(sp: StagePlan, info: dict, in_place: set[str]) -> str:
    """The stage function's body: the cells' code without the import statements, the
    code they depend on and the defs that moved to module level (kept in `sp.helpers`)."""
    moved = {id(n) for n in info["moved"]}
    chunks: list[str] = []
    for cell, lines in info["cells"]:
        keep = [True] * len(lines)
        for node in cell.tree.body:
            is_def = isinstance(node, _DEF) and node.name not in in_place
            if id(node) in moved or is_def:
                a, b = stmt_start(node), node.end_lineno or node.lineno
                if is_def:
                    sp.helpers.append(segment(lines, a, b))
                for i in range(a - 1, b):
                    keep[i] = False
                while b < len(lines) and not lines[b].strip():  # blank lines after it
                    keep[b] = False
                    b += 1
        chunk = trim([ln for ln, k in zip(lines, keep) if k])
        if chunk and cell.run_cell and not info["single"]:
            # one of several `%%mlops_run` cells: it stays a run of its own
            head = [chunk.pop(0)] if chunk[0].lstrip().startswith("# %%mlops_run") else []
            args = repr(cell.run_name) if cell.run_name else ""
            exp = magic_experiment(head[0].lstrip()[2:]) if head else None
            if exp:
                args += (", " if args else "") + f"experiment={exp!r}"
            chunk = [*head, f"with notebook_run({args}):", indent_code("\n".join(chunk))]
        if chunk:
            chunks.append("\n".join(chunk))
    return "\n\n".join(chunks)


def _export_def(home: StagePlan, versions: list[_Def], in_place: set[str], data: set[str]) -> None:
    """A def kept in place in its stage's code that a later stage uses: its last version
    also goes to module level of that stage's module, for the later stage to import."""
    last = [d for d in versions if home.cells and d.cell.index in home.cells]
    if not last or last[-1].node.name not in in_place:
        return
    d = last[-1]
    reads = _def_time_reads(d.node) & data
    if reads:
        raise ExportError(
            f"cell {d.cell.index}: `{d.node.name}` reads notebook variables when it is defined "
            f"(in its decorators, defaults or class body: {', '.join(sorted(reads))}) and a "
            "later stage uses it; define it in the stage that uses it, or pass those values "
            "when calling it"
        )
    text = ast.get_source_segment(d.cell.source, d.node) or ast.unparse(d.node)
    decos = "".join(f"@{ast.unparse(x)}\n" for x in d.node.decorator_list)
    if not text.startswith("@"):
        text = decos + text
    if text not in home.helpers:
        home.helpers.append(text)
