"""`--target airflow`: the DAG file compiles and, imported against a minimal stand-in
`airflow` package (Airflow itself is too heavy to install for CI), declares one task per
stage with the derived dependencies; running the task callables in order runs the stages."""

from __future__ import annotations

import ast
import importlib.util
import sys
import textwrap

import pytest
from export_helpers import NOTEBOOKS, pipeline_runs, points

import mlops_jupyter as mj
from mlops_jupyter.export import export_notebook

FAKE_AIRFLOW = {
    "airflow/__init__.py": """
        class DAG:
            current = None
            def __init__(self, dag_id, **kwargs):
                self.dag_id = dag_id
                self.kwargs = kwargs
                self.params = kwargs.get("params", {})
                self.tasks = {}
            def __enter__(self):
                DAG.current = self
                return self
            def __exit__(self, *exc):
                DAG.current = None
                return False
    """,
    "airflow/operators/__init__.py": "",
    "airflow/operators/python.py": """
        from airflow import DAG

        class PythonOperator:
            def __init__(self, task_id, python_callable, op_kwargs=None, **kwargs):
                self.task_id = task_id
                self.python_callable = python_callable
                self.op_kwargs = op_kwargs or {}
                self.upstream = set()
                self.dag = DAG.current
                self.dag.tasks[task_id] = self
            def __rshift__(self, other):
                other.upstream.add(self.task_id)
                return other
    """,
}


@pytest.fixture
def fake_airflow(tmp_path, monkeypatch):
    """A stand-in `airflow` package on sys.path for this test only."""
    root = tmp_path / "fake_airflow"
    for rel, text in FAKE_AIRFLOW.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("airflow", "example_dag_pipe", "dag_under_test"):
            del sys.modules[name]


def test_airflow_dag_has_one_task_per_stage_and_runs(tmp_path, fake_airflow, monkeypatch):
    res = export_notebook(
        NOTEBOOKS / "pipeline_example.ipynb", tmp_path / "example_dag_pipe", target="airflow"
    )
    dag_path = res.path / "airflow_dag.py"
    src = dag_path.read_text()
    compile(src, str(dag_path), "exec")
    imported = {
        a.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) for a in n.names
    }
    assert {"DAG", "PythonOperator", "run_task"} <= imported

    monkeypatch.syspath_prepend(str(res.path.parent))  # as Airflow does for its dags folder
    spec = importlib.util.spec_from_file_location("dag_under_test", dag_path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["dag_under_test"] = mod
    spec.loader.exec_module(mod)
    dag = mod.dag
    assert dag.dag_id == "example_dag_pipe"
    assert dag.params == res.params
    assert list(dag.tasks) == ["load", "prep", "train", "evaluate"]
    ups = {t: task.upstream for t, task in dag.tasks.items()}
    assert ups == {
        "load": set(),
        "prep": {"load"},
        "train": {"prep"},
        "evaluate": {"load", "prep", "train"},
    }

    # what a worker does: call each task with the DAG run's context, upstream first
    for t in ["load", "prep", "train", "evaluate"]:
        task = dag.tasks[t]
        task.python_callable(**task.op_kwargs, params=dict(dag.params), run_id="manual__1")
    runs = [mj.get_run(r) for r in mj.runs()["id"].to_list()]
    assert {r["tags"]["mlops.stage"] for r in runs} == {"load", "prep", "train", "evaluate"}
    assert all(r["tags"]["airflow.run_id"] == "manual__1" for r in runs)
    assert all(r["status"] == "finished" for r in runs)
    assert len(points([r["id"] for r in runs])["train_mse"]) == 30
    assert pipeline_runs()[0] == []  # a task tracks its stage only, no parent run


def test_airflow_task_without_upstream_outputs_fails_clearly(tmp_path, fake_airflow, monkeypatch):
    from mlops_jupyter.export.runtime import StageFailed, run_task

    res = export_notebook(
        NOTEBOOKS / "pipeline_example.ipynb", tmp_path / "example_dag_pipe", target="airflow"
    )
    monkeypatch.syspath_prepend(str(res.path.parent))
    with pytest.raises(StageFailed, match="no cached result"):
        run_task("example_dag_pipe", "train", params={})


def test_real_airflow_dagbag_imports_the_dag(tmp_path, monkeypatch):
    """Runs where Airflow is installed (not in the default dev environment)."""
    pytest.importorskip("airflow.models.dagbag")
    from airflow.models.dagbag import DagBag

    dags = tmp_path / "dags"
    res = export_notebook(
        NOTEBOOKS / "pipeline_example.ipynb", dags / "example_dagbag_pipe", target="airflow"
    )
    bag = DagBag(dag_folder=str(dags))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["example_dagbag_pipe"]
    ups = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    assert ups == {
        "load": set(),
        "prep": {"load"},
        "train": {"prep"},
        "evaluate": {"load", "prep", "train"},
    }
    assert dict(dag.params) == res.params


def test_airflow_tasks_give_the_notebooks_values(tmp_path, fake_airflow, monkeypatch, capsys):
    import shutil

    from export_helpers import kernel_env, make_nb, marked, notebook_values

    kernel_env(monkeypatch)
    nb = make_nb(
        [
            (
                "import random\nimport numpy as np\nrandom.seed(4)\nnp.random.seed(4)\nscale = 3.0",
                ["stage=setup"],
            ),
            # a function reading a notebook variable and the global generator
            ("def noisy(v):\n    return v * scale + np.random.rand()", ["stage=helpers"]),
            ("a = noisy(1.0)\nitems = [1, 2]", ["stage=first"]),
            ("items.append(random.random())", ["stage=mutate"]),
            (
                "b = noisy(2.0)\n"
                "print('R:', round(a, 12), round(b, 12), [round(v, 12) for v in items])",
                ["stage=report"],
            ),
        ],
        tmp_path / "rng_nb.ipynb",
    )
    want = notebook_values(nb, tmp_path)
    capsys.readouterr()
    res = export_notebook(nb, tmp_path / "example_dag_pipe", target="airflow")
    monkeypatch.syspath_prepend(str(res.path.parent))
    spec = importlib.util.spec_from_file_location("dag_under_test", res.path / "airflow_dag.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["dag_under_test"] = mod
    spec.loader.exec_module(mod)
    tasks = mod.dag.tasks
    assert list(tasks) == ["setup", "first", "mutate", "report"]
    # tasks run in notebook order: each starts from the random state the one before left
    assert tasks["first"].upstream == {"setup"} and "mutate" in tasks["report"].upstream
    for t in tasks.values():
        t.python_callable(**t.op_kwargs, params={}, run_id="manual__1")
    assert marked(capsys.readouterr().out) == want
    # the last task alone, its upstream from the cache (a retry on another worker)
    shutil.rmtree(res.path / ".cache" / "report")
    t = tasks["report"]
    t.python_callable(**t.op_kwargs, params={}, run_id="manual__2")
    assert marked(capsys.readouterr().out) == want
