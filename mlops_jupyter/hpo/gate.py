"""The sweep's machine gate: trials wait while `should_run()` (thermal telemetry by
default) says the machine is not ready; each pause is one run event."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any


def _gate_decision(result: Any) -> tuple[bool, str]:
    """Normalise what a should_run() returns: bool, (bool, reason), dict or object."""
    if isinstance(result, bool):
        return result, ""
    if isinstance(result, (tuple, list)) and result:
        return bool(result[0]), str(result[1]) if len(result) > 1 else ""
    if isinstance(result, dict):
        for k in ("ok", "run", "decision", "should_run", "go"):
            if k in result:
                v = result[k]
                ok = (
                    v
                    if isinstance(v, bool)
                    else str(v).lower() in ("run", "go", "ok", "yes", "true")
                )
                return ok, str(result.get("reason", ""))
    for attr in ("ok", "run", "decision", "should_run"):
        if hasattr(result, attr):
            v = getattr(result, attr)
            ok = v if isinstance(v, bool) else str(v).lower() in ("run", "go", "ok", "yes", "true")
            return ok, str(getattr(result, "reason", ""))
    return bool(result), str(getattr(result, "reason", ""))


def _default_gate() -> Callable[[], Any] | None:
    try:
        from ..telemetry import should_run
    except ImportError:
        return None
    return should_run


def _wait_for_gate(check, run, poll_s, view, redraw, sreg) -> None:
    """Block while check() says no; one run event (with start and end) per pause."""
    event_id = None
    while True:
        try:
            ok, reason = _gate_decision(check())
        except Exception as e:  # a broken gate must not stall the sweep
            warnings.warn(f"mlops-jupyter: should_run() failed: {e}", RuntimeWarning, 3)
            ok, reason = True, ""
        if ok:
            break
        if event_id is None:
            msg = f"sweep paused: {reason or 'machine not ready'}"
            event_id = run.add_event("thermal_wait", msg, "warning", {"reason": reason})
            view.waiting = reason or "machine not ready"
            redraw(force=True)
            # scripts have no live view: say why nothing is happening
            warnings.warn(
                f"mlops-jupyter: {msg}; re-checking every {poll_s:g} s (gate=False to skip)",
                RuntimeWarning,
                3,
            )
        time.sleep(poll_s)
    if event_id is not None:
        if type(run).__name__ == "RemoteRun":  # a sweep over the tracking server
            from ..remote import data as rdata

            rdata.close_event(run, event_id, time.time())
        else:
            sreg.close_event(run.store, event_id)
        view.waiting = None
