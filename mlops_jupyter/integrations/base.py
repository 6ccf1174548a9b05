"""What every framework integration shares: which run to log to, and the rule that a
failing integration warns once and never raises into the training loop (the dvclive rule).

Integrations use only the public tracking API (`mj.active_run()`, `run.log_metric`,
`run.log_params`, `mj.log_artifact`, `mj.checkpoint`, `mj.register_model`)."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from ..tracking import active_run, start_run

F = TypeVar("F", bound=Callable[..., Any])


class RunHandle:
    """The run an integration logs to: the one given, else the active run, else a run it
    starts itself (and ends when training ends)."""

    def __init__(self, run: Any = None, name: str | None = None) -> None:
        self.given = run
        self.name = name
        self.owned: Any = None

    def get(self) -> Any:
        if self.given is not None:
            return self.given
        if self.owned is not None:
            return self.owned
        r = active_run()
        if r is None:
            self.owned = r = start_run(self.name)
        return r

    def release(self, status: str = "finished") -> None:
        if self.owned is not None:
            r, self.owned = self.owned, None
            r.end(status)


class Guarded:
    """Base of callbacks: `self.failed` is set by the first error, which is warned about
    once; later calls do nothing."""

    integration = "integration"
    failed: BaseException | None = None
    handle: RunHandle

    def _release(self, status: str = "finished") -> None:
        """End the run the integration started (if any), even after a failure."""
        try:
            self.handle.release(status)
        except Exception as e:
            self._fail(e)

    def _fail(self, e: BaseException) -> None:
        if self.failed is None:
            self.failed = e
            warnings.warn(
                f"mlops-jupyter: the {self.integration} integration failed and stops logging "
                f"for this training (training goes on): {type(e).__name__}: {e}",
                RuntimeWarning,
                stacklevel=3,
            )


def guarded(fn: F) -> F:
    """Wrap a callback method of a Guarded object: errors warn once, never propagate."""

    @functools.wraps(fn)
    def wrapper(self: Guarded, *args: Any, **kwargs: Any) -> Any:
        if self.failed is not None:
            return None
        try:
            return fn(self, *args, **kwargs)
        except Exception as e:
            self._fail(e)
            return None

    return wrapper  # type: ignore[return-value]


def number(v: Any) -> float | None:
    """A loggable float from a number, a 0-d/1-element array or tensor; None otherwise."""
    if isinstance(v, (bool, int, float)):
        return float(v)
    if hasattr(v, "item"):
        try:
            return float(v.item())
        except Exception:  # a multi-element tensor, a string array...
            return None
    return None


def log_numbers(run: Any, metrics: dict[str, Any], step: int | None) -> None:
    """Log every numeric value of `metrics` (others are skipped) at `step`."""
    for k, v in metrics.items():
        f = number(v)
        if f is not None:
            run.log_metric(str(k), f, step)


def plain_params(params: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Flatten nested dicts into dotted keys; values that are not JSON scalars become str."""
    out: dict[str, Any] = {}
    items = params.items() if isinstance(params, dict) else vars(params).items()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 3:
            out.update(plain_params(v, f"{key}.", depth + 1))
        elif v is None or isinstance(v, (bool, int, str)):
            out[key] = v
        elif isinstance(v, float):
            out[key] = v if math.isfinite(v) else str(v)
        elif isinstance(v, (list, tuple)) and all(
            x is None or isinstance(x, (bool, int, float, str)) for x in v
        ):
            out[key] = list(v)
        else:
            out[key] = str(v)
    return out


def log_importance(
    scores: dict[str, float],
    key: str = "feature_importance",
    run: Any = None,
    step: int | None = None,
) -> None:
    """Log {feature: importance} as a table (feature, importance), largest first."""
    import polars as pl

    from ..media import log_table

    items = sorted(scores.items(), key=lambda kv: -kv[1])
    frame = pl.DataFrame(
        {"feature": [k for k, _ in items], "importance": [float(v) for _, v in items]},
        schema={"feature": pl.Utf8, "importance": pl.Float64},
    )
    log_table(key, frame, step, run=run)
