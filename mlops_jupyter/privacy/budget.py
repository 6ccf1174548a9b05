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

        if not isinstance(warn_at, (int, float)) or not 0 < warn_at <= 1:
            raise InvalidInputError(f"warn_at must be a fraction in (0, 1], got {warn_at!r}")
        if target_epsilon is not None and not 0 < float(target_epsilon) < math.inf:
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
        # Step limits: computed once, so the per-step check is an integer comparison.
        if self.target_epsilon is not None:
            self.max_steps: int | None = curve.max_steps(self.target_epsilon)
            self.warn_steps: int | None = curve.max_steps(self.warn_at * self.target_epsilon) + 1
        else:
            self.max_steps = self.warn_steps = None
        self._cond = threading.Condition()
        self._pending: tuple[Any, int] | None = None
        self._worker: threading.Thread | None = None
        self._logged = 0  # newest step whose epsilon is logged
        _trackers.add(self)

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
                except Exception as e:  # tracking must not break training
                    _warn(f"could not log the privacy params: {e}")
        return run

    # -- per step -----------------------------------------------------------------------
    def before_step(self) -> None:
        """Raise PrivacyBudgetExhausted (after checkpointing and ending the run as
        `stopped`) if one more step would exceed the target epsilon."""
        if self.max_steps is not None and self.steps >= self.max_steps:
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

    def _work(self) -> None:
        while True:
            with self._cond:
                if self._pending is None and not self._cond.wait(timeout=30):
                    self._worker = None
                    return
                if self._pending is None:
                    continue
                run, steps = self._pending
                self._pending = None
            try:
                eps = self.curve(steps)
                if run.status == "running":
                    run.log_metric("privacy/epsilon", eps, steps)
                    self._logged = max(self._logged, steps)
            except Exception as e:
                _warn(f"could not compute or log epsilon: {e}")
            with self._cond:
                self._cond.notify_all()

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until the epsilon of the newest step is logged (slow accountants), then log
        it synchronously if the worker is gone."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending is None, timeout=timeout)
        run = self.run
        if run is not None and run.status == "running" and self._logged < self.steps:
            run.log_metric("privacy/epsilon", self.curve(self.steps), self.steps)
            self._logged = self.steps

    def epsilon(self) -> float:
        """Epsilon spent so far."""
        return self.curve(self.steps)

    # -- Andon --------------------------------------------------------------------------
    def _event(self, run: Any, level: str, message: str, data: dict, closed: bool) -> None:
        import time

        from ..store import runs as rstore

        try:
            rid = rstore.resolve_run(run.store, run.id)
            now = time.time()
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
            f"{target:g} after {steps} steps; training stops after step {self.max_steps}",
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
            if self._logged < self.steps:
                try:
                    run.log_metric("privacy/epsilon", eps, self.steps)
                except Exception:
                    pass
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
