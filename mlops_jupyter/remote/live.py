"""What the live monitor (widgets/monitor.py) and the sampler's metric alerts read, through a
tracking server's read routes instead of the store: the run's status, series counts, last
values and alert/throttle events from `GET /api/v1/runs/{id}/live` (one small request a
frame), and the new points of each grown series from the sidebar API's
`GET /mlops/api/v1/runs/{id}/metrics/{key}?since_step=` (only what is new)."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np

from .api import RemoteStore
from .client import ServerRefused

MAX_POINTS = 10_000  # the sidebar API's limit per series request
SIDEBAR = "/mlops/api/v1"


class RemoteSource:
    """The monitor's reads of run `uid` on the server of `store` (a RemoteStore)."""

    remote = True

    def __init__(self, store: RemoteStore, uid: str) -> None:
        self.store, self.uid = store, uid
        self._detail: dict[str, Any] | None = None
        self._last_step: dict[str, int | None] = {}

    def _get(self, path: str) -> Any:
        try:
            return self.store.client.request("GET", path)
        except ServerRefused as e:
            from .files import _refused

            raise _refused(self.store, e, "read runs") from None

    def detail(self, fresh: bool = True) -> dict[str, Any]:
        """The run's frame as `GET /api/v1/runs/{id}/live` answers it: status, each series'
        count and last value, alert/throttle events (read again unless fresh=False)."""
        if fresh or self._detail is None:
            self._detail = self._get(f"/api/v1/runs/{quote(self.uid, safe='')}/live")
        return self._detail

    def run_row(self) -> tuple[str, str, str]:
        """(id, name, status), as store/telemetry.run_rows gives them."""
        d = self.detail()
        return d["id"], d["name"], d["status"]

    def new_points(self, have: dict[str, int]) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
        """The user metrics' points since the caller last looked (store/telemetry.new_points):
        only series whose count grew are asked for, from their last step on."""
        out: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        for m in self.detail()["metrics"]:
            key, n = m["key"], int(m["count"])
            if key.startswith("sys/") or n <= have.get(key, 0):
                continue
            q: dict[str, Any] = {"max_points": MAX_POINTS}
            since = self._last_step.get(key)
            if since is not None:
                q["since_step"] = since
            path = f"{SIDEBAR}/runs/{quote(self.uid, safe='')}/metrics/{quote(key, safe='')}"
            s = self._get(f"{path}?{urlencode(q)}")
            steps = np.asarray(s["step"], dtype=np.int64)
            vals = np.asarray([math.nan if v is None else v for v in s["value"]], dtype=float)
            self._last_step[key] = s["last_step"]
            out[key] = (int(s["n"]), steps, vals)
        return out

    def latest_values(self) -> dict[str, float]:
        """The last value of each `sys/` series (from the frame's summary)."""
        return {
            m["key"]: (math.nan if m["last"] is None else float(m["last"]))
            for m in self.detail(fresh=False)["metrics"]
            if m["key"].startswith("sys/")
        }

    def list_events(self, kinds: tuple[str, ...]) -> list[tuple]:
        """The run's events of `kinds`, newest first, in store/telemetry.list_events' rows."""
        d = self.detail(fresh=False)
        evs = [e for e in d["events"] if e["kind"] in kinds]
        evs.sort(key=lambda e: e["start_time"], reverse=True)
        return [
            (
                None,
                d["id"],
                d["name"],
                e["kind"],
                e["level"],
                e["message"],
                e["start_time"],
                e["end_time"],
                e.get("data"),
                d["status"],
            )
            for e in evs
        ]
