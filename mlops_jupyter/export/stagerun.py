"""`stage_run`: what the notebook's `mj.start_run(...)` becomes in exported stage code, and
`display` for plain Python. Inside a pipeline stage both log to the stage's own run."""

from __future__ import annotations

import contextvars
from typing import Any

from .. import tracking

# set by the runner while a stage function runs
_in_stage: contextvars.ContextVar[bool] = contextvars.ContextVar("mlops_in_stage", default=False)


class StageRun:
    """The stage's run, standing in for the notebook's own `mj.start_run(...)`: logging goes
    to the stage run, and leaving the `with` block (or calling end()) leaves it open for the
    runner to end."""

    def __init__(self, run: tracking.Run) -> None:
        object.__setattr__(self, "_run", run)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def __enter__(self) -> StageRun:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False

    def end(self, status: str = "finished") -> None:
        """No-op: the pipeline ends the stage run."""

    def __repr__(self) -> str:
        return f"StageRun({self._run!r})"


def stage_run(
    name: str | None = None,
    experiment: str = "default",
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    **_: Any,
) -> Any:
    """`mj.start_run(...)` as exported code calls it: inside a pipeline stage it returns
    the stage's run (recording `params`/`tags` on it); elsewhere it starts a real run."""
    run = tracking.active_run()
    if not _in_stage.get() or run is None:
        if run is not None and name is None and not (params or tags):
            return run  # `mj.active_run()` outside a pipeline
        return tracking.start_run(name, experiment, params, tags)
    if params:
        run.log_params(params)
    if tags:
        run.set_tags(tags)
    if name:
        run.set_tags({"mlops.notebook_run_name": name})
    return StageRun(run)


def display(*objs: Any, **_: Any) -> None:
    """Plain-Python stand-in for IPython's display(): prints each object."""
    for o in objs:
        print(o)
