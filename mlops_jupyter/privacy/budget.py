"""The privacy budget of a DP-SGD training: params and per-step epsilon in the active run,
and the budget Andon rule (a warning alert at a fraction of the target, a clean stop with a
checkpoint before the target would be exceeded).

The stop is decided before a step is applied and accounted, from a step limit computed once
(epsilon grows with steps for fixed sigma and q), so the check in the training loop is an
integer comparison. Epsilon values the accountant computes slowly (PRV, PLD) are logged by a
background thread for the newest step, so the loop never waits for them.
"""

from __future__ import annotations

import math
import threading
import warnings
import weakref
from typing import Any

from ..errors import MlopsJupyterError
from .accounting import EpsilonCurve

__all__ = ["BudgetTracker", "PrivacyBudgetExhausted", "trackers_for"]

_trackers: weakref.WeakSet = weakref.WeakSet()


class PrivacyBudgetExhausted(MlopsJupyterError):
    """Training stopped: one more step would spend more than the target epsilon.

    The step was not applied. Attributes: `epsilon` (spent), `target_epsilon`, `steps`
    (taken), `checkpoint` (the file written, or None)."""

    def __init__(self, epsilon: float, target: float, steps: int, checkpoint: Any) -> None:
        self.epsilon, self.target_epsilon, self.steps = epsilon, target, steps
        self.checkpoint = checkpoint
        where = f"; state saved to {checkpoint}" if checkpoint else ""
        super().__init__(
            f"privacy budget reached: {steps} steps spent epsilon={epsilon:.4g} and one more "
            f"would exceed target_epsilon={target:g}; training stopped before it{where}. "
            "Catch mj.privacy.PrivacyBudgetExhausted to end training cleanly."
        )


def trackers_for(run: Any) -> list[BudgetTracker]:
    """The live trackers that log into `run`."""
    return [t for t in list(_trackers) if t.run is run]


def _warn(msg: str) -> None:
    warnings.warn(f"mlops-jupyter privacy: {msg}", RuntimeWarning, stacklevel=3)


