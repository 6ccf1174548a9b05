"""Per-model promotion policies kept in the store, so every process and every user of a
team store obeys them: `require_gate=True` lets a version into production only with a
passing gate against the production version of the moment."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError
from ..store import gates as gstore

__all__ = ["check_promotion", "model_policy", "set_model_policy"]


def set_model_policy(name: str, *, require_gate: bool = False) -> dict[str, Any]:
    """Set the policy of model `name` (recorded in the audit log); returns it.
    `require_gate=True`: promote_model(..., "production") refuses a version whose newest
    gate against the current production version did not pass (see mj.gate)."""
    from ..registry import _check_name, _remote, _store, _user

    _check_name(name)
    if not isinstance(require_gate, bool):
        raise InvalidInputError(f"require_gate must be True or False, got {require_gate!r}")
    if (url := _remote()) is not None:  # through the tracking server (admin scope)
        from ..remote import loop as remote

        return remote.set_policy(url, name, require_gate)
    policy = {"require_gate": True} if require_gate else {}
    gstore.set_policy(_store(), name, policy, _user())
    return policy


def model_policy(name: str) -> dict[str, Any]:
    """The policy of model `name` ({} when none is set)."""
    from ..registry import _check_name, _remote, _store

    if (url := _remote()) is not None:  # through the tracking server (remote/loop.py)
        from ..remote import loop as remote

        return remote.get_policy(url, _check_name(name))
    return gstore.get_policy(_store(), _check_name(name))


def check_promotion(store: Any, name: str, version: int, stage: str) -> str | None:
    """Why the policy refuses moving `name` v`version` to `stage`, or None."""
    if stage != "production" or not gstore.get_policy(store, name).get("require_gate"):
        return None
    from ..store.registry import ModelNotFoundError, find_version

    try:
        prod = find_version(store, name, stage="production")["version"]
    except ModelNotFoundError:
        prod = None
    if prod == version:
        return None  # already there: the transition itself reports that
    g = gstore.latest_gate(store, name, version, prod)
    against = f"production v{prod}" if prod is not None else "no production version"
    cmd = f"mlops-jupyter gate {name} --candidate {version} --data EVAL_FILE --rules RULES"
    if g is None:
        return (
            f"{name} requires a passing gate before production, and v{version} has no gate "
            f"against {against}: run mj.gate({name!r}, candidate={version}, ...) or `{cmd}`"
        )
    if not g["passed"]:
        return (
            f"{name} requires a passing gate before production, and the newest gate of "
            f"v{version} against {against} (#{g['id']}) failed: "
            f"{_failed(g['report'])}; fix it and rerun `{cmd}`"
        )
    return None


def _failed(report: dict) -> str:
    return ", ".join(r["rule"] for r in report["results"] if r["status"] == "fail") or "no rule ran"
