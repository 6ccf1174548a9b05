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


class notebook_run:  # noqa: N801 - used like a function in generated code
    """`with notebook_run("name"):` around one of several `%%mlops_run` cells of a stage:
    a run of its own, nested under the stage's run, as it was in the notebook."""

    def __init__(self, name: str | None = None, experiment: str | None = None) -> None:
        self.name = name
        self.experiment = experiment
        self.run: tracking.Run | None = None

    def __enter__(self) -> tracking.Run:
        active = tracking.active_run()
        exp = self.experiment or (active.experiment if active is not None else "default")
        self.run = tracking.start_run(self.name, exp)
        return self.run

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        assert self.run is not None
        return self.run.__exit__(et, ev, tb)


def show_result(value: Any) -> None:
    """What the notebook showed for a cell ending in an expression: its repr (the text
    form of the cell's output), nothing for None. Printed into the stage's log."""
    if value is not None:
        print(repr(value))


def use_globals(fn: Any, namespace: dict[str, Any]) -> Any:
    """`fn` (a function of another stage module that reads notebook variables) reading
    them from `namespace` instead: the calling stage module's globals, where the runner
    and the stage code put the current values, as the notebook's functions read its
    current variables. Functions of the same module it calls are rebound the same way."""
    import types

    src = getattr(fn, "__globals__", None)
    if src is None or src is namespace:
        return fn
    for k, v in src.items():  # its imports and helpers, unless this module has its own
        if not k.startswith("__"):
            namespace.setdefault(k, v)
    for k, v in list(namespace.items()):
        if isinstance(v, types.FunctionType) and v.__globals__ is src:
            namespace[k] = _rebound(v, namespace)
    return _rebound(fn, namespace) if isinstance(fn, types.FunctionType) else fn


def _rebound(fn: Any, namespace: dict[str, Any]) -> Any:
    import functools
    import types

    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    functools.update_wrapper(new, fn)
    del new.__wrapped__  # a copy, not a wrapper
    # it lives in the calling module now: pickle finds it there by name
    new.__module__ = namespace.get("__name__", fn.__module__)
    return new
