"""The loop's watcher over the tracking server, beyond the claim/resume/state routes of
loop_routes.py (client: remote/loop_watch.py):

- `POST /api/v1/loop/signals/take-back {"rule", "signal", "from_owner", "owner", "key"?,
  "stale_after"?}`: a watcher that found the owner of a running signal dead on its own host
  (or, with "stale_after": a lease in seconds, silent for longer than that) takes the
  signal (compare-and-set on the old owner, and on `updated` older than the server's time
  less the lease); {"detail"} or null. Sent again with the same key (a retry after a lost
  answer): the same answer, nothing changed.
- `POST /api/v1/loop/signals/beat {"rule", "signal", "owner"}`: the heartbeat of the
  watcher running the signal's chain (`updated` becomes the server's time, compare-and-set
  on running and this owner); {"beat": true} or {"beat": false} when it is not its
  running signal any more.
- `POST /api/v1/loop/signals/retry|abandon {"rule", "signal", "reason"?, "user"?}`: the
  recovery of `mlops-jupyter watch retry|abandon` (store/loop_state.py recover), audited
  under the token's name.

The canary step uses serving's rollout routes (serving_routes.py: reading a rollout needs
`read`, starting a canary `admin`). Take-back, beats, retry and abandon need `write`, as
claims do."""

from __future__ import annotations

import math
import time
from typing import Any

from ..store import loop_state
from .app import HTTPError, check_value
from .loop_routes import _key, _text, request_key
from .registry_routes import _Handler


class TakeBackHandler(_Handler):
    """POST {"rule", "signal", "from_owner", "owner", "key"?}: {"detail"} or null."""

    async def post(self) -> None:
        def go() -> dict:
            body = self.body_json()
            rule, signal = _key(body, "rule"), _key(body, "signal")
            dead, owner = _key(body, "from_owner"), _key(body, "owner")
            key = request_key(body)
            lease = body.get("stale_after")
            check_value(
                lease is None
                or (
                    isinstance(lease, (int, float))
                    and not isinstance(lease, bool)
                    and math.isfinite(lease)
                    and lease > 0
                ),
                "'stale_after' must be a positive number of seconds",
            )
            # the server's clock, as for the beats: one clock decides staleness
            stale = None if lease is None else time.time() - float(lease)
            detail = loop_state.take_back(self.store, rule, signal, dead, owner, key, stale)
            return {"detail": detail}

        await self.go(go)


class BeatHandler(_Handler):
    """POST {"rule", "signal", "owner"}: {"beat": true|false}."""

    async def post(self) -> None:
        def go() -> dict:
            body = self.body_json()
            rule, signal, owner = _key(body, "rule"), _key(body, "signal"), _key(body, "owner")
            return {"beat": loop_state.beat(self.store, rule, signal, owner)}

        await self.go(go)


class RecoverHandler(_Handler):
    """POST {"rule", "signal", "reason"?, "user"?}: retry or abandon a signal; the signal
    as changed. 404 for an unknown signal, 409 when its state does not allow it."""

    async def post(self, action: str) -> None:
        def go() -> dict:
            body = self.body_json()
            rule, signal = _key(body, "rule"), _key(body, "signal")
            reason = _text(body.get("reason"), "reason")
            if action == "abandon":
                check_value(bool(reason and reason.strip()), "abandon needs a 'reason'")
            try:
                return loop_state.recover(self.store, rule, signal, action, self.who(body), reason)
            except LookupError as e:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", str(e)) from None
            except ValueError as e:
                raise HTTPError(409, "INVALID_STATE", str(e)) from None

        await self.go(go)


ROUTES = [
    (r"/api/v1/loop/signals/take-back", TakeBackHandler),
    (r"/api/v1/loop/signals/beat", BeatHandler),
    (r"/api/v1/loop/signals/(retry|abandon)", RecoverHandler),
]


def openapi_paths(op: Any, obj: Any) -> dict[str, Any]:
    """This module's routes in the OpenAPI description (`op`, `obj`: openapi's helpers)."""
    s = {"type": "string"}
    key = {"type": "string", "minLength": 1, "maxLength": 1000}
    req = {"type": "string", "minLength": 1, "maxLength": 64, "description": "request key"}
    recover = obj({"rule": key, "signal": key, "reason": s, "user": s}, ["rule", "signal"])
    lease = {"type": "number", "minimum": 0, "exclusiveMinimum": True, "description": "seconds"}
    take = {"rule": key, "signal": key, "from_owner": key, "owner": key, "key": req}
    return {
        "/api/v1/loop/signals/take-back": {
            "post": op(
                "take a running signal from a dead watcher, or from one silent for longer than"
                " stale_after seconds (compare-and-set; write scope)",
                obj({**take, "stale_after": lease}, ["rule", "signal", "from_owner", "owner"]),
            )
        },
        "/api/v1/loop/signals/beat": {
            "post": op(
                "heartbeat of the watcher running a signal's chain (write scope)",
                obj({"rule": key, "signal": key, "owner": key}, ["rule", "signal", "owner"]),
            )
        },
        "/api/v1/loop/signals/retry": {
            "post": op("a running or failed signal's chain runs again (write scope)", recover)
        },
        "/api/v1/loop/signals/abandon": {
            "post": op("a running or waiting signal becomes failed (write scope)", recover)
        },
    }
