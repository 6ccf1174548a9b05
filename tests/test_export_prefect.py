"""`--target prefect` on a real Prefect 3 (in `.venv-prefect`, built by `make prefect` from
.ci/prefect-requirements.txt), run under Prefect's own test harness (a temporary Prefect
server and database): one task per stage, each in a process of its own reading its inputs
from the stage cache; outputs equal `python -m PIPE`'s; flow parameters are the pipeline
params; a failing stage shows its error and the resume hint in the flow's logs, and the next
flow run resumes from the cache. The first test keeps the stage cache on a real S3-compatible
server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from export_helpers import NOTEBOOKS, ROOT, make_nb, points, run_pipeline
from export_helpers import cache_manifests as _manifests
from export_helpers import stage_runs as _stage_runs

from mlops_jupyter.export import export_notebook

PREFECT_PY = ROOT / ".venv-prefect" / "bin" / "python"
STAGES = ["load", "prep", "train", "evaluate"]

# run by the Prefect venv's python: import the flow file (argv[1]), call its flow (argv[2])
# once per kwargs in argv[3] under prefect_test_harness, report states, task runs and logs
HARNESS_SCRIPT = """
import importlib.util, json, sys, time
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter
from prefect.client.schemas.filters import LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from prefect.testing.utilities import prefect_test_harness

spec = importlib.util.spec_from_file_location("flow_under_test", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
fn = getattr(mod, sys.argv[2])
out = []
with prefect_test_harness(server_startup_timeout=180):  # a busy CI machine
    for kwargs in json.loads(sys.argv[3]):
        state = fn(**kwargs, return_state=True)
        rid = state.state_details.flow_run_id
        # logs reach the API from a background worker: send what is queued, then wait until
        # the flow's own last line is stored (a loaded machine stored it seconds later)
        APILogWorker.drain_all(timeout=60)
        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as c:
            trs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[rid])))
            while True:
                logs = c.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[rid])), limit=200
                )
                done = any(
                    l.task_run_id is None and l.message.startswith("Finished in state")
                    for l in logs
                )
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        out.append({
            "state": state.type.value,
            "tasks": sorted(t.name for t in trs),
            "logs": "\\n".join(l.message for l in logs),
        })
print("@@" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def prefect_py() -> Path:
    if not PREFECT_PY.exists():
        pytest.fail(f"no Prefect venv at {PREFECT_PY.parent.parent}: run `make prefect`")
    return PREFECT_PY


def _run_flow(prefect_py: Path, flow_file: Path, name: str, calls: list[dict], tmp: Path):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the Prefect venv finds this checkout through its .pth
    env["PREFECT_HOME"] = str(tmp / "prefect-home")
    env["PREFECT_LOGGING_TO_API_BATCH_INTERVAL"] = "0.3"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # nothing leaves the machine
    proc = subprocess.run(
        [str(prefect_py), "-c", HARNESS_SCRIPT, str(flow_file), name, json.dumps(calls)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    assert proc.returncode == 0 and lines, proc.stdout[-6000:]
    return json.loads(lines[-1][2:]), proc.stdout


def test_prefect_flow_runs_like_python_m(prefect_py, s3_url, tmp_path, monkeypatch):
    ref = export_notebook(NOTEBOOKS / "pipeline_example.ipynb", tmp_path / "ref" / "example_pipe")
    run_pipeline(ref.path, "-q")
    want = _manifests(ref.path / ".cache", STAGES)
    ref_points = points([r["id"] for rs in _stage_runs().values() for r in rs])

    res = export_notebook(
        NOTEBOOKS / "pipeline_example.ipynb", tmp_path / "flows" / "example_flow", target="prefect"
    )
    # the stage cache on object storage, as for task runners on several machines (the
    # local cache is covered by the failure-and-resume test below)
    mirror = tmp_path / "worker-cache"
    monkeypatch.setenv("MLOPS_JUPYTER_PIPELINE_CACHE", s3_url)
    monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(mirror))
    (out,), _ = _run_flow(prefect_py, res.path / "prefect_flow.py", "example_flow", [{}], tmp_path)
    assert out["state"] == "COMPLETED", out["logs"]
    assert out["tasks"] == sorted(STAGES)  # one task run per stage
    assert not (res.path / ".cache").exists()  # nothing cached beside the flow
    (remote,) = [p for p in (mirror / "pipelines").iterdir() if p.is_dir()]
    assert _manifests(remote, STAGES) == want  # same keys, same output versions
    assert "test mse" in out["logs"]  # the stage's prints, in Prefect's logs

    pf = {
        s: [r for r in rs if "prefect.flow_run_id" in r["tags"]] for s, rs in _stage_runs().items()
    }
    assert {s: len(rs) for s, rs in pf.items()} == {s: 1 for s in STAGES}
    runs = [rs[0] for rs in pf.values()]
    assert all(r["status"] == "finished" for r in runs)
    assert len({r["tags"]["prefect.flow_run_id"] for r in runs}) == 1
    assert len({r["tags"]["mlops.task_pid"] for r in runs}) == len(STAGES)
    assert points([r["id"] for r in runs]) == ref_points


def test_prefect_params_failure_in_the_logs_and_resume(prefect_py, tmp_path):
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
    res = export_notebook(nb, tmp_path / "flows" / "param_flow", target="prefect")
    calls = [{}, {"fail": False}, {"fail": False, "scale": 3.0}]
    (failed, ok, scaled), _ = _run_flow(
        prefect_py, res.path / "prefect_flow.py", "param_flow", calls, tmp_path
    )
    assert failed["state"] == "FAILED"
    assert "ValueError: boom in fit" in failed["logs"], failed["logs"]
    assert "run the pipeline again to resume at 'fit'" in failed["logs"]
    assert ok["state"] == "COMPLETED" and "R: total 20.0" in ok["logs"], ok["logs"]
    assert scaled["state"] == "COMPLETED" and "R: total 30.0" in scaled["logs"]
    runs = _stage_runs()
    # flow params -> pipeline params; `make` does not use `fail`: the fix reuses it
    assert [r["tags"]["mlops.cache"] for r in runs["make"]] == ["miss", "hit", "miss"]
    assert [r["status"] for r in runs["fit"]] == ["failed", "finished", "finished"]
