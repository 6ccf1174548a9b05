"""The link between `mj.log` inside a trial and optuna's pruning.

A `Tap` replaces the trial run's buffer-append function: every point still goes to the
background writer, and values of the watched metric go to optuna as intermediate values.
An optuna report on a shared storage is a locked file append (milliseconds), so by default
a per-trial reporter thread does it and the training loop only pays a queue append; the
pruning decision comes back on a later `mj.log` call. `sync=True` reports in the caller
instead (pruning decisions then never depend on timing)."""

from __future__ import annotations

import collections
import math
import threading
import warnings


def _pruned(msg: str) -> BaseException:
    import optuna

    return optuna.TrialPruned(msg)


class _Reporter:
    """Reports (value, step) pairs to optuna off the training thread. When points arrive
    faster than the storage takes them, the newest one is reported first and older
    unreported ones are dropped, so a trial's end never waits on a backlog."""

    def __init__(self, trial, prune: bool) -> None:
        self.trial = trial
        self.prune = prune
        self.queue: collections.deque = collections.deque()
        self.wake = threading.Event()
        self.decision: str | None = None
        self.stopped = False
        # started by the first report: a trial that reports nothing (or only its return
        # value) costs no thread start and join
        self.thread: threading.Thread | None = None

    def submit(self, value: float, step: int, key: str) -> None:
        self.queue.append((value, step, key))
        if self.thread is None:
            self.thread = threading.Thread(
                target=self._loop, name="mlops-optuna-report", daemon=True
            )
            self.thread.start()
        self.wake.set()

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            item = None
            while self.queue:
                item = self.queue.popleft()
            # reported even after a pruning decision: the objective may end before a later
            # mj.log call raises it, and a completed trial must show its last value
            if item is not None:
                value, step, key = item
                try:
                    self.trial.report(value, step)
                    if self.decision is None and self.prune and self.trial.should_prune():
                        self.decision = f"pruned at step {step} ({key}={value:.6g})"
                except Exception as e:  # the storage failing must not break training
                    warnings.warn(
                        f"mlops-jupyter: optuna report failed: {e}", RuntimeWarning, stacklevel=1
                    )
                    self.decision = None
                    self.stopped = True
            if self.stopped and not self.queue:
                return

    def close(self, timeout: float = 30.0) -> None:
        """Report what is still queued, then stop."""
        self.stopped = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout)


class Tap:
    """Listens to a trial run's logged points (a log listener): remembers the last values,
    reports the watched metric to optuna and raises TrialPruned when the pruner says so,
    only in the thread running the objective (never in the telemetry sampler's). Within one
    `mj.log(a=..., b=...)` call the raise waits until every value of the call is buffered
    (the run defers a propagating listener's exception to the end of the call)."""

    def __init__(self, run, trial, metric: str | None, prune: bool, sync: bool) -> None:
        self.trial = trial
        self.metric = metric
        self.prune = prune
        self.thread = threading.get_ident()
        self.last: dict[str, float] = {}
        self.last_key: str | None = None
        self.counts: dict[str, int] = {}
        self.reported: set[int] = set()
        self.pending: str | None = None
        self.reporting = True
        self.reporter = None if sync else _Reporter(trial, prune)
        self.run = run
        run.add_log_listener(self, propagate=True)

    def close(self) -> None:
        """Detach from the run (later logs, e.g. the final `objective`, bypass optuna) and
        let the reporter write what it still holds."""
        self.run.remove_log_listener(self)
        if self.reporter is not None:
            self.reporter.close()

    def _raise_pending(self) -> None:
        if self.pending is not None:
            msg, self.pending = self.pending, None
            raise _pruned(msg)

    def __call__(self, key: str, value: float, step: int | None) -> None:
        if key.startswith("sys/") or threading.get_ident() != self.thread:
            return
        n = self.counts.get(key, 0)
        self.counts[key] = n + 1
        self.last[key] = value
        self.last_key = key
        if self.metric is None:
            self.metric = key  # the first metric a trial logs is the one optuna watches
        r = self.reporter
        if key == self.metric and self.reporting:
            step = n if step is None else step
            if step not in self.reported and math.isfinite(value):
                self.reported.add(step)
                if r is not None:
                    r.submit(float(value), step, key)
                else:
                    self._report_now(float(value), step, key)
        if r is not None and r.decision is not None and self.pending is None:
            self.pending, r.decision = r.decision, None
        self._raise_pending()

    def _report_now(self, value: float, step: int, key: str) -> None:
        try:
            self.trial.report(value, step)
            prune = self.prune and self.trial.should_prune()
        except Exception as e:  # the study storage failing must not break training
            warnings.warn(f"mlops-jupyter: optuna report failed: {e}", RuntimeWarning, 3)
            self.reporting = False  # stop reporting for this trial
            return
        if prune:
            self.pending = f"pruned at step {step} ({key}={value:.6g})"

    def value_of_last_log(self) -> float | None:
        key = self.metric if self.metric in self.last else self.last_key
        return None if key is None else self.last[key]
