"""`--target prefect`: a Prefect 3 flow file with one task per stage.

Like the Airflow DAG, each task runs its stage in a process of its own (schedtask.run_stage)
and reads upstream outputs from the stage cache, so tasks on several machines share it
through object storage (MLOPS_JUPYTER_PIPELINE_CACHE). The flow's parameters are the
pipeline's params. Prefect itself is not needed to write the file."""

from __future__ import annotations

import textwrap

from .plan import Plan

TEMPLATE = '''"""Prefect flow `{name}`: pipeline exported from {notebook} by mlops-jupyter.

{about}
"""

import sys
from pathlib import Path

# the pipeline package must be importable wherever the flow runs
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, task  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from mlops_jupyter.export.schedtask import pkg_parent_of, run_stage  # noqa: E402

PIPELINE = {name!r}
STAGES = {stages!r}


@task(log_prints=True)
def stage_task(stage: str, params: dict) -> dict:
    """One stage in a process of its own; its output goes to the task's log."""
    tags = {{"prefect.flow_run_id": str(flow_run.id or "")}}
    return run_stage(PIPELINE, stage, pkg_parent_of(__file__), params, tags)


@flow(name=PIPELINE, log_prints=True)
def {func}({signature}) -> dict:
    """Run the stages in notebook order (each starts from the random state the one before
    left); the flow's parameters override params.yaml."""
    _params = {param_dict}
    _results = {{}}
    for _stage in STAGES:
        _results[_stage] = stage_task.with_options(name=_stage, task_run_name=_stage)(_stage, _params)
    return _results


if __name__ == "__main__":
    {func}()
'''

_ANNOTATED = (bool, int, float, str)


def flow_file(plan: Plan, name: str, notebook: str) -> str:
    """Source of `prefect_flow.py` for the plan."""
    stages = [s.name for s in plan.runnable]
    sig = []
    for k, v in plan.params.items():
        ann = f": {type(v).__name__}" if type(v) in _ANNOTATED else ""
        sig.append(f"{k}{ann} = {v!r}")
    about = textwrap.fill(
        f"One task per stage ({' -> '.join(stages)}), run in notebook order. Run it with "
        f"`python {name}/prefect_flow.py`, or deploy `{name}/prefect_flow.py:{name}`. Each task "
        "runs one stage in a process of its own with the mlops-jupyter runtime, reading upstream "
        f"outputs from the stage cache (`{name}/.cache/`, or MLOPS_JUPYTER_PIPELINE_CACHE="
        "s3://... set for every worker when tasks run on several machines) and tracking it as a "
        "run in the mlops-jupyter store. Flow parameters override params.yaml.",
        96,
        break_on_hyphens=False,
    )
    return TEMPLATE.format(
        about=about,
        name=name,
        notebook=notebook,
        stages=stages,
        func=name,
        signature=", ".join(sig),
        param_dict="{" + ", ".join(f"{k!r}: {k}" for k in plan.params) + "}",
    )
