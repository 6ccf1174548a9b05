"""Notebook -> pipeline export: `mj.export_notebook("nb.ipynb", "nb_pipeline")`.

Cells become stages (cell tags `stage=NAME` / `skip` / `parameters`, else markdown
headings); the DAG comes from def/use analysis of the code; the result is a plain Python
package runnable with `python -m DIR`, with cached stages and tracked runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInputError
from .notebook import ExportError, read_notebook, split_stages
from .plan import Plan, build_plan

__all__ = ["ExportError", "ExportResult", "export_notebook", "plan_notebook"]

TARGETS = ("python", "airflow", "prefect")


@dataclass
class ExportResult:
    """What an export wrote: the package folder, its stages and anything worth a look."""

    path: Path
    target: str
    stages: list[str]
    params: dict[str, object]
    edges: list[tuple[str, str, str]]  # (from stage, to stage, name)
    source_run: str | None
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for a terminal or notebook output."""
        lines = [f"exported {len(self.stages)} stages to {self.path}: {' -> '.join(self.stages)}"]
        for a, b, n in self.edges:
            lines.append(f"  {a} -> {b}: {n}")
        if self.params:
            lines.append("  params: " + ", ".join(f"{k}={v!r}" for k, v in self.params.items()))
        if self.source_run:
            lines.append(f"  linked to notebook run {self.source_run}")
        if self.target == "airflow":
            lines.append(f"  Airflow DAG: {self.path / 'airflow_dag.py'}")
        if self.target == "prefect":
            lines.append(f"  Prefect flow: {self.path / 'prefect_flow.py'}")
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"run it: cd {self.path.parent} && python -m {self.path.name}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def plan_notebook(notebook: str | os.PathLike) -> Plan:
    """The stages, DAG and generated code of a notebook, without writing anything."""
    return build_plan(split_stages(read_notebook(notebook)))


def _find_source_run(nb_path: Path, source_run: str | None) -> tuple[str | None, str | None]:
    """(run id, experiment) of the notebook run to link to, if the store knows one."""
    from .. import config
    from ..store import pipeline as pstore
    from ..store import runs as rstore
    from ..store.db import open_existing
    from ..tracking import api

    if source_run is not None and api.remote_url() is not None:  # the server's run
        d = api.get_run(source_run)
        return d["id"], d.get("experiment")
    if (url := api.remote_url()) is not None:  # the server's newest run of this notebook
        from ..remote import data_more as rmore
        from ..remote.api import remote_store

        return rmore.notebook_run(remote_store(url), str(nb_path)) or (None, None)
    if source_run is not None:
        store = api.current_store()
        rid = rstore.resolve_run(store, source_run)
        uid = rstore.run_uid(store, rid)
        return uid, pstore.run_experiment(store, uid)
    # exporting must not create a store
    store = open_existing(api._store_override or config.find_store_location(nb_path.parent))
    if store is None:
        return None, None
    found = pstore.notebook_run(store, str(nb_path))
    return found if found else (None, None)


def export_notebook(
    notebook: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    target: str = "python",
    *,
    source_run: str | None = None,
    experiment: str | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Turn `notebook` into a pipeline package in `out_dir` (default: `<name>_pipeline`
    beside the notebook). `target="airflow"` also writes `airflow_dag.py`, `target="prefect"`
    `prefect_flow.py`.

    `source_run`: the notebook run to link the pipeline runs to (default: the newest run
    recorded for this notebook file, if any). Re-exporting into the same folder keeps its
    cache."""
    from .codegen import check_out_dir, write_package
    from .notebook import identifier

    if target not in TARGETS:
        raise InvalidInputError(f"target must be one of {TARGETS}, got {target!r}")
    if not isinstance(notebook, (str, os.PathLike)):
        raise InvalidInputError(f"notebook must be a path, got {type(notebook).__name__}")
    nb_path = Path(notebook).expanduser().resolve()
    if nb_path.suffix != ".ipynb":
        raise InvalidInputError(f"expected an .ipynb notebook, got {nb_path.name}")
    plan = plan_notebook(nb_path)
    out = (
        Path(out_dir).expanduser().resolve()
        if out_dir is not None
        else nb_path.with_name(identifier(nb_path.stem, "notebook") + "_pipeline")
    )
    check_out_dir(out, overwrite)
    run_id, run_exp = _find_source_run(nb_path, source_run)
    exp = experiment or run_exp or plan.experiment or "default"
    files = write_package(plan, out, nb_path.name, run_id, exp, target)
    edges = [(src, s.name, n) for s in plan.runnable for n, src in s.inputs.items()]
    return ExportResult(
        path=out,
        target=target,
        stages=[s.name for s in plan.runnable],
        params=dict(plan.params),
        edges=edges,
        source_run=run_id,
        warnings=plan.warnings,
        files=files,
    )
