"""Drift reports, preflight checks, data lineage and run resolution over the tracking
server, so a remote client's `mj.drift`, `mj.data.drift_reports`, `mj.preflight`,
`mj.lineage(run)`, `mj.data.runs_for`, `mj.resolve_run`, `mj.alerts` (and the LLM evaluation's
regression alerts, through the run events route) work as on a local store.

The client computes (drift statistics, check verdicts) and sends only the result; the
server writes it with the store's functions (store/data.py, store/runs.py):
- `POST /api/v1/data/drift {"id", "reference", "current", "run"?, "n_columns", ...}`
  stores a drift report under the client's id (a retried request finds it and stores
  nothing new) and, with a run, the run's `drift` event (once per report).
- `GET /api/v1/data/drift?run=&limit=` lists reports, newest first.
- `POST /api/v1/runs/{ref}/preflight {"key", "level", "message", "data", "passed"}`
  records the preflight event (once per key) and the run's `preflight` tag.
- `GET /api/v1/data/lineage?run=` is a run's data lineage (default: the latest run);
  `GET /api/v1/data/versions/{ref}/runs` the runs that used or produced a version.
- `GET /api/v1/runs/{ref}/resolve` resolves an id, id prefix or name: {"id", "store_id"}.
- `GET /api/v1/alerts?run=&throttle=` lists alert/throttle events (mj.alerts).
- `GET /api/v1/notebook-run?path=` is a notebook's newest run (pipeline export's link).
Reads need scope read, writes scope write (BaseHandler)."""

from __future__ import annotations

import re
import time
from typing import Any

from ..store import data as dstore
from ..store import ingest as ing
from ..store import runs as rstore
from .app import BaseHandler, HTTPError, check_value
from .run_files import MAX_EVENT_KEY, add_event_once

MAX_LIMIT = 10_000
_REPORT_ID = re.compile(r"^[0-9a-f]{12}$")  # what store/data.save_drift makes
_MODES = ("raw", "profile")


def _strip(obj: Any) -> Any:
    """`obj` without the store's row ids (keys starting with '_'), recursively."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _run(store: Any, ref: Any) -> int:
    check_value(isinstance(ref, str) and 0 < len(ref) <= 200, "'run' must be a run id or name")
    rstore.check_text(ref, "run")
    return rstore.resolve_run(store, ref)  # RunNotFoundError -> 404


def _version(store: Any, ref: Any, what: str) -> int:
    check_value(isinstance(ref, str) and 0 < len(ref) <= 200, f"'{what}' must be a version id")
    rstore.check_text(ref, what)
    try:
        return dstore.resolve_version(store, ref)
    except LookupError as e:
        raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", str(e)) from None


def _count(body: dict, name: str) -> int:
    v = body.get(name)
    ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31
    check_value(ok, f"'{name}' must be a non-negative integer")
    return v


def _limit(h: BaseHandler) -> int:
    raw = h.get_query_argument("limit", "50")
    check_value(raw.isdigit() and 0 < int(raw) <= MAX_LIMIT, f"limit: 1 to {MAX_LIMIT}")
    return int(raw)


class DriftHandler(BaseHandler):
    """GET ?run=&limit= -> {"reports": [...]}; POST a report -> {"id", "new"}."""

    async def get(self) -> None:
        def go() -> dict:
            run = self.get_query_argument("run", None)
            rid = _run(self.store, run) if run is not None else None
            return {"reports": dstore.drift_reports(self.store, rid, _limit(self))}

        await self.handle(go)

    async def post(self) -> None:
        def go() -> dict:
            b = self.body_json()
            uid = b.get("id")
            check_value(isinstance(uid, str) and bool(_REPORT_ID.match(uid)), "'id': 12 hex digits")
            n_columns, n_drifted = _count(b, "n_columns"), _count(b, "n_drifted")
            check_value(n_drifted <= n_columns, "'n_drifted' must not exceed 'n_columns'")
            share = b.get("drift_share")
            check_value(
                isinstance(share, (int, float)) and not isinstance(share, bool) and 0 <= share <= 1,
                "'drift_share' must be a number in [0, 1]",
            )
            check_value(isinstance(b.get("dataset_drift"), bool), "'dataset_drift': a boolean")
            check_value(b.get("mode") in _MODES, f"'mode': one of {_MODES}")
            result = b.get("result")
            check_value(isinstance(result, dict), "'result' must be an object")
            # everything it points at first: an unknown run or version is a 404, nothing stored
            ref_rid = _version(self.store, b.get("reference"), "reference")
            cur_rid = _version(self.store, b.get("current"), "current")
            rid = _run(self.store, b["run"]) if b.get("run") is not None else None
            try:
                dstore.get_drift(self.store, uid)
                return {"id": uid, "new": False}  # a retry: stored already
            except LookupError:
                pass
            rec = {
                "uid": uid,
                "run_rid": rid,
                "ref_version_rid": ref_rid,
                "cur_version_rid": cur_rid,
                "n_columns": n_columns,
                "n_drifted": n_drifted,
                "drift_share": float(share),
                "dataset_drift": b["dataset_drift"],
                "mode": b["mode"],
                "result": result,
            }
            dstore.save_drift(self.store, rec)
            if rid is not None:
                self._event(rid, uid, ref_rid, cur_rid, rec)
            return {"id": uid, "new": True}

        await self.handle(go)

    def _event(self, rid: int, uid: str, ref_rid: int, cur_rid: int, rec: dict) -> None:
        # the same event a local mj.drift adds (data/compare.py), once per report
        rv = dstore.get_version(self.store, ref_rid)["id"]
        cv = dstore.get_version(self.store, cur_rid)["id"]
        level = "warning" if rec["dataset_drift"] else "info"
        msg = (
            f"data drift: {rec['n_drifted']}/{rec['n_columns']} columns drifted"
            f" (reference {rv}, current {cv})"
        )
        data = {"report": uid, "reference": rv, "current": cv, "share": rec["drift_share"]}
        add_event_once(
            self.store, rid, "drift:" + uid, ("drift", msg, level, data, time.time(), None)
        )
        ing.beat(self.store, rid)


class PreflightHandler(BaseHandler):
    """POST {"key", "level", "message", "data", "passed"}: the run's preflight event and tag."""

    async def post(self, ref: str) -> None:
        def go() -> dict:
            b = self.body_json()
            key = b.get("key")
            check_value(
                isinstance(key, str) and 0 < len(key) <= MAX_EVENT_KEY,
                f"'key': 1 to {MAX_EVENT_KEY} characters",
            )
            level = b.get("level")
            check_value(level in ("info", "warning", "error"), "'level': info, warning or error")
            msg = b.get("message")
            check_value(isinstance(msg, str) and bool(msg), "'message' must be a string")
            rstore.check_text(msg, "message")
            data = b.get("data")
            check_value(isinstance(data, dict), "'data' must be an object")
            check_value(isinstance(b.get("passed"), bool), "'passed' must be a boolean")
            rstore.check_text(key, "key")
            rid = _run(self.store, ref)
            eid = add_event_once(
                self.store, rid, key, ("preflight", msg, level, data, time.time(), None)
            )
            rstore.set_kv(
                self.store, "tags", rid, {"preflight": "passed" if b["passed"] else "failed"}
            )
            ing.beat(self.store, rid)
            return {"id": eid}

        await self.handle(go)


