"""Writing the pipeline package: one module per stage, params.yaml, pipeline.py (the DAG),
the `python -m` entry point, and optionally an Airflow DAG file."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from . import params as P
from .notebook import ExportError
from .plan import Plan, StagePlan, indent_code

MARKER = ".mlops-export.json"
_GENERATED = [
    "__init__.py",
    "__main__.py",
    "pipeline.py",
    "params.yaml",
    "stages",
    "airflow_dag.py",
    "prefect_flow.py",
    ".gitignore",
    "README.md",
    MARKER,
]


def _doc(text: str) -> str:
    """A docstring literal, its lines wrapped to fit 100 columns."""
    import textwrap

    lines = [textwrap.fill(ln, 96, break_on_hyphens=False) if ln else ln for ln in text.split("\n")]
    body = "\n".join(lines)
    return '"""' + body.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') + '"""'


def _cells(cells: list[int]) -> str:
    return ("cell " if len(cells) == 1 else "cells ") + ", ".join(map(str, cells))


def _signature(sp: StagePlan) -> str:
    # notebook variables read by functions are module globals, set by the runner
    args = [a for a in sp.inputs if a not in sp.globals]
    keyword = [p for p in sp.params if p not in sp.globals]
    if keyword:
        args += ["*", *keyword]
    kw = "async def" if sp.is_async else "def"
    one = f"{kw} {sp.func}({', '.join(args)}):"
    if len(one) <= 100:
        return one
    return f"{kw} {sp.func}(\n" + "".join(f"    {a},\n" for a in args) + "):"


def _returns(sp: StagePlan) -> str:
    if not sp.outputs:
        return "    return {}"
    one = "    return {" + ", ".join(f'"{o}": {o}' for o in sp.outputs) + "}"
    if len(one) <= 100:
        return one
    return "    return {\n" + "".join(f'        "{o}": {o},\n' for o in sp.outputs) + "    }"


def stage_module(sp: StagePlan, pipeline: str, notebook: str) -> str:
    """Source of `stages/<name>.py`."""
    doc = [f"Stage `{sp.name}` of pipeline `{pipeline}` ({notebook}, {_cells(sp.cells)})."]
    if sp.is_stage:
        by_src: dict[str, list[str]] = {}
        for n, src in sp.inputs.items():
            by_src.setdefault(src, []).append(n)
        ins = "; ".join(f"{', '.join(ns)} (from {s})" for s, ns in by_src.items())
        doc += [
            "",
            f"Inputs: {ins or '-'}",
            f"Params: {', '.join(sp.params) or '-'}",
            f"Outputs: {', '.join(sp.outputs) or '-'}",
        ]
    else:
        doc += ["", "Helpers used by other stages (nothing to run)."]
    parts = [_doc("\n".join(doc) + "\n"), ""]
    if sp.imports:
        parts += ["\n".join(sp.imports), ""]
    if sp.runtime_imports:
        parts += [f"from mlops_jupyter.export.runtime import {', '.join(sp.runtime_imports)}", ""]
    for mod, names in sp.code_imports.items():
        parts += [f"from .{mod} import {', '.join(names)}"]
    if sp.code_imports:
        parts.append("")
    for name in sp.rebind:  # it reads notebook variables: from this module's globals
        parts.append(f"{name} = use_globals({name}, globals())")
    if sp.rebind:
        parts.append("")
    for h in sp.helpers:
        parts += ["", h, ""]
    if sp.is_stage:
        body = "\n".join(f"    {h} = stage_run()" for h in sp.handles)
        if sp.globals:
            note = "  # notebook variables that functions called here read"
            body = f"    global {', '.join(sp.globals)}{note}" + ("\n" if body else "") + body
        body += ("\n" if body else "") + indent_code(sp.body)
        parts += ["", _signature(sp), body, _returns(sp)]
    text = "\n".join(parts).rstrip() + "\n"
    while "\n\n\n\n" in text:
        text = text.replace("\n\n\n\n", "\n\n\n")
    return text


def pipeline_module(plan: Plan, name: str, notebook: str, source_run: str | None, exp: str) -> str:
    """Source of `pipeline.py`: parameters and the stage DAG."""
    chain = " -> ".join(s.name for s in plan.runnable)
    lines = [
        _doc(
            f"Pipeline `{name}`, exported from {notebook} by mlops-jupyter: {chain}.\n\n"
            f"Run it with `python -m {name} [--param NAME=VALUE ...]`; `--list` shows the DAG.\n"
        ),
        "",
        "from mlops_jupyter.export.runtime import Stage",
        "",
        f"NAME = {name!r}",
        f"SOURCE_NOTEBOOK = {notebook!r}",
        f"SOURCE_RUN = {source_run!r}  # the notebook run this pipeline was exported from",
        f"EXPERIMENT = {exp!r}",
        "",
        "# defaults; params.yaml holds the values used",
        "PARAMS = {"
        + "".join(f"\n    {k!r}: {v!r}," for k, v in plan.params.items())
        + ("\n}" if plan.params else "}"),
        "",
        "STAGES = [",
    ]
    helpers_of = {s.name for s in plan.stages}
    for s in plan.runnable:
        args = [repr(s.name)]
        if s.inputs:
            args.append(f"inputs={s.inputs!r}")
        if s.outputs:
            args.append(f"outputs={s.outputs!r}")
        if s.params:
            args.append(f"params={s.params!r}")
        uses = sorted(_uses(plan, s) & helpers_of)
        if uses:
            args.append(f"uses={uses!r}")
        if s.func != "run":
            args.append(f"func={s.func!r}")
        if s.run_name and s.run_name != s.name:
            args.append(f"run_name={s.run_name!r}")
        one = f"    Stage({', '.join(args)}),"
        if len(one) > 100:
            one = "    Stage(\n" + "".join(f"        {a},\n" for a in args) + "    ),"
        lines.append(one)
    lines.append("]")
    return "\n".join(lines) + "\n"