class BudgetTracker:
    """Counts DP steps, logs `privacy/epsilon` and enforces the target epsilon.

    `before_step()` must be called before a noisy step is applied (it raises
    PrivacyBudgetExhausted instead of taking a step past the budget); `after_step()` once it
    was taken. `state` is a callable returning what to checkpoint (model, optimizer)."""

    def __init__(
        self,
        curve: EpsilonCurve,
        *,
        target_epsilon: float | None = None,
        warn_at: float = 0.8,
        max_grad_norm: float | None = None,
        framework: str = "torch",
        state: Any = None,
        checkpoint: bool = True,
    ) -> None:
        from ..errors import InvalidInputError

        if (
            isinstance(warn_at, bool)
            or not isinstance(warn_at, (int, float))
            or not 0 < warn_at <= 1
        ):
            raise InvalidInputError(f"warn_at must be a fraction in (0, 1], got {warn_at!r}")
        if target_epsilon is not None and not (
            isinstance(target_epsilon, (int, float))
            and not isinstance(target_epsilon, bool)
            and 0 < target_epsilon < math.inf
        ):
            raise InvalidInputError(
                f"target_epsilon must be a positive finite number, got {target_epsilon!r}"
            )
        self.curve = curve
        self.target_epsilon = None if target_epsilon is None else float(target_epsilon)
        self.warn_at = float(warn_at)
        self.max_grad_norm = max_grad_norm
        self.framework = framework
        self.state = state
        self.checkpoint = checkpoint
        self.steps = 0
        self.run: Any = None
        self.stopped = False
        self._warned = False
        # Step limits, searched up to a horizon that grows when training reaches it (a slow
        # accountant's cost grows with the steps), so the per-step check is an integer
        # comparison and a generous target does not cost a search to a billion steps.
        self.max_steps: int | None = None
        self.warn_steps: int | None = None
        self._horizon = 0
        if self.target_epsilon is not None:
            self._extend(4096)
        self._cond = threading.Condition()
        self._pending: tuple[Any, int] | None = None
        self._worker: threading.Thread | None = None
        self._logged = 0  # newest step whose epsilon is logged
        self._log_lock = threading.Lock()
        _trackers.add(self)

    def _extend(self, horizon: int) -> None:
        target = float(self.target_epsilon)  # type: ignore[arg-type]
        self._horizon = horizon
        self.max_steps = self.curve.max_steps(target, limit=horizon)
        if not self._warned:
            warn_limit = max(self.max_steps, 1)  # the warning comes at or before the stop
            self.warn_steps = self.curve.max_steps(self.warn_at * target, limit=warn_limit) + 1

    # -- run binding --------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        c = self.curve
        p = {
            "privacy/noise_multiplier": c.noise_multiplier,
            "privacy/max_grad_norm": self.max_grad_norm,
            "privacy/delta": c.delta,
            "privacy/sample_rate": c.sample_rate,
            "privacy/accountant": c.accountant,
            "privacy/framework": self.framework,
        }
        if self.target_epsilon is not None:
            p["privacy/target_epsilon"] = self.target_epsilon
        return p

    def _bind(self) -> Any:
        """The active run (params are logged the first time a run is seen)."""
        from ..tracking.api import active_run

        run = active_run()
        if run is not self.run:
            self.run = run
            if run is not None:
                try:
                    run.log_params(self.params())
                    # the newest epsilon (slow accountants) is logged before the run ends;
                    # end-of-run callbacks are how telemetry and autolog attach too
                    run.on_end(lambda _run, _status: self.flush())
                except Exception as e:  # tracking must not break training
                    _warn(f"could not log the privacy params: {e}")
        return run

    # -- per step -----------------------------------------------------------------------
    def before_step(self) -> None:
        """Raise PrivacyBudgetExhausted (after checkpointing and ending the run as
        `stopped`) if one more step would exceed the target epsilon."""
        if self.max_steps is not None and self.steps >= self.max_steps:
            while self.max_steps == self._horizon:  # only the horizon was reached
                self._extend(self._horizon * 4)
            if self.steps >= self.max_steps:
                self._stop()

    def after_step(self) -> None:
        """Count the step just taken, log its epsilon and raise the warning alert once."""
        self.steps += 1
        run = self._bind()
        if run is None:
            return
        steps = self.steps
        if self.curve.fast:
            try:
                run.log_metric("privacy/epsilon", self.curve(steps), steps)
                self._logged = steps
            except Exception as e:
                _warn(f"could not log epsilon: {e}")
        else:
            self._post(run, steps)
        if self.warn_steps is not None and steps >= self.warn_steps and not self._warned:
            self._warned = True
            self._alert_warning(run, steps)

    # -- slow accountants: a background thread logs the newest step ----------------------
    def _post(self, run: Any, steps: int) -> None:
        with self._cond:
            self._pending = (run, steps)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._work, name="mlops-privacy-epsilon", daemon=True
                )
                self._worker.start()
            self._cond.notify()

    # At most this share of one core goes to a slow accountant: after an evaluation that
    # took d seconds the worker rests d * (1 / share - 1), so PRV/PLD do not slow training
    # on a busy machine; the newest step is logged exactly at flush (register, stop, end).
    DUTY = 0.05

    def _work(self) -> None:
        import time

        while True:
            with self._cond:
                if self._pending is None and not self._cond.wait(timeout=30):
                    self._worker = None
                    return
                if self._pending is None:
                    continue
                run, steps = self._pending
                self._pending = None
            t0 = time.perf_counter()
            try:
                self._log(run, steps, self.curve(steps))
            except Exception as e:
                _warn(f"could not compute or log epsilon: {e}")
            time.sleep(min((time.perf_counter() - t0) * (1 / self.DUTY - 1), 30.0))

    def _log(self, run: Any, steps: int, eps: float) -> None:
        with self._log_lock:  # points in step order: "last" is the newest step
            if steps > self._logged and run.status == "running":
                run.log_metric("privacy/epsilon", eps, steps)
                self._logged = steps

    def flush(self) -> None:
        """Log the epsilon of the newest step now if it is not logged yet."""
        run, steps = self.run, self.steps
        if run is not None and run.status == "running" and self._logged < steps:
            self._log(run, steps, self.curve(steps))

    def epsilon(self) -> float:
        """Epsilon spent so far."""
        return self.curve(self.steps)

    # -- Andon --------------------------------------------------------------------------
    def _event(self, run: Any, level: str, message: str, data: dict, closed: bool) -> None:
        import time

        from ..store import runs as rstore

        try:
            now = time.time()
            if type(run.store).__name__ == "RemoteStore":  # through the tracking server
                end = now if closed else None
                run.add_event("alert", message, level, {"rule": "privacy_budget", **data}, now, end)
                return
            rid = rstore.resolve_run(run.store, run.id)
            rstore.add_event(
                run.store, rid, "alert", message, level,
                {"rule": "privacy_budget", **data}, now, now if closed else None,
            )  # fmt: skip
        except Exception as e:
            _warn(f"could not record the budget alert: {e}")

    def _alert_warning(self, run: Any, steps: int) -> None:
        eps = self.curve(steps)
        target = self.target_epsilon or math.inf
        self._event(
            run,
            "warning",
            f"privacy budget: epsilon={eps:.3g} is {eps / target:.0%} of the target "
            f"{target:g} after {steps} steps; the budget allows "
            + (
                f"more than {self.max_steps}"
                if self.max_steps == self._horizon
                else f"{self.max_steps}"
            )
            + " steps",
            {"epsilon": eps, "target_epsilon": target, "steps": steps, "max_steps": self.max_steps},
            closed=False,
        )

    def _stop(self) -> None:
        eps = self.curve(self.steps)
        target = float(self.target_epsilon or math.inf)
        run = self._bind()
        path = None
        if self.checkpoint and self.state is not None:
            try:
                from ..registry.checkpoints import checkpoint

                model, optimizer = self.state()
                path = checkpoint(
                    model=model,
                    optimizer=optimizer,
                    step=self.steps,
                    metrics={"privacy/epsilon": eps},
                    best=None,
                    extra={"privacy": {**self.params(), "steps": self.steps, "epsilon": eps}},
                )
            except Exception as e:  # the stop must happen even if saving fails
                _warn(f"could not write the checkpoint before stopping: {e}")
        self.stopped = True
        if run is not None:
            try:
                self._log(run, self.steps, eps)
            except Exception as e:
                _warn(f"could not log epsilon: {e}")
            self._event(
                run,
                "critical",
                f"privacy budget: stopped after {self.steps} steps at epsilon={eps:.4g}; one "
                f"more step would exceed the target {target:g}",
                {
                    "epsilon": eps,
                    "target_epsilon": target,
                    "steps": self.steps,
                    "reason": "stopped_privacy_budget",
                    "checkpoint": str(path) if path else None,
                },
                closed=True,
            )
            try:
                run.end("stopped")
            except Exception as e:
                _warn(f"could not end the run as stopped: {e}")
        raise PrivacyBudgetExhausted(eps, target, self.steps, path)