class LineageHandler(BaseHandler):
    """GET ?run= -> {"run", "inputs", "outputs"} (default: the latest run)."""

    async def get(self) -> None:
        def go() -> dict:
            from ..data.graph import lineage_parts

            run = self.get_query_argument("run", None)
            if run is not None:
                rid = _run(self.store, run)
            else:
                latest = dstore.latest_run(self.store)
                if latest is None:
                    raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", "no runs in the store yet")
                rid = latest
            info, inputs, outputs = lineage_parts(self.store, rid)
            return _strip({"run": info, "inputs": inputs, "outputs": outputs})

        await self.handle(go)


class VersionRunsHandler(BaseHandler):
    """GET -> {"runs": [...]}: runs that used or produced the version (id, prefix, name)."""

    async def get(self, ref: str) -> None:
        def go() -> dict:
            vid = _version(self.store, ref, "version")
            return {"runs": _strip(dstore.runs_for_version(self.store, vid))}

        await self.handle(go)


class ResolveHandler(BaseHandler):
    """GET -> {"id", "store_id"}: a run id, unique id prefix or name resolved (latest)."""

    async def get(self, ref: str) -> None:
        def go() -> dict:
            rid = _run(self.store, ref)
            return {"id": rstore.run_uid(self.store, rid), "store_id": rid}

        await self.handle(go)


class AlertsHandler(BaseHandler):
    """GET ?run=&run=&throttle= -> {"events": [[id, run uid, run name, kind, level, message,
    start, end, data JSON, run status], ...]} (store/telemetry.list_events), newest first."""

    async def get(self) -> None:
        def go() -> dict:
            from ..store import telemetry as tstore

            refs = self.get_query_arguments("run")
            check_value(len(refs) <= 1000, "at most 1000 runs")
            rids = [_run(self.store, r) for r in refs] if refs else None
            throttle = self.get_query_argument("throttle", "true")
            check_value(throttle in ("true", "false"), "'throttle': true or false")
            kinds = ("alert", "throttle") if throttle == "true" else ("alert",)
            return {"events": [list(r) for r in tstore.list_events(self.store, rids, kinds)]}

        await self.handle(go)


class NotebookRunHandler(BaseHandler):
    """GET ?path= -> {"id", "experiment"} of the newest top-level run recorded for a
    notebook file (tag notebook.path), finished first; 404 when it has none."""

    async def get(self) -> None:
        def go() -> dict:
            from ..store import pipeline as pstore

            path = self.get_query_argument("path", "")
            check_value(0 < len(path) <= 4096, "'path' is required (the notebook's path)")
            rstore.check_text(path, "path")
            found = pstore.notebook_run(self.store, path)
            if found is None:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", f"no run of notebook {path!r}")
            return {"id": found[0], "experiment": found[1]}

        await self.handle(go)


ROUTES = [
    (r"/api/v1/alerts", AlertsHandler),
    (r"/api/v1/notebook-run", NotebookRunHandler),
    (r"/api/v1/data/drift", DriftHandler),
    (r"/api/v1/data/lineage", LineageHandler),
    (r"/api/v1/data/versions/([^/]+)/runs", VersionRunsHandler),
    (r"/api/v1/runs/([^/]+)/preflight", PreflightHandler),
    (r"/api/v1/runs/([^/]+)/resolve", ResolveHandler),
]
