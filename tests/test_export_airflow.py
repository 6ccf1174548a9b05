"""`--target airflow` on a real Airflow 3 (apache-airflow 3.3.2 + the standard provider in
`.venv-airflow`, built by `make airflow` from .ci/airflow-requirements.txt): the exported DAG
loads in a real DagBag, `airflow dags test` runs it end to end with each task in a process
of its own reading its inputs from the stage cache (object storage here), and the outputs
equal `python -m PIPE`'s. DAG params map to pipeline params; a failing stage shows its error
and the resume hint in the task log, and the next run resumes from the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from export_helpers import NOTEBOOKS, ROOT, make_nb, points, run_pipeline
from export_helpers import cache_manifests as _manifests
from export_helpers import stage_runs as _stage_runs

from mlops_jupyter.export import export_notebook

AIRFLOW_PY = ROOT / ".venv-airflow" / "bin" / "python"
STAGES = ["load", "prep", "train", "evaluate"]
# run by the Airflow venv's python: what a real DagBag makes of the dags folder (argv[1])
DAGBAG_SCRIPT = """
import json, sys
from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dags = {
    d.dag_id: {
        "tasks": [t.task_id for t in d.tasks],
        "ups": {t.task_id: sorted(t.upstream_task_ids) for t in d.tasks},
        "params": {k: d.params[k] for k in d.params},
    }
    for d in bag.dags.values()
}
errors = {k: str(v) for k, v in bag.import_errors.items()}
print("@@" + json.dumps({"errors": errors, "dags": dags}))
"""


@pytest.fixture(scope="module")
def airflow_db(tmp_path_factory) -> Path:
    """A migrated Airflow metadata database (SQLite), made once and copied per test."""
    if not AIRFLOW_PY.exists():
        pytest.fail(f"no Airflow venv at {AIRFLOW_PY.parent.parent}: run `make airflow`")
    home = tmp_path_factory.mktemp("airflow-template")
    env = _airflow_env(home, home / "dags")
    proc = subprocess.run(
        [str(AIRFLOW_PY.parent / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return home / "airflow.db"


def _airflow_env(home: Path, dags: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the Airflow venv finds this checkout through its .pth
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        MLOPS_JUPYTER_TASK_RETRIES="0",  # a failing stage fails its DAG run at once
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
    )
    return env


class Airflow:
    """A throw-away AIRFLOW_HOME with its dags folder, driven through the Airflow venv."""

    def __init__(self, db: Path, home: Path):
        home.mkdir(parents=True)
        shutil.copy(db, home / "airflow.db")
        self.dags = home / "dags"
        self.dags.mkdir()
        self.env = _airflow_env(home, self.dags)

    def run(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        """`airflow ARGS`; stdout and stderr together in .stdout."""
        return subprocess.run(
            [str(AIRFLOW_PY.parent / "airflow"), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )

    def dagbag(self) -> dict:
        """What a real DagBag makes of the dags folder: import errors, tasks, params."""
        proc = subprocess.run(
            [str(AIRFLOW_PY), "-c", DAGBAG_SCRIPT, str(self.dags)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("@@"))
        return json.loads(line[2:])


@pytest.fixture
def airflow(airflow_db, tmp_path) -> Airflow:
    """Airflow for this test; its tasks write to this test's store (MLOPS_JUPYTER_STORE)."""
    return Airflow(airflow_db, tmp_path / "airflow-home")


def test_real_airflow_runs_the_dag_like_python_m(airflow, s3_url, tmp_path):
    # the reference: python -m PIPE with its own local cache
    ref = export_notebook(NOTEBOOKS / "pipeline_example.ipynb", tmp_path / "ref" / "example_pipe")
    run_pipeline(ref.path, "-q")
    want = _manifests(ref.path / ".cache", STAGES)
    ref_runs = _stage_runs()
    ref_points = points([r["id"] for rs in ref_runs.values() for r in rs])

    res = export_notebook(
        NOTEBOOKS / "pipeline_example.ipynb", airflow.dags / "example_dag_pipe", target="airflow"
    )
    bag = airflow.dagbag()
    assert bag["errors"] == {}
    dag = bag["dags"]["example_dag_pipe"]
    assert dag["tasks"] == STAGES  # one task per stage
    assert dag["ups"] == {
        "load": [],
        "prep": ["load"],
        "train": ["prep"],
        "evaluate": ["load", "prep", "train"],
    }
    assert dag["params"] == res.params

    # the stage cache on object storage, as for workers on several machines
    mirror = tmp_path / "worker-cache"
    airflow.env.update(
        MLOPS_JUPYTER_PIPELINE_CACHE=s3_url,
        MLOPS_JUPYTER_CACHE=str(mirror),
        **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")},
    )
    proc = airflow.run("dags", "test", "example_dag_pipe")
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "state=success" in proc.stdout, proc.stdout[-6000:]
    assert not (res.path / ".cache").exists()  # nothing cached beside the DAG
    (remote,) = [p for p in (mirror / "pipelines").iterdir() if p.is_dir()]
    assert _manifests(remote, STAGES) == want  # same keys, same output versions

    af = {s: [r for r in rs if "airflow.run_id" in r["tags"]] for s, rs in _stage_runs().items()}
    assert {s: len(rs) for s, rs in af.items()} == {s: 1 for s in STAGES}
    af_runs = [rs[0] for rs in af.values()]
    assert all(r["status"] == "finished" and r["parent_id"] is None for r in af_runs)
    assert len({r["tags"]["airflow.run_id"] for r in af_runs}) == 1
    # each task ran its stage in a process of its own
    assert len({r["tags"]["mlops.task_pid"] for r in af_runs}) == len(STAGES)
    assert points([r["id"] for r in af_runs]) == ref_points
    assert len(ref_points["train_mse"]) == 30


