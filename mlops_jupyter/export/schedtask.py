"""One stage of an exported pipeline as a scheduler task (Airflow, Prefect).

A task runs its stage in a process of its own (`python -m mlops_jupyter.export.schedtask`):
nothing a stage imports or changes (modules, the global random generators) leaks into the
scheduler's worker or into the next task, and upstream outputs come from the stage cache,
so tasks on different machines work when the cache is shared (MLOPS_JUPYTER_PIPELINE_CACHE
set to an s3://, gs:// or az:// URL for every worker). The stage's output and error go to
the task log; a failed stage raises with the stage's error and the resume hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any


class StageTaskFailed(RuntimeError):
    """The stage's process exited non-zero; the message ends with its last lines."""


def run_stage(
    package: str,
    stage: str,
    pkg_parent: str | os.PathLike,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Run `stage` of `package` (found in `pkg_parent`) in a child process; its output is
    echoed line by line (the scheduler's task log). Returns the runtime's summary."""
    spec = {
        "package": package,
        "stage": stage,
        "params": dict(params or {}),
        "tags": dict(tags or {}),
        "cache_dir": cache_dir,
    }
    env = dict(os.environ)
    # the pipeline package is imported from its parent folder, as `python -m PIPE` does
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(pkg_parent), env.get("PYTHONPATH")] if p)
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "mlops_jupyter.export.schedtask", json.dumps(spec, default=str)]
    tail: deque[str] = deque(maxlen=30)
    summary: dict[str, Any] = {}
    with subprocess.Popen(
        cmd,
        cwd=str(pkg_parent),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(_SUMMARY):
                summary = json.loads(line[len(_SUMMARY) :])
                continue
            print(line, end="", flush=True)
            tail.append(line.rstrip("\n"))
        rc = proc.wait()
    if rc != 0:
        raise StageTaskFailed(
            f"stage {stage!r} of pipeline {package!r} failed (exit {rc}):\n" + "\n".join(tail)
        )
    return summary


_SUMMARY = "@@mlops-stage-summary@@ "


def _child(spec: dict[str, Any]) -> int:
    """In the child process: run the one stage with the pipeline runtime."""
    from ..errors import MlopsJupyterError
    from .runtime import StageFailed, run_pipeline

    try:
        summary = run_pipeline(
            spec["package"],
            spec["params"],
            only=[spec["stage"]],
            cache_dir=spec.get("cache_dir"),
            quiet=True,
            # the process that ran the stage, on its run (one process per task)
            tags={**(spec.get("tags") or {}), "mlops.task_pid": str(os.getpid())},
        )
    except StageFailed as e:
        # a stage that raised was already reported (traceback, stage, resume hint) by the
        # runtime; a missing upstream result was not
        if getattr(e, "stage", None) is None:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except MlopsJupyterError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(_SUMMARY + json.dumps(summary, default=str), flush=True)
    return 0


def pkg_parent_of(dag_file: str) -> str:
    """Folder holding the pipeline package, from the path of a DAG/flow file inside it."""
    return str(Path(dag_file).resolve().parent.parent)


if __name__ == "__main__":
    sys.exit(_child(json.loads(sys.argv[1])))
