"""Data versions and telemetry episodes over the tracking server, so a remote client's
`mj.version`, the data autolog of a run, `mj.get_version`/`mj.versions` and the telemetry
sampler's alert/throttle events work as on a local store.

The client fingerprints and profiles the data itself (the data never leaves it) and sends
only the record; the server writes it with the store's data functions (store/data.py):
- `POST /api/v1/data/versions {"record", "role"?, "run"?, "name"?}` stores the record once
  per fingerprint and links it to the run: a retried request stores nothing new (same
  fingerprint -> same version, one link per run, version and role).
- `GET /api/v1/data/versions?name=&limit=`, `GET /api/v1/data/versions/{ref}` and
  `GET /api/v1/data/profiled?fingerprint=` are the reads.
- `POST /api/v1/runs/{id}/events/{event}/end {"end", "data"?}` closes a telemetry episode
  (an UPDATE: repeating it changes nothing).
- `GET /api/v1/runs/{id}/live` is a live view's frame (remote/live.py: the live monitor and
  the metric alert rules): status, each series' count and last value, alert/throttle
  events."""

from __future__ import annotations

import json
from typing import Any

from ..store import data as dstore
from ..store import ingest as ing
from ..store import runs as rstore
from ..store import telemetry as tstore
from .app import BaseHandler, HTTPError, check_value

MAX_LIMIT = 10_000
_INT_FIELDS = ("n_rows", "n_cols", "size_bytes")
_TEXT_FIELDS = ("name", "source")


def _record(raw: Any) -> dict[str, Any]:
    """The checked version record of a request (the fields save_version reads)."""
    check_value(isinstance(raw, dict), "'record' must be an object")
    rec: dict[str, Any] = {}
    for k in ("id", "fingerprint", "kind"):
        v = raw.get(k)
        check_value(isinstance(v, str) and 0 < len(v) <= 200, f"record.{k} must be a string")
        rstore.check_text(v, f"record.{k}")
        rec[k] = v
    for k in _TEXT_FIELDS:
        v = raw.get(k)
        check_value(v is None or isinstance(v, str), f"record.{k} must be a string or null")
        if v is not None:
            rstore.check_text(v, f"record.{k}")
        rec[k] = v
    for k in _INT_FIELDS:
        v = raw.get(k)
        check_value(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63),
            f"record.{k} must be a non-negative integer or null",
        )
        rec[k] = v
    for k in ("schema", "profile"):
        v = raw.get(k)
        ok = v is None or (isinstance(v, list) and all(isinstance(x, dict) for x in v))
        check_value(ok, f"record.{k} must be a list of objects or null")
        rec[k] = v
    return rec