def test_dag_params_failure_in_the_task_log_and_resume(airflow, tmp_path):
    nb = make_nb(
        [
            ("fail = True\nscale = 2.0", ["parameters"]),
            ("import numpy as np\nbase = np.arange(5) * scale", ["stage=make"]),
            (
                "if fail:\n    raise ValueError('boom in fit')\nprint('R: total', base.sum())",
                ["stage=fit"],
            ),
        ],
        tmp_path / "p_nb.ipynb",
    )
    res = export_notebook(nb, airflow.dags / "param_dag_pipe", target="airflow")
    assert airflow.dagbag()["dags"]["param_dag_pipe"]["params"] == {"fail": True, "scale": 2.0}

    failed = airflow.run("dags", "test", "param_dag_pipe")
    log = failed.stdout
    assert failed.returncode != 0 and "DagRun failed" in log, log[-6000:]
    assert "ValueError: boom in fit" in log
    assert "stage 'fit' failed" in log and "run the pipeline again to resume at 'fit'" in log
    runs = _stage_runs()
    assert [r["status"] for r in runs["make"]] == ["finished"]
    assert [r["status"] for r in runs["fit"]] == ["failed"]

    # DAG run conf -> pipeline params; `make` does not use `fail`: it comes from the cache
    ok = airflow.run("dags", "test", "param_dag_pipe", "--conf", json.dumps({"fail": False}))
    assert ok.returncode == 0 and "state=success" in ok.stdout, ok.stdout[-6000:]
    runs = _stage_runs()
    assert runs["make"][-1]["tags"]["mlops.cache"] == "hit"
    assert runs["fit"][-1]["tags"]["mlops.cache"] == "miss"
    assert runs["fit"][-1]["status"] == "finished"
    assert "R: total 20.0" in ok.stdout

    scaled = airflow.run("dags", "test", "param_dag_pipe", "-c", '{"fail": false, "scale": 3.0}')
    assert scaled.returncode == 0, scaled.stdout[-6000:]
    assert "R: total 30.0" in scaled.stdout
    assert (res.path / ".cache" / "make").is_dir()


def test_airflow_tasks_give_the_notebooks_values(airflow, tmp_path, monkeypatch):
    from export_helpers import kernel_env, marked, notebook_values

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
    assert len(want) == 1
    export_notebook(nb, airflow.dags / "rng_dag_pipe", target="airflow")
    # tasks run in notebook order, each in its own process, each starting from the random
    # state the one before it left (restored from the cache)
    proc = airflow.run("dags", "test", "rng_dag_pipe")
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert marked(proc.stdout) == want


def test_a_killed_stage_is_retried_by_airflow_from_the_cache(airflow, tmp_path):
    mark = tmp_path / "killed-once"
    nb = make_nb(
        [
            ("import numpy as np\nbase = np.arange(4) * 2.0", ["stage=make"]),
            (
                "import os, pathlib, signal\n"
                "mark = pathlib.Path(os.environ['KILL_MARK'])\n"
                "if not mark.exists():\n"
                "    mark.touch()\n"
                "    os.kill(os.getpid(), signal.SIGKILL)  # the stage's process dies mid-task\n"
                "print('R: total', base.sum())",
                ["stage=fit"],
            ),
        ],
        tmp_path / "k_nb.ipynb",
    )
    export_notebook(nb, airflow.dags / "kill_dag_pipe", target="airflow")
    airflow.env.update(
        KILL_MARK=str(mark),
        MLOPS_JUPYTER_TASK_RETRIES="1",  # the exported DAG's default
        MLOPS_JUPYTER_TASK_RETRY_DELAY_S="0",
    )
    proc = airflow.run("dags", "test", "kill_dag_pipe")
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert mark.exists() and "R: total 12.0" in proc.stdout
    assert "exit -9" in proc.stdout  # the first try's failure, in the task log
    runs = _stage_runs()
    assert [r["tags"]["mlops.cache"] for r in runs["make"]] == ["miss"]
    # the retry ran `fit` alone, `make` from the cache
    assert runs["fit"][-1]["status"] == "finished"
