"""Human approvals before promotion: a watcher chain with `approval = true` waits until
`mj.approve(name, version)` (or `mlops-jupyter approve`) decides; each decision is kept in
the store and in the registry's audit log."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError
from ..store import loop_state

__all__ = ["approval", "approve"]


def approve(
    name: str, version: int, *, reject: bool = False, reason: str | None = None
) -> dict[str, Any]:
    """Approve (or `reject=True`: reject) promoting `name` v`version`; a waiting watcher
    chain promotes it (or stops) on its next poll. Returns the decision recorded."""
    from ..registry import _check_name, _check_version, _remote, _store, _user

    _check_name(name)
    version = _check_version(version)
    if not isinstance(reject, bool):
        raise InvalidInputError(f"reject must be True or False, got {reject!r}")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInputError("reason must be a string")
    decision = "rejected" if reject else "approved"
    if (url := _remote()) is not None:  # audited by the server under the token's name
        from ..remote import loop as remote

        return remote.set_approval(url, name, version, decision, reason) or {}
    loop_state.set_approval(_store(), name, version, decision, reason, _user())
    return approval(name, version) or {}


def approval(name: str, version: int) -> dict[str, Any] | None:
    """The decision on `name` v`version` (decision, reason, user, time), or None."""
    from ..registry import _check_name, _check_version, _remote, _store

    if (url := _remote()) is not None:  # through the tracking server (remote/loop.py)
        from ..remote import loop as remote

        return remote.get_approval(url, _check_name(name), _check_version(version))
    return loop_state.get_approval(_store(), _check_name(name), _check_version(version))
