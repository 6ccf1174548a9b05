"""Our JSON API under /api/v1: experiments, runs, params, tags, metric points, ending runs,
and batched idempotent ingest (many runs and keys per request, each chunk named by run,
key and sequence number so a retried request never duplicates a point)."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import numpy as np

from .. import config
from ..store import api_queries as aq
from ..store import ingest as ing
from ..store import runs as rstore
from . import cells as capture
from .app import BaseHandler, HTTPError, check_value

MAX_CHUNKS = 10_000  # per request
_I64 = 2**63 - 1


def _field(obj: dict, name: str, kinds: type | tuple, required: bool = False, where: str = ""):
    v = obj.get(name)
    if v is None:
        check_value(not required, f"{where}{name!r} is required")
        return None
    ok = isinstance(v, kinds) and not (isinstance(v, bool) and bool not in _tuple(kinds))
    names = "/".join(k.__name__ for k in _tuple(kinds))
    check_value(ok, f"{where}{name!r} must be {names}, got {type(v).__name__}")
    return v


def _tuple(k: type | tuple) -> tuple:
    return k if isinstance(k, tuple) else (k,)


def _mapping(obj: dict, name: str, where: str = "") -> dict[str, Any] | None:
    d = _field(obj, name, dict, where=where)
    if d is not None:
        check_value(all(isinstance(k, str) and k for k in d), f"{where}{name} keys: strings")
    return d


def numbers(raw: Any, what: str) -> np.ndarray:
    """A JSON list of numbers (null = NaN) as float64; 400 for anything else."""
    check_value(isinstance(raw, list), f"{what} must be a list of numbers")
    arr = np.asarray(raw) if raw else np.empty(0)
    if arr.ndim == 1 and arr.dtype.kind in "fi":
        return arr.astype(np.float64)
    out = np.empty(len(raw), np.float64)
    for i, v in enumerate(raw):
        if v is None:
            out[i] = np.nan
            continue
        check_value(
            isinstance(v, (int, float)) and not isinstance(v, bool),
            f"{what}[{i}] must be a number or null, got {type(v).__name__}",
        )
        try:
            out[i] = float(v)
        except OverflowError:
            raise HTTPError(
                400, "INVALID_PARAMETER_VALUE", f"{what}[{i}] is out of range"
            ) from None
    return out


def integers(raw: Any, what: str, n: int) -> np.ndarray:
    """A JSON list of n steps (0 <= step < 2**63)."""
    check_value(isinstance(raw, list) and len(raw) == n, f"{what} must be a list of {n} integers")
    arr = np.asarray(raw) if raw else np.empty(0, np.int64)
    check_value(
        arr.ndim == 1 and arr.dtype.kind in "iu" and (n == 0 or int(arr.min()) >= 0),
        f"{what} must hold integers from 0 to 2**63-1",
    )
    return arr.astype(np.int64)


def timestamps_ms(raw: Any, what: str, n: int) -> np.ndarray:
    """Seconds since the epoch (list of n, or None = now) as int64 milliseconds."""
    if raw is None:
        return np.full(n, int(time.time() * 1000), np.int64)
    ts = raw if isinstance(raw, np.ndarray) else numbers(raw, what)
    check_value(len(ts) == n, f"{what} must have {n} entries")
    check_value(
        bool(np.all(np.isfinite(ts))) and (n == 0 or (ts.min() >= 0 and ts.max() < 1e11)),
        f"{what} must be seconds since the epoch",
    )
    return (ts * 1000).astype(np.int64)


def parse_chunk(rid: int, obj: Any, where: str, need_seq: bool) -> ing.Chunk:
    """One {"key", "seq", "values", "steps"?, "timestamps"?} object."""
    check_value(isinstance(obj, dict), f"{where} must be an object")
    key = _field(obj, "key", str, True, where + ".")
    check_value(bool(key.strip()), f"{where}.key must not be empty")
    rstore.check_text(key, "metric key")
    seq = _field(obj, "seq", int, need_seq, where + ".")
    check_value(seq is None or 0 <= seq <= _I64, f"{where}.seq must be 0 to 2**63-1")
    if "values_b64" in obj:
        values = packed(obj["values_b64"], "<f8", f"{where}.values_b64")
    else:
        values = numbers(obj.get("values"), f"{where}.values")
    n = len(values)
    if "steps_b64" in obj:
        steps_a = packed(obj["steps_b64"], "<i8", f"{where}.steps_b64")
        check_value(len(steps_a) == n, f"{where}.steps_b64 must hold {n} steps")
        check_value(n == 0 or int(steps_a.min()) >= 0, f"{where}.steps_b64: steps must be >= 0")
    else:
        steps = obj.get("steps")
        steps_a = None if steps is None else integers(steps, f"{where}.steps", n)
    if "timestamps_ms_b64" in obj:
        # exact int64 milliseconds (imports): float seconds may round a millisecond away
        ts = packed(obj["timestamps_ms_b64"], "<i8", f"{where}.timestamps_ms_b64")
        check_value(
            len(ts) == n and (n == 0 or (int(ts.min()) >= 0 and int(ts.max()) < 10**14)),
            f"{where}.timestamps_ms_b64 must hold {n} milliseconds since the epoch",
        )
    elif "timestamps_b64" in obj:
        raw_ts = packed(obj["timestamps_b64"], "<f8", f"{where}.timestamps_b64")
        check_value(len(raw_ts) == n, f"{where}.timestamps_b64 must hold {n} timestamps")
        ts = timestamps_ms(raw_ts, f"{where}.timestamps_b64", n)
    else:
        ts = timestamps_ms(obj.get("timestamps"), f"{where}.timestamps", n)
    return ing.Chunk(rid, key, seq, steps_a, ts, values)


def packed(raw: Any, dtype: str, what: str) -> np.ndarray:
    """Base64 of a little-endian array (float64 '<f8' or int64 '<i8'): what a client with
    numpy arrays sends instead of JSON number lists (no float formatting either side)."""
    check_value(isinstance(raw, str), f"{what} must be a base64 string")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", f"{what} is not valid base64") from None
    check_value(len(data) % 8 == 0, f"{what} must hold 8-byte {dtype} numbers")
    return np.frombuffer(data, dtype).astype(dtype[1:], copy=True)


def parse_points(rid: int, raw: Any) -> list[ing.Chunk]:
    """[{"key", "value", "step"?, "timestamp"?}] as one chunk per key (no seq)."""
    check_value(isinstance(raw, list), "points must be a list")
    by_key: dict[str, list] = {}
    for i, p in enumerate(raw):
        check_value(isinstance(p, dict), f"points[{i}] must be an object")
        key = _field(p, "key", str, True, f"points[{i}].")
        by_key.setdefault(key, []).append(p)
    out = []
    for key, pts in by_key.items():
        chunk = {
            "key": key,
            "values": [p.get("value") for p in pts],
            "timestamps": [p.get("timestamp", time.time()) for p in pts],
        }
        if all("step" in p for p in pts):
            chunk["steps"] = [p["step"] for p in pts]
        else:
            check_value(not any("step" in p for p in pts), f"{key}: give a step to all or none")
        out.append(parse_chunk(rid, chunk, f"points[{key!r}]", False))
    return out


def recorded_times(raw: Any, where: str) -> tuple[str, float, float | None] | None:
    """{"status", "start_time", "end_time"?}: the status and times another tracker
    recorded for a run (imports), in seconds since the epoch; None when absent."""
    if raw is None:
        return None
    check_value(isinstance(raw, dict), f"{where} must be an object")
    status = _field(raw, "status", str, True, where + ".")
    check_value(status in rstore.STATUSES, f"{where}.status must be one of {rstore.STATUSES}")
    start = _field(raw, "start_time", (int, float), True, where + ".")
    end = _field(raw, "end_time", (int, float), where=where + ".")
    for name, v in (("start_time", start), ("end_time", end)):
        check_value(v is None or 0 <= v < 1e11, f"{where}.{name} must be seconds since the epoch")
    return status, float(start), None if end is None else float(end)


class _RunHandler(BaseHandler):
    def rid(self, uid: str) -> int:
        return ing.run_by_uid(self.store, uid).rid


class ExperimentsHandler(BaseHandler):
    async def get(self) -> None:
        await self.handle(lambda: {"experiments": aq.experiments(self.store)})

    async def post(self) -> None:
        def go() -> dict:
            body = self.body_json()
            name = _field(body, "name", str, True)
            eid = ing.ensure_experiment(self.store, name)
            return {"id": eid, "name": name}

        await self.handle(go)


class RunsHandler(BaseHandler):
    async def get(self) -> None:
        def go() -> dict:
            try:
                limit = int(self.get_query_argument("limit", "100"))
                offset = int(self.get_query_argument("offset", "0"))
            except ValueError:
                raise HTTPError(400, "INVALID_PARAMETER_VALUE", "limit/offset: integers") from None
            return aq.list_runs(
                self.store,
                experiment=self.get_query_argument("experiment", None) or None,
                status=self.get_query_argument("status", None) or None,
                limit=limit,
                offset=offset,
            )

        await self.handle(go)

    async def post(self) -> None:
        def go() -> dict:
            body = self.body_json()
            exp = _field(body, "experiment", str) or "Default"
            name = _field(body, "name", str)
            params = _mapping(body, "params")
            tags = _mapping(body, "tags")
            host = _field(body, "host", str)
            parent = _field(body, "parent", str)
            pid = ing.run_by_uid(self.store, parent).rid if parent else None
            # the earlier attempt of the same notebook cell (%%mlops_run re-executed)
            prev = _field(body, "prev_run", str)
            prev_id = ing.run_by_uid(self.store, prev).rid if prev else None
            row = ing.create_run(
                self.store, exp, name, params, tags, host=host, parent_id=pid, prev_run_id=prev_id
            )
            return {"id": row.uid, "name": row.name, "experiment": row.experiment}

        await self.handle(go)


class RunHandler(_RunHandler):
    async def get(self, ref: str) -> None:
        # reads take what mj.get_run takes: an id, a unique id prefix or a run name
        await self.handle(lambda: aq.run_detail(self.store, rstore.resolve_run(self.store, ref)))


def _ipc(df: Any) -> dict:
    import io

    buf = io.BytesIO()
    df.write_ipc_stream(buf)
    return {"format": "arrow-ipc-stream", "data": base64.b64encode(buf.getvalue()).decode()}


class RunsFrameHandler(BaseHandler):
    """mj.runs() of the store, as an Arrow IPC stream (the exact columns and types)."""

    async def get(self) -> None:
        def go() -> dict:
            from ..store import query as q

            status = self.get_query_argument("status", None) or None
            check_value(status is None or status in rstore.STATUSES, f"status: {rstore.STATUSES}")
            system = self.get_query_argument("include_system", "false")
            check_value(system in ("true", "false"), "include_system: true or false")
            rstore.reconcile(self.store, config.stale_after())
            exp = self.get_query_argument("experiment", None)
            return _ipc(q.runs_frame(self.store, exp, status, system == "true"))

        await self.handle(go)


class MetricsFrameHandler(BaseHandler):
    """mj.metrics(): ?run=ID (repeated; none: every run), ?key=K (repeated; none: all)."""

    async def get(self) -> None:
        def go() -> dict:
            from ..store import query as q

            refs = self.get_query_arguments("run")
            if self.get_query_argument("none", None) == "true":
                rids: list[int] = []
            elif refs:
                rids = [rstore.resolve_run(self.store, r) for r in refs]
            else:
                rids = rstore.all_run_ids(self.store)
            keys: list[str] | None = self.get_query_arguments("key") or None
            if self.get_query_argument("nokeys", None) == "true":
                keys = []
            return _ipc(q.metrics_frame(self.store, rids, keys))

        await self.handle(go)


class MetricsHandler(_RunHandler):
    async def post(self, uid: str) -> None:
        def go() -> dict:
            body = self.body_json()
            rid = self.rid(uid)
            if "chunks" in body:
                raw = body["chunks"]
                check_value(isinstance(raw, list), "chunks must be a list")
                check_value(len(raw) <= MAX_CHUNKS, f"at most {MAX_CHUNKS} chunks a request")
                chunks = [parse_chunk(rid, c, f"chunks[{i}]", True) for i, c in enumerate(raw)]
            else:
                chunks = parse_points(rid, body.get("points"))
            n, dup = ing.append(self.store, chunks)
            return {"points": n, "duplicate_chunks": dup}

        await self.handle(go)


class KVHandler(_RunHandler):
    table = "params"

    async def post(self, uid: str) -> None:
        def go() -> dict:
            body = self.body_json()
            items = _mapping(body, self.table)
            check_value(items is not None, f"{self.table!r} (an object) is required")
            rid = self.rid(uid)
            rstore.set_kv(self.store, self.table, rid, items)
            ing.beat(self.store, rid)
            return {"updated": len(items)}

        await self.handle(go)


class TagsHandler(KVHandler):
    table = "tags"


class EndHandler(_RunHandler):
    async def post(self, uid: str) -> None:
        def go() -> dict:
            body = self.body_json()
            status = _field(body, "status", str) or "finished"
            check_value(status in rstore.ENDED, f"status must be one of {rstore.ENDED}")
            end = _field(body, "end_time", (int, float))
            ing.set_status(self.store, self.rid(uid), status, end)
            return {"id": uid, "status": status}

        await self.handle(go)


class IngestHandler(BaseHandler):
    """{"runs": [{"id", "params"?, "tags"?, "chunks"?: [...], "status"?, "recorded"?}]}:
    all applied in one transaction per request (params/tags first), chunks idempotently;
    "recorded" (imports: status and times as another tracker recorded them) last."""

    async def post(self) -> None:
        def go() -> dict:
            body = self.body_json()
            runs = body.get("runs")
            check_value(isinstance(runs, list), "'runs' must be a list")
            todo = []
            caps = []  # notebook capture records (cells.py), written with the params
            total = 0
            for i, r in enumerate(runs):
                where = f"runs[{i}]"
                check_value(isinstance(r, dict), f"{where} must be an object")
                uid = _field(r, "id", str, True, where + ".")
                rid = ing.run_by_uid(self.store, uid).rid
                params = _mapping(r, "params", where + ".")
                tags = _mapping(r, "tags", where + ".")
                raw = r.get("chunks") or []
                check_value(isinstance(raw, list), f"{where}.chunks must be a list")
                total += len(raw)
                check_value(total <= MAX_CHUNKS, f"at most {MAX_CHUNKS} chunks a request")
                chunks = [
                    parse_chunk(rid, c, f"{where}.chunks[{j}]", True) for j, c in enumerate(raw)
                ]
                status = _field(r, "status", str, where=where + ".")
                check_value(
                    status is None or status in rstore.ENDED,
                    f"{where}.status must be one of {rstore.ENDED}",
                )
                end = _field(r, "end_time", (int, float), where=where + ".")
                check_value(
                    end is None or 0 <= end < 1e11, f"{where}.end_time: seconds since the epoch"
                )
                rec = recorded_times(r.get("recorded"), where + ".recorded")
                todo.append((rid, params, tags, chunks, (status, end), rec))
                caps.append((rid, capture.parse(r, where + ".")))
            # everything is parsed and checked before the first write
            for rid, params, tags, *_ in todo:
                if params:
                    rstore.set_kv(self.store, "params", rid, params)
                if tags:
                    rstore.set_kv(self.store, "tags", rid, tags)
            for rid, cap in caps:
                if cap:
                    capture.apply(self.store, rid, cap)
            n, dup = ing.append(self.store, [c for t in todo for c in t[3]])
            for rid, _, _, _, (status, end), rec in todo:
                if status:
                    ing.set_status(self.store, rid, status, end)
                if rec:  # last: a run imported in parts shows its recorded end only when whole
                    rstore.set_recorded_times(self.store, rid, *rec)
            return {"points": n, "duplicate_chunks": dup, "runs": len(todo)}

        await self.handle(go)


ROUTES = [
    (r"/api/v1/experiments", ExperimentsHandler),
    (r"/api/v1/runs", RunsHandler),
    (r"/api/v1/runs/([^/]+)", RunHandler),
    (r"/api/v1/runs/([^/]+)/metrics", MetricsHandler),
    (r"/api/v1/runs/([^/]+)/params", KVHandler),
    (r"/api/v1/runs/([^/]+)/tags", TagsHandler),
    (r"/api/v1/runs/([^/]+)/end", EndHandler),
    (r"/api/v1/ingest", IngestHandler),
    (r"/api/v1/frames/runs", RunsFrameHandler),
    (r"/api/v1/frames/metrics", MetricsFrameHandler),
    *capture.ROUTES,
]
