"""The watcher's reads and state through one door (loop/watch.py, triggers.py, actions.py):
a direct store's own functions, or the tracking server's routes when the watcher runs with
MLOPS_JUPYTER_STORE=http(s)://... and a token (routes: trackserver/loop_routes.py for
claims, resumes, updates, drift alerts and approvals; registry, data and run frames
through their own routes; trackserver/loop_watch_routes.py for the heartbeats and the
recovery of a signal whose watcher died; serving's rollout routes,
trackserver/serving_routes.py, for the canary step).

Each function takes `store`: a Store, or the RemoteStore open_watch_store() gives."""

from __future__ import annotations

from typing import Any

from ..store import loop_state
from .api import RemoteStore


def open_watch_store() -> Any:
    """The watcher's store: the tracking server's handle when MLOPS_JUPYTER_STORE is
    http(s):// (a missing token is a clear error), else the store itself."""
    from ..tracking.api import current_store, remote_url

    url = remote_url()
    if url is not None:
        from .registry import _store

        return _store(url)
    return current_store()


def _url(store: Any) -> str | None:
    return store.url if isinstance(store, RemoteStore) else None


# -- the watcher's state ---------------------------------------------------------------


def signals(store: Any, rule: str | None = None, state: str | None = None) -> list[dict]:
    """Handled signals, oldest first (store/loop_state.py signals)."""
    if (url := _url(store)) is not None:
        from . import loop

        return loop.signals(url, rule, state)
    return loop_state.signals(store, rule, state)


def claim(store: Any, rule: str, signal: str, detail: dict[str, Any], owner: str) -> bool:
    """Claim `signal` of `rule` (compare-and-set); False when it was handled before."""
    if (url := _url(store)) is not None:
        import secrets

        from . import loop

        # the server answers the owner holding the signal; a claim retried after a lost
        # answer finds its own owner, but so would this process's claim of an earlier poll:
        # the nonce in the stored detail tells which
        body = {**detail, "claim": secrets.token_hex(8)}
        path, what = "/api/v1/loop/signals", f"claim signal {signal!r}"
        args = {"rule": rule, "signal": signal, "detail": loop._plain(body), "owner": owner}
        out = _call(url, "POST", path, args, what)
        if out["claimed"] or out.get("owner") != owner:
            return bool(out["claimed"])
        held = [s for s in loop.signals(url, rule) if s["signal"] == signal]
        return bool(held) and held[0]["detail"].get("claim") == body["claim"]
    return loop_state.claim(store, rule, signal, detail, owner)


def resume(store: Any, rule: str, signal: str, owner: str) -> dict[str, Any] | None:
    """Take a waiting signal back to running (compare-and-set); its detail, or None."""
    if (url := _url(store)) is not None:
        from . import loop

        return loop.resume(url, rule, signal, owner)
    return loop_state.resume(store, rule, signal, owner)


def update(
    store: Any,
    rule: str,
    signal: str,
    state: str,
    detail: dict[str, Any],
    owner: str | None = None,
) -> bool:
    """Set the state and detail of a claimed signal (with `owner`: only while that
    watcher holds it); whether it was set."""
    if (url := _url(store)) is not None:
        from . import loop

        return loop.update(url, rule, signal, state, detail, owner)
    return loop_state.update(store, rule, signal, state, detail, owner)


def drift_alerts(store: Any, model: str) -> list[dict]:
    """Serving's drift alerts on `model`'s inputs, newest first."""
    if (url := _url(store)) is not None:
        from . import loop

        return loop.drift_alerts(url, model)
    return loop_state.drift_alerts(store, model)


def get_approval(store: Any, model: str, version: int) -> dict[str, Any] | None:
    """The decision on `model` v`version`, or None."""
    if (url := _url(store)) is not None:
        from . import loop

        return loop.get_approval(url, model, version)
    return loop_state.get_approval(store, model, version)


def take_back(
    store: Any, rule: str, signal: str, dead: str, owner: str, lease: float | None = None
) -> dict | None:
    """Give a running signal of the watcher `dead` to `owner`; its detail, or None. With
    `lease` (seconds): only when `dead`'s last heartbeat is older than that, by the clock
    of the process that runs the store call (the server's over a tracking server). Over
    the server one request key goes with every try, so a retry after a lost answer answers
    as the first did (the signal is not left held by `owner` with no chain)."""
    if (url := _url(store)) is not None:
        import uuid

        body: dict[str, Any] = {
            "rule": rule,
            "signal": signal,
            "from_owner": dead,
            "owner": owner,
            "key": uuid.uuid4().hex,
        }
        if lease is not None:
            body["stale_after"] = float(lease)
        what = f"take back signal {signal!r}"
        return _call(url, "POST", "/api/v1/loop/signals/take-back", body, what)["detail"]
    import time

    stale = None if lease is None else time.time() - float(lease)
    return loop_state.take_back(store, rule, signal, dead, owner, stale_before=stale)


