"""`--target airflow`: an Airflow DAG file with one task per stage.

Each task runs its stage in a process of its own (schedtask.run_stage), reading upstream
outputs from the pipeline's stage cache, so the tasks of one DAG run share that cache (one
machine, a shared volume, or object storage via MLOPS_JUPYTER_PIPELINE_CACHE). Airflow
itself is not needed to write the file."""

from __future__ import annotations

import textwrap

from .plan import Plan

TEMPLATE = '''"""Airflow DAG `{name}`: pipeline exported from {notebook} by mlops-jupyter.

{about}
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

# the pipeline package must be importable by the scheduler and by every worker
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow import DAG  # noqa: E402

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator  # noqa: E402
except ImportError:  # Airflow 2
    from airflow.operators.python import PythonOperator  # noqa: E402

from mlops_jupyter.export.schedtask import pkg_parent_of, run_stage  # noqa: E402

PIPELINE = {name!r}
# a retry (a lost worker, a killed task) re-runs its stage only, the others come from the cache
RETRIES = int(os.environ.get("MLOPS_JUPYTER_TASK_RETRIES", "1"))
RETRY_DELAY = timedelta(seconds=float(os.environ.get("MLOPS_JUPYTER_TASK_RETRY_DELAY_S", "30")))


def run_stage_task(stage, params, run_id, **_):
    """One stage in a process of its own; the DAG run's params override params.yaml."""
    tags = {{"airflow.run_id": str(run_id)}}
    return run_stage(PIPELINE, stage, pkg_parent_of(__file__), dict(params), tags)


with DAG(
    dag_id={name!r},
    description={description!r},
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={params},
    tags=["mlops-jupyter"],
    default_args={{"retries": RETRIES, "retry_delay": RETRY_DELAY}},
) as dag:
{tasks}

{edges}
'''


def dag_file(plan: Plan, name: str, notebook: str) -> str:
    """Source of `airflow_dag.py` for the plan."""
    stages = plan.runnable
    tasks = []
    for s in stages:
        tasks.append(
            f"    {s.name}_task = PythonOperator(\n"
            f"        task_id={s.name!r},\n"
            f"        python_callable=run_stage_task,\n"
            f'        op_kwargs={{"stage": {s.name!r}}},\n'
            f"    )"
        )
    edges = []
    for k, s in enumerate(stages):
        ups = list(dict.fromkeys(s.inputs.values()))
        # each stage starts from the global random state the stage before it left, as in
        # the notebook: tasks run in notebook order
        if k and stages[k - 1].name not in ups:
            ups.append(stages[k - 1].name)
        for src in ups:
            edges.append(f"{src}_task >> {s.name}_task")
    params = "{" + "".join(f"\n        {k!r}: {v!r}," for k, v in plan.params.items())
    params += "\n    }" if plan.params else "}"
    about = textwrap.fill(
        f"One task per stage ({' -> '.join(s.name for s in stages)}). Place the `{name}` "
        "folder in (or next to) Airflow's dags folder. Each task runs one stage in a process of "
        f"its own with the mlops-jupyter runtime, reading upstream outputs from the stage cache "
        f"(`{name}/.cache/`, or MLOPS_JUPYTER_PIPELINE_CACHE=s3://... set for every worker when "
        "workers run on several machines) and tracking it as a run in the mlops-jupyter store. "
        "DAG params override params.yaml.",
        96,
        break_on_hyphens=False,
    )
    return TEMPLATE.format(
        about=about,
        name=name,
        notebook=notebook,
        description=f"exported from {notebook}",
        params=params,
        tasks="\n".join(tasks),
        edges="\n".join(edges) if edges else "# stages are independent",
    )