def _public(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def _version_id(store: Any, ref: str) -> int:
    try:
        return dstore.resolve_version(store, ref)
    except LookupError as e:
        raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", str(e)) from None


class VersionsHandler(BaseHandler):
    """GET ?name=&limit= -> {"versions": [...]}; POST a record -> {"version", "new"}."""

    async def get(self) -> None:
        def go() -> dict:
            name = self.get_query_argument("name", None)
            raw = self.get_query_argument("limit", "200")
            check_value(
                raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_LIMIT,
                f"limit: 1 to {MAX_LIMIT}",
            )
            return {"versions": dstore.list_versions(self.store, name, int(raw))}

        await self.handle(go)

    async def post(self) -> None:
        def go() -> dict:
            body = self.body_json()
            rec = _record(body.get("record"))
            role = body.get("role")
            check_value(role is None or role in dstore.ROLES, f"'role': one of {dstore.ROLES}")
            run, name = body.get("run"), body.get("name")
            check_value(run is None or isinstance(run, str) and run, "'run' must be a run id")
            check_value(name is None or isinstance(name, str), "'name' must be a string")
            # the run first: an unknown run is a 404 with nothing stored
            rid = rstore.resolve_run(self.store, run) if run is not None and role else None
            vrid, new = dstore.save_version(self.store, rec)
            if rid is not None:
                link = name or rec.get("name")
                dstore.link_version(self.store, rid, vrid, role, link, rec.get("source"))
                ing.beat(self.store, rid)
            return {"version": _public(dstore.get_version(self.store, vrid)), "new": new}

        await self.handle(go)


class VersionHandler(BaseHandler):
    """GET one version (id, id prefix, fingerprint or name) with its profile."""

    async def get(self, ref: str) -> None:
        def go() -> dict:
            return _public(dstore.get_version(self.store, _version_id(self.store, ref)))

        await self.handle(go)


class ProfiledHandler(BaseHandler):
    """GET ?fingerprint= -> {"profiled": bool} (the client skips profiling when true)."""

    async def get(self) -> None:
        def go() -> dict:
            fp = self.get_query_argument("fingerprint", "")
            check_value(0 < len(fp) <= 200, "'fingerprint' is required")
            return {"profiled": dstore.has_profile(self.store, fp)}

        await self.handle(go)


class EventEndHandler(BaseHandler):
    """POST {"end", "data"?}: set the end time (and final data) of one of the run's events."""

    async def post(self, uid: str, event: str) -> None:
        def go() -> dict:
            body = self.body_json()
            end = body.get("end")
            check_value(
                isinstance(end, (int, float)) and not isinstance(end, bool) and 0 <= end < 1e11,
                "'end' must be seconds since the epoch",
            )
            data = body.get("data")
            check_value(data is None or isinstance(data, dict), "'data' must be an object")
            check_value(
                event.isascii() and event.isdigit() and int(event) < 2**63,
                "the event id is a number",
            )
            rid = ing.run_by_uid(self.store, uid).rid
            rows = self.store.read(
                "SELECT 1 FROM run_events WHERE id=? AND run_id=?", (int(event), rid)
            )
            if not rows:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", f"no event {event} in run {uid}")
            tstore.close_event(self.store, int(event), float(end), data)
            return {}

        await self.handle(go)


class LiveHandler(BaseHandler):
    """GET: what a live view reads each frame (the run's row, each series' count and last
    value, its alert and throttle events), without the rest of the run's detail."""

    async def get(self, uid: str) -> None:
        def go() -> dict:
            rid = ing.run_by_uid(self.store, uid).rid
            _uid, name, status = tstore.run_rows(self.store, [rid])[rid]
            counts = tstore.metric_counts(self.store, rid, system=True)
            last = tstore.latest_values(self.store, rid, "")
            events = [
                {
                    "kind": r[3],
                    "level": r[4],
                    "message": r[5],
                    "start_time": r[6],
                    "end_time": r[7],
                    "data": json.loads(r[8]) if r[8] else None,
                }
                for r in tstore.list_events(self.store, [rid], LIVE_EVENTS)
            ]
            metrics = [
                {"key": k, "count": n, "last": _json_number(last.get(k))}
                for k, (_kid, n) in sorted(counts.items())
            ]
            return {"id": uid, "name": name, "status": status, "metrics": metrics, "events": events}

        await self.handle(go)


LIVE_EVENTS = ("alert", "throttle")


def _json_number(v: Any) -> float | None:
    return None if v is None or v != v or v in (float("inf"), float("-inf")) else v


ROUTES = [
    (r"/api/v1/runs/([^/]+)/live", LiveHandler),
    (r"/api/v1/data/versions", VersionsHandler),
    (r"/api/v1/data/versions/([^/]+)", VersionHandler),
    (r"/api/v1/data/profiled", ProfiledHandler),
    (r"/api/v1/runs/([^/]+)/events/([^/]+)/end", EventEndHandler),
]

_OBJS = {"type": "array", "items": {"type": "object"}, "nullable": True}


def version_record(obj: Any) -> dict[str, Any]:
    """The OpenAPI schema of a data version's record (shared with the feature routes)."""
    text = {"type": "string", "nullable": True}
    count = {"type": "integer", "minimum": 0, "nullable": True}
    return obj(
        {
            "id": {"type": "string", "minLength": 1},
            "fingerprint": {"type": "string", "minLength": 1},
            "kind": {"type": "string", "minLength": 1},
            "name": text,
            "source": text,
            "n_rows": count,
            "n_cols": count,
            "size_bytes": count,
            "schema": _OBJS,
            "profile": _OBJS,
        },
        ["id", "fingerprint", "kind"],
    )


def openapi_paths(op: Any, obj: Any) -> dict[str, Any]:
    """This module's routes in the OpenAPI description (`op`, `obj`: openapi's helpers)."""
    record = version_record(obj)
    path_param = {"in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/api/v1/data/versions": {
            "get": op(
                "data versions, newest first (optionally those recorded under `name`)",
                params=[
                    {"name": "name", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                ],
            ),
            "post": op(
                "store a data version record once per fingerprint; link it to `run` as `role`",
                obj(
                    {
                        "record": record,
                        "role": {"type": "string", "enum": list(dstore.ROLES)},
                        "run": {"type": "string"},
                        "name": {"type": "string"},
                    },
                    ["record"],
                ),
            ),
        },
        "/api/v1/data/versions/{ref}": {
            "get": op(
                "one data version (id, id prefix, fingerprint or name) with its profile",
                params=[{"name": "ref", **path_param}],
            )
        },
        "/api/v1/data/profiled": {
            "get": op(
                "whether a version with this fingerprint is stored with its profile",
                params=[
                    {
                        "name": "fingerprint",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
        "/api/v1/runs/{id}/live": {
            "get": op(
                "a live view's frame: the run's status, each series' count and last value, "
                "its alert and throttle events",
                params=[{"name": "id", **path_param}],
            )
        },
        "/api/v1/runs/{id}/events/{event}/end": {
            "post": op(
                "set the end time (and final data) of an event of the run",
                obj(
                    {"end": {"type": "number", "minimum": 0}, "data": {"type": "object"}},
                    ["end"],
                ),
                params=[{"name": "id", **path_param}, {"name": "event", **path_param}],
            )
        },
    }
