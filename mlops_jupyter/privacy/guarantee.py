"""The recorded privacy guarantee of a run or a registered model, and the registry's
promotion policy ("no promotion to production without a recorded guarantee")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from .budget import _trackers

__all__ = [
    "PromotionPolicy",
    "from_run_detail",
    "guarantee",
    "model_guarantee",
    "promotion_policy",
    "set_promotion_policy",
]

_KEYS = ("noise_multiplier", "max_grad_norm", "delta", "sample_rate", "accountant", "framework")


def from_run_detail(detail: dict[str, Any]) -> dict[str, Any] | None:
    """(epsilon, delta, accountant, steps, ...) from a run's params and its last
    `privacy/epsilon` point; None for a run that did not train with DP-SGD."""
    params = detail.get("params") or {}
    if "privacy/noise_multiplier" not in params:
        return None
    out: dict[str, Any] = {k: params.get(f"privacy/{k}") for k in _KEYS}
    eps = {m["key"]: m for m in detail.get("metrics") or []}.get("privacy/epsilon")
    out["steps"] = int(eps["last_step"]) if eps and eps["last_step"] is not None else 0
    out["epsilon"] = float(eps["last"]) if eps else 0.0
    if "privacy/target_epsilon" in params:
        out["target_epsilon"] = params["privacy/target_epsilon"]
    out["run_id"] = detail.get("id")
    return out


def flush_run(run_id: str) -> None:
    """Make the newest epsilon of every tracker logging into run `run_id` readable."""
    from ..tracking.api import flush

    for t in list(_trackers):
        if t.run is not None and t.run.id == run_id:
            t.flush()
    flush()


def guarantee(run: Any = None) -> dict[str, Any] | None:
    """The guarantee of a run (a Run, run id or name; default: the active run)."""
    from ..tracking.api import active_run, get_run
    from ..tracking.run import Run

    if run is None:
        run = active_run()
        if run is None:
            raise InvalidInputError("no run given and no run is active")
    ref = run.id if isinstance(run, Run) else run
    if not isinstance(ref, str):
        raise InvalidInputError(f"run must be a Run or a run id/name, got {type(run).__name__}")
    detail = get_run(ref)
    flush_run(detail["id"])
    return from_run_detail(get_run(ref))


def model_guarantee(
    name: str, version: int | None = None, stage: str | None = None, alias: str | None = None
) -> dict[str, Any] | None:
    """The guarantee recorded with a registered model version (None if none was)."""
    from ..registry import model_version

    info = model_version(name, version, stage, alias)
    return (info["meta"].get("metadata") or {}).get("privacy")


@dataclass(frozen=True)
class PromotionPolicy:
    """Stages that need a recorded guarantee, and optional bounds on it."""

    stages: tuple[str, ...] = ("production",)
    max_epsilon: float | None = None
    max_delta: float | None = None

    def check(self, info: dict[str, Any], stage: str) -> str | None:
        """Why promoting version `info` to `stage` is refused, or None."""
        if stage not in self.stages:
            return None
        g = (info.get("meta", {}).get("metadata") or {}).get("privacy")
        where = f"{info['name']} v{info['version']}"
        if not g:
            return (
                f"{where} has no recorded privacy guarantee and the promotion policy requires "
                f"one for {stage!r}: train it with mj.privacy.make_private in a run and "
                "register it from that run (or relax mj.privacy.set_promotion_policy)"
            )
        eps, delta = g.get("epsilon"), g.get("delta")
        if self.max_epsilon is not None and not (eps is not None and eps <= self.max_epsilon):
            return f"{where}: epsilon={eps} exceeds the policy's max_epsilon={self.max_epsilon}"
        if self.max_delta is not None and not (delta is not None and delta <= self.max_delta):
            return f"{where}: delta={delta} exceeds the policy's max_delta={self.max_delta}"
        return None


_policy: PromotionPolicy | None = None


def _registry_check(info: dict[str, Any], stage: str) -> str | None:
    return _policy.check(info, stage) if _policy is not None else None


def set_promotion_policy(
    stages: Any = ("production",),
    *,
    max_epsilon: float | None = None,
    max_delta: float | None = None,
    enabled: bool = True,
) -> PromotionPolicy | None:
    """Refuse promoting a model version into `stages` unless a privacy guarantee was
    recorded with it (and, if given, epsilon <= max_epsilon, delta <= max_delta).
    `enabled=False` removes the policy. Applies to this process."""
    global _policy
    from ..registry import PROMOTION_CHECKS, STAGES

    if not enabled:
        _policy = None
        return None
    stages = (stages,) if isinstance(stages, str) else tuple(stages)
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise InvalidInputError(f"stages must be a non-empty list of {STAGES}, got {stages!r}")
    for name, v in (("max_epsilon", max_epsilon), ("max_delta", max_delta)):
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf
        ):
            raise InvalidInputError(f"{name} must be a positive number or None, got {v!r}")
    _policy = PromotionPolicy(stages, max_epsilon, max_delta)
    if _registry_check not in PROMOTION_CHECKS:
        PROMOTION_CHECKS.append(_registry_check)
    return _policy


def promotion_policy() -> PromotionPolicy | None:
    """The policy in force (None: promotions need no guarantee)."""
    return _policy