def _uses(plan: Plan, s: StagePlan) -> set[str]:
    """Stage modules whose code `s` imports, transitively (they are part of its code hash)."""
    by_name = {x.name: x for x in plan.stages}
    seen: set[str] = set()
    todo = list(s.code_imports)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += list(by_name[m].code_imports)
    return seen


MAIN = '''"""`python -m {name}`: run the pipeline (see pipeline.py)."""

import os
import sys

if not __package__:  # run as `python path/to/{name}`: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mlops_jupyter.export.runtime import main

sys.exit(main(__package__ or os.path.basename(os.path.dirname(os.path.abspath(__file__)))))
'''

README = """# Pipeline `{name}`

Exported from `{notebook}` by mlops-jupyter. Stages: {chain}.

    python -m {name}                      # run (unchanged stages come from the cache)
    python -m {name} --param NAME=VALUE   # override a parameter for one run
    python -m {name} --list               # the stages, their inputs, params and outputs
    python -m {name} --force              # ignore the cache

Edit `params.yaml` to change the defaults. Stage code lives in `stages/`: each module has a
function taking its inputs and params and returning its outputs. Outputs are cached under
`.cache/` keyed by stage code, params and input versions; delete the folder to start afresh.
Runs are tracked in the mlops-jupyter store (a parent run and one child run per stage).
"""


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write into a folder that holds something other than an earlier export."""
    if not out.name.isidentifier():
        raise ExportError(
            f"the output folder name {out.name!r} must be a Python identifier so that "
            f"`python -m {out.name}` works; try {out.with_name(_ident(out.name))}"
        )
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists() and not overwrite:
        raise ExportError(
            f"{out} already exists and was not written by an export; choose another folder "
            "(or pass overwrite=True / --overwrite)"
        )


def _ident(s: str) -> str:
    from .notebook import identifier

    return identifier(s, "pipeline")


def write_package(
    plan: Plan,
    out: Path,
    notebook: str,
    source_run: str | None,
    experiment: str,
    target: str,
) -> list[Path]:
    """Write every file of the pipeline package into `out`; return the written paths.

    An earlier export in `out` is replaced but its `.cache/` is kept, so stages whose code
    and inputs did not change stay cached."""
    name = out.name
    out.mkdir(parents=True, exist_ok=True)
    for g in _GENERATED:
        p = out / g
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    (out / "stages").mkdir()
    chain = " -> ".join(s.name for s in plan.runnable)
    files: dict[str, str] = {
        "__init__.py": _doc(
            f"Pipeline `{name}` exported from {notebook} (run: python -m {name}).\n"
        )
        + "\n",
        "__main__.py": MAIN.format(name=name),
        "pipeline.py": pipeline_module(plan, name, notebook, source_run, experiment),
        "params.yaml": P.dump(
            plan.params,
            f"Parameters of pipeline {name}, from {notebook} (its parameters cell and the\n"
            "literal assignments of its %%mlops_run cells).\n"
            f"Override one for a run: python -m {name} --param NAME=VALUE",
        ),
        "stages/__init__.py": _doc(f"Stage modules of pipeline `{name}`.\n") + "\n",
        ".gitignore": ".cache/\n",
        "README.md": README.format(name=name, notebook=notebook, chain=chain),
    }
    for sp in plan.stages:
        if sp.is_stage or sp.helpers:  # an imports-only cell group needs no module
            files[f"stages/{sp.name}.py"] = stage_module(sp, name, notebook)
    if target == "airflow":
        from .airflow import dag_file

        files["airflow_dag.py"] = dag_file(plan, name, notebook)
    if target == "prefect":
        from .prefect import flow_file

        files["prefect_flow.py"] = flow_file(plan, name, notebook)
    written = []
    for rel, text in files.items():
        p = out / rel
        p.write_text(text, encoding="utf-8")
        written.append(p)
    meta = {
        "notebook": notebook,
        "exported": time.time(),
        "target": target,
        "source_run": source_run,
        "stages": [s.name for s in plan.runnable],
    }
    (out / MARKER).write_text(json.dumps(meta, indent=1))
    for p in written:
        if p.suffix == ".py":
            _check_compiles(p)
    return written


def _check_compiles(p: Path) -> None:
    try:
        compile(p.read_text(encoding="utf-8"), str(p), "exec")
    except SyntaxError as e:
        raise ExportError(
            f"generated {p.name} does not compile (line {e.lineno}: {e.msg}); "
            "please report this with the notebook"
        ) from None
