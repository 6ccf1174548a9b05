"""Static def/use analysis of stage code with `ast`: which names a stage reads before it
defines them (its inputs) and which it binds (candidate outputs)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field


@dataclass
class Flow:
    """Names read and bound by a block of module-level code, in execution order."""

    reads: list[str] = field(default_factory=list)  # read while not yet bound here
    binds: list[str] = field(default_factory=list)  # bound (assigned, mutated, def, import...)
    imports: set[str] = field(default_factory=set)  # names bound by import statements
    # names the code may change in place (`xs.sort()`, `f(df)`, `df.dropna(inplace=True)`):
    # a later stage must read the changed value, so they count as outputs too
    mutates: list[str] = field(default_factory=list)
    # (bound names, names whose objects they may hold or share: `b = a`, `w = model.weight`,
    # `pair = [x, y]`): changing one in place may change the others
    links: list[tuple[list[str], list[str]]] = field(default_factory=list)

    def read(self, name: str, bound: set[str]) -> None:
        if name not in bound and name not in self.reads:
            self.reads.append(name)

    def bind(self, name: str, bound: set[str]) -> None:
        bound.add(name)
        if name not in self.binds:
            self.binds.append(name)

    def mutate(self, name: str) -> None:
        if name not in self.mutates:
            self.mutates.append(name)


# Calls known to leave their arguments unchanged, and methods known to leave their object
# unchanged (unless called with `inplace=True`). Anything else may mutate: a false "may
# mutate" only costs an extra stage output, a missed one gives a wrong value downstream.
PURE_FUNCS = {
    *"print len repr str int float bool type isinstance issubclass id hash sorted".split(),
    *"list tuple set frozenset dict sum min max abs round enumerate zip range display".split(),
    *"any all format".split(),
    *"reversed map filter hasattr getattr callable vars dir ord chr divmod pow bytes".split(),
    *"mean median std var array asarray concatenate stack vstack hstack where dot".split(),
    *"matmul allclose array_equal isclose sqrt exp log argmax argmin argsort sort".split(),
    *"zeros_like ones_like full_like unique deepcopy dumps DataFrame Series tensor".split(),
    *"zeros ones empty full arange linspace eye".split(),
    # plotting reads the data it is given (the axes or figure it draws on do change)
    *"scatter plot hist bar barh imshow show figure subplots title xlabel ylabel legend".split(),
    *"savefig heatmap pairplot histplot lineplot scatterplot boxplot violinplot".split(),
    *"countplot regplot displot catplot relplot kdeplot set_title set_xlabel set_ylabel".split(),
}
PURE_METHODS = {
    *"copy head tail describe info to_numpy tolist to_list astype mean sum std var".split(),
    *"min max median count nunique unique value_counts groupby agg merge query".split(),
    *"filter select with_columns isna isnull notna notnull any all reshape transpose".split(),
    *"item keys values items get format startswith endswith split strip lower upper".split(),
    *"dropna fillna drop sort_values sort_index reset_index rename set_index assign".split(),
    *"apply predict predict_proba score get_params to_csv to_parquet write_csv".split(),
    *"write_parquet corr cov idxmax idxmin argmax argmin numel size dim".split(),
}


def _target_names(node: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def _local_scope_free(node: ast.AST, params: set[str]) -> set[str]:
    """Names a function/lambda/comprehension body reads from outside: loads minus locals."""
    stores: set[str] = set(params)
    loads: set[str] = set()
    glob: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (loads if isinstance(n.ctx, ast.Load) else stores).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is not node:
            stores.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            stores.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, ast.Global):
            glob.update(n.names)
        elif isinstance(n, ast.arg):
            stores.add(n.arg)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            stores.add(n.name)
    return (loads - stores) | (loads & glob)


def _args(a: ast.arguments) -> set[str]:
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return set(names)


class _Walker(ast.NodeVisitor):
    """Visits module-level code in evaluation order (values before targets)."""

    def __init__(self, flow: Flow, bound: set[str]) -> None:
        self.flow = flow
        self.bound = bound

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)  # callee and arguments are read first
        f = node.func
        fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        inplace = any(
            k.arg == "inplace" and not (isinstance(k.value, ast.Constant) and not k.value.value)
            for k in node.keywords
        )
        if isinstance(f, ast.Attribute) and (inplace or fname not in PURE_METHODS):
            base = f.value
            while isinstance(base, (ast.Attribute, ast.Subscript)):
                base = base.value
            if isinstance(base, ast.Name):
                self.flow.mutate(base.id)
        if fname in PURE_FUNCS or fname in PURE_METHODS and not inplace:
            return
        for a in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(a, ast.Starred):
                a = a.value
            if isinstance(a, ast.Name):
                self.flow.mutate(a.id)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.flow.read(node.id, self.bound)
        else:
            self.flow.bind(node.id, self.bound)

    def _store_target(self, t: ast.AST) -> None:
        # `x[i] = v` / `x.a = v` mutate x: it reads x and must count as a new version of x
        if isinstance(t, (ast.Subscript, ast.Attribute)):
            base = t
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                if isinstance(base, ast.Subscript):
                    self.visit(base.slice)
                base = base.value
            self.visit(base)
            if isinstance(base, ast.Name):
                self.flow.bind(base.id, self.bound)
                self.flow.mutate(base.id)
        elif isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                self._store_target(e)
        elif isinstance(t, ast.Starred):
            self._store_target(t.value)
        else:
            self.visit(t)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self._store_target(t)
        held = shared_names(node.value)
        if held:
            bound = [n for t in node.targets for n in _target_names(t)]
            self.flow.links.append((bound, held))
            for name in held:  # the stage's version of both must travel together
                self.flow.mutate(name)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._store_target(node.target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            # `arr += 1` changes a numpy array or list in place: a mutation of the input
            self.flow.read(node.target.id, self.bound)
            self.flow.bind(node.target.id, self.bound)
            self.flow.mutate(node.target.id)
        else:
            self._store_target(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._store_target(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self._store_target(node.target)
        for s in node.body + node.orelse:
            self.visit(s)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._store_target(item.optional_vars)
        for s in node.body:
            self.visit(s)

    visit_AsyncWith = visit_With

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            if isinstance(t, ast.Name):
                self.flow.read(t.id, self.bound)
            else:
                self._store_target(t)

    def _free(self, node: ast.AST, params: set[str]) -> None:
        for name in sorted(_local_scope_free(node, params)):
            self.flow.read(name, self.bound)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for d in node.decorator_list + node.args.defaults + node.args.kw_defaults:
            if d is not None:
                self.visit(d)
        body = ast.Module(body=node.body, type_ignores=[])
        self._free(body, _args(node.args) | {node.name})
        self.flow.bind(node.name, self.bound)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for d in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(d)
        self._free(ast.Module(body=node.body, type_ignores=[]), {node.name})
        self.flow.bind(node.name, self.bound)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for d in node.args.defaults + node.args.kw_defaults:
            if d is not None:
                self.visit(d)
        self._free(node.body, _args(node.args))

    def _comprehension(self, node: ast.AST) -> None:
        gens: list[ast.comprehension] = node.generators  # type: ignore[attr-defined]
        self.visit(gens[0].iter)  # the first iterable is evaluated in the enclosing scope
        targets = {n for g in gens for n in _target_names(g.target)}
        self._free(node, targets)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for a in node.names:
            if a.name == "*":
                continue
            name = (a.asname or a.name).split(".")[0]
            self.flow.imports.add(name)
            self.flow.bind(name, self.bound)

    visit_ImportFrom = visit_Import

    def visit_Global(self, node: ast.Global) -> None:
        pass

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.flow.bind(node.name, self.bound)
        for s in node.body:
            self.visit(s)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self.flow.bind(node.name, self.bound)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.flow.bind(node.name, self.bound)


def shared_names(value: ast.AST) -> list[str]:
    """Names whose objects the result of `value` may hold or share rather than copy: the
    value itself (`b = a`), attributes and items (`w = model.weight`, `row = rows[0]`),
    container displays (`pair = [x, y]`), the arguments and object of calls not known to
    build something new (an optimizer holds `model.parameters()`). Arithmetic and
    comparisons make new objects."""
    out: list[str] = []
    todo: list[tuple[ast.AST, bool]] = [(value, True)]
    while todo:
        n, deep = todo.pop()
        if isinstance(n, ast.Name):
            if n.id not in out:
                out.append(n.id)
        elif isinstance(n, (ast.Attribute, ast.Subscript)) and deep:
            todo.append((n.value, True))
        elif isinstance(n, ast.Starred):
            todo.append((n.value, deep))
        elif isinstance(n, (ast.Tuple, ast.List, ast.Set)):
            todo += [(e, deep) for e in n.elts]
        elif isinstance(n, ast.Dict):
            todo += [(v, deep) for v in n.values if v is not None]
        elif isinstance(n, ast.IfExp):
            todo += [(n.body, deep), (n.orelse, deep)]
        elif isinstance(n, ast.NamedExpr):
            todo.append((n.value, deep))
        elif isinstance(n, ast.Call):
            f = n.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if fname in PURE_FUNCS or fname in PURE_METHODS:
                continue
            if isinstance(f, ast.Attribute):
                todo.append((f.value, True))
            # arguments passed as they are (`SGD(params)`), not values derived from them
            todo += [(a, False) for a in [*n.args, *(k.value for k in n.keywords)]]
    return out


def flow_of(stmts: list[ast.stmt], bound: set[str] | None = None) -> Flow:
    """Reads-before-binds and binds of statements run one after another."""
    flow = Flow()
    w = _Walker(flow, set() if bound is None else bound)
    for s in stmts:
        w.visit(s)
    return flow


def free_names(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> set[str]:
    """Names a top-level def/class needs from module scope (decorators, defaults, body)."""
    return set(flow_of([node]).reads)


# -- tracking calls ----------------------------------------------------------------------
def mlops_aliases(trees: list[ast.Module]) -> tuple[set[str], dict[str, str]]:
    """Names the notebook binds to the mlops_jupyter module, and to its functions
    (`from mlops_jupyter import start_run as sr` -> {"sr": "start_run"})."""
    mods: set[str] = set()
    funcs: dict[str, str] = {}
    for tree in trees:
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                for a in n.names:
                    if a.name == "mlops_jupyter":
                        mods.add(a.asname or a.name)
            elif isinstance(n, ast.ImportFrom) and n.module in (
                "mlops_jupyter",
                "mlops_jupyter.tracking",
            ):
                for a in n.names:
                    funcs[a.asname or a.name] = a.name
    return mods, funcs


def tracking_call(node: ast.AST, mods: set[str], funcs: dict[str, str]) -> str | None:
    """'start_run' / 'end_run' / 'active_run' when `node` calls that mlops_jupyter function."""
    if not isinstance(node, ast.Call):
        return None
    f = node.func
    name = None
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in mods:
        name = f.attr
    elif isinstance(f, ast.Name) and f.id in funcs:
        name = funcs[f.id]
    return name if name in ("start_run", "end_run", "active_run") else None


def run_handles(stmts: list[ast.stmt], mods: set[str], funcs: dict[str, str]) -> set[str]:
    """Names bound to a tracking run (`run = mj.start_run(...)`, `with mj.start_run() as r`):
    inside the pipeline they stand for the stage's run, not data passed between stages."""
    out: set[str] = set()
    for node in (n for s in stmts for n in ast.walk(s)):
        if isinstance(node, ast.Assign) and tracking_call(node.value, mods, funcs) in (
            "start_run",
            "active_run",
        ):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out.add(t.id)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if tracking_call(item.context_expr, mods, funcs) == "start_run" and isinstance(
                    item.optional_vars, ast.Name
                ):
                    out.add(item.optional_vars.id)
    return out


def global_decls(node: ast.AST) -> list[str]:
    """Names a def/class rebinds in the notebook's namespace with `global x`."""
    out: list[str] = []
    for n in ast.walk(node):
        if isinstance(n, ast.Global):
            out += [g for g in n.names if g not in out]
    return out