def beat(store: Any, rule: str, signal: str, owner: str) -> bool:
    """The heartbeat of `owner`, running `signal`'s chain (store/loop_state.py beat);
    False when the signal is no longer its running one."""
    if (url := _url(store)) is not None:
        body = {"rule": rule, "signal": signal, "owner": owner}
        what = f"heartbeat of signal {signal!r}"
        return bool(_call(url, "POST", "/api/v1/loop/signals/beat", body, what)["beat"])
    return loop_state.beat(store, rule, signal, owner)


def recover(
    store: Any, rule: str, signal: str, action: str, user: str, reason: str | None = None
) -> dict[str, Any]:
    """`retry` or `abandon` a signal (store/loop_state.py recover); the signal as changed.
    Over the server the audit line names the token."""
    from ..errors import InvalidInputError
    from ..store.registry import ModelNotFoundError, StageTransitionError

    if (url := _url(store)) is not None:
        body: dict[str, Any] = {"rule": rule, "signal": signal, "user": user}
        if reason is not None:
            body["reason"] = reason
        path = f"/api/v1/loop/signals/{action}"
        try:
            return _call(url, "POST", path, body, f"{action} signal {signal!r}", retry=False)
        except (ModelNotFoundError, StageTransitionError) as e:  # the server's 404 / 409
            raise InvalidInputError(str(e)) from None
    try:
        return loop_state.recover(store, rule, signal, action, user, reason)
    except (LookupError, ValueError) as e:
        raise InvalidInputError(str(e)) from None


def _call(
    url: str, method: str, path: str, body: Any, what: str, retry: bool = True
) -> dict[str, Any]:
    from . import loop

    return loop._call(url, method, path, body, what, retry)


# -- what the triggers and actions read ------------------------------------------------


def model_versions(store: Any, model: str) -> list[dict[str, Any]]:
    """Every version of `model` (store/registry.py list_versions); [] for an unknown one."""
    if (url := _url(store)) is not None:
        from ..store.registry import ModelNotFoundError
        from . import registry

        try:
            return registry.list_versions(url, model)
        except ModelNotFoundError:  # not registered yet: no versions, as on a store
            return []
    from ..store import registry as rs

    return rs.list_versions(store, model)


def audit_log(store: Any, model: str) -> list[tuple]:
    """The registry's audit rows of `model`."""
    if (url := _url(store)) is not None:
        from . import registry

        return registry.audit_log(url, model)
    from ..store import registry as rs

    return rs.audit_log(store, model)


def data_versions(store: Any, name: str, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` versions of dataset `name`, newest first."""
    if isinstance(store, RemoteStore):
        from . import data

        return data.list_versions(store, name, limit)
    from ..store import data as dstore

    return dstore.list_versions(store, name, limit)


def runs_frame(store: Any, experiment: str) -> Any:
    """The runs of `experiment`, newest first, with their metrics' last values."""
    if (url := _url(store)) is not None:
        from . import api

        return api.runs(url, experiment, None, False)
    from ..store import query as q

    return q.runs_frame(store, experiment, None, False)


def rollout(store: Any, model: str) -> dict[str, Any] | None:
    """The stored rollout of `model` (store/serving_rollouts.py get), or None."""
    if (url := _url(store)) is not None:
        from .serving import handle  # serving's rollout routes (trackserver/serving_routes.py)

        return handle(url).show_row(model)
    from ..store import serving_rollouts as sr

    return sr.get(store, model)


def start_canary(store: Any, model: str, version: int, params: dict[str, Any], user: str) -> dict:
    """Start a canary of `model` v`version` with the rule's ramp, step time and checks
    (serving/canary.py start_canary); the stored rollout. Over the server it goes through
    serving's rollout route, which needs admin scope, as moving into production does."""
    from ..loop.triggers import parse_every
    from ..serving import canary as cn

    every = parse_every(params.get("canary_every", "30m"))
    rules = params.get("canary_rules", {})
    if (url := _url(store)) is not None:
        from .serving import handle

        body = {"action": "canary", "canary": f"v{version}", "every": every, "rules": rules}
        if params.get("ramp") is not None:
            body["ramp"] = params["ramp"]
        return handle(url).change(model, body)
    return cn.start_canary(
        store, model, f"v{version}", params.get("ramp"), every, rules=cn.Rules(**rules), user=user
    )
