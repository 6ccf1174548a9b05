"""The ASGI application of one serving worker (Starlette): /predict, /feedback, /health,
/ready, /openapi.json, and the background logger writing every answer to the store.

Why Starlette + uvicorn rather than tornado (which the tracking server uses): the server is
mostly one hot route whose requests must be gathered into batches on one event loop, which
asyncio expresses directly; uvicorn is the ASGI server MLflow's and BentoML's scoring
servers run on, so a team deploying behind their usual proxy finds the same behaviour;
and both are small pure-Python packages (the `serve` extra), no C build needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import monitor as _monitor
from .signature import ARROW_TYPE, BadInput, describe, field_names, parse_arrow, parse_json

log = logging.getLogger("mlops_jupyter.serving")
MAX_BODY = 64 << 20
OUTPUT_CHARS = 256  # outputs kept in the log per request (compact)
# Rows a worker keeps while a tracking server cannot be reached; older ones are dropped
# and counted (GET /stats: log.dropped), so an outage never grows a worker without bound.
MAX_QUEUED = 100_000
SHADOW_BACKLOG = 256  # shadow requests in flight per worker; more are skipped (and logged)


class PredictionLog:
    """Prediction rows queued in memory and written to the store by a background thread in
    batches (every `interval` s, or sooner when many queue up), never on a request's path."""

    def __init__(self, store: Any, interval: float = 0.1) -> None:
        self.store = store
        self.interval = interval
        self.rows: deque = deque()
        self.written = 0
        self.failed = 0
        self.dropped = 0  # rows dropped while a tracking server was away (MAX_QUEUED)
        self.remote = bool(getattr(store, "remote_serving", False))
        self.max_queued = MAX_QUEUED
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mj-serve-log", daemon=True)
        self._thread.start()

    def add(self, row: tuple) -> None:
        self.rows.append(row)  # deque.append is atomic: no lock on the request path

    def flush(self) -> None:
        from ..store import serving as sstore

        while self.rows:
            batch = []
            while self.rows and len(batch) < 2000:
                batch.append(self.rows.popleft())
            try:
                if self.remote:  # over a tracking server: remote/serving.py
                    self.store.log_predictions(batch)
                else:
                    sstore.log_predictions(self.store, batch)
                self.written += len(batch)
            except Exception as e:  # keep serving; put the rows back for the next try
                self.failed += 1
                self.rows.extendleft(reversed(batch))
                if self.remote and len(self.rows) > self.max_queued:  # the server away long:
                    extra = len(self.rows) - self.max_queued  # drop the oldest, counted
                    for _ in range(extra):
                        self.rows.popleft()
                    self.dropped += extra
                log.warning("prediction log not written (will retry): %s", e)
                return

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
        self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class State:
    """What one worker serves: the variants (each loaded in a thread at start, with its own
    batcher), the router choosing one per request, and the log."""

    def __init__(self, spec: str, version: int, opts: dict[str, Any]) -> None:
        from .variants import Plan, Router

        self.spec, self.opts = spec, opts
        self.name = spec.split("@")[0].split(":")[0]
        plan = opts.get("plan") or Plan(
            self.name, [(opts.get("variant") or f"v{version}", version, 10_000)]
        )
        self.router = Router(plan)
        self.log: PredictionLog | None = None
        self.shadows: set[asyncio.Task] = set()
        self.worker = f"{os.uname().nodename}:{os.getpid()}"
        self.filler = None
        if opts.get("features"):  # requests may send entity ids: see features/serving.py
            from ..features.serving import FeatureFiller

            self.filler = FeatureFiller(opts["features"], opts.get("entity_key"))

    def row(self, rid: str, v: Any, t0: float, status: int, err, n, bsize, out_text) -> tuple:
        """A prediction log row (PREDICTION_COLS order) of variant `v`."""
        return (
            rid,
            self.name,
            v.version,
            v.name,
            time.time(),
            (time.perf_counter() - t0) * 1000,
            status,
            err,
            n,
            bsize,
            out_text[:OUTPUT_CHARS] if out_text else None,
            self.worker,
        )


def _error(status: int, message: str, rid: str | None = None) -> JSONResponse:
    headers = {"X-Request-Id": rid} if rid else None
    body: dict[str, Any] = {"error": message}
    if rid:
        body["request_id"] = rid
    return JSONResponse(body, status, headers=headers)


def make_app(spec: str, version: int, store: Any, **opts: Any) -> Starlette:
    """The app serving `version` of the model `spec` names (or the variants of
    `opts["plan"]`, a serving.variants.Plan), logging to `store`."""
    st = State(spec, version, opts)
    router = st.router

    async def startup() -> None:
        loop = asyncio.get_running_loop()
        st.log = PredictionLog(store) if opts.get("log", True) else None
        st.monitor = _monitor.start(store, st.name, st.worker, opts)  # input profiles

        async def load(v: Any) -> None:
            await loop.run_in_executor(None, v.load, opts.get("trusted", False))
            if v.predictor is not None:
                v.start_batcher(opts)
            v.loaded.set()

        st._load_tasks = [loop.create_task(load(v)) for v in router.all()]
        if opts.get("follow"):  # the layout stored for the model: see live.py
            from .live import follow

            st._follow = loop.create_task(follow(st, store, opts))

    async def shutdown() -> None:
        if getattr(st, "_follow", None) is not None:
            st._follow.cancel()
        if st.shadows:  # let shadow requests already started finish and be logged
            await asyncio.wait(list(st.shadows), timeout=5)
        for v in router.all():
            if v.batcher is not None:
                v.batcher.close()
        if st.log is not None:
            st.log.close()
        if getattr(st, "monitor", None) is not None:
            st.monitor.close()

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        variants = list(router.variants.values())
        if any(not v.loaded.is_set() for v in variants):
            return JSONResponse({"ready": False, "error": "model loading"}, 503)
        errors = router.errors()
        if len(errors) == len(variants):  # 503 only when no variant can answer
            err = (
                next(iter(errors.values()))
                if len(errors) == 1
                else "; ".join(f"{n}: {e}" for n, e in errors.items())
            )
            return JSONResponse({"ready": False, "error": err, "errors": errors}, 503)
        info = _model_info(st.name, router.control())
        info["variants"] = {v.name: v.status() for v in variants}
        if errors:
            info["errors"] = errors
        if router.shadow is not None:
            info["shadow"] = {router.shadow.name: router.shadow.status()}
        return JSONResponse(info)

    async def answering(v: Any) -> Any:
        """`v` once loaded, or the variant answering for it when it failed to load."""
        failed: set[str] = set()
        while True:
            if not v.loaded.is_set():
                await asyncio.wait_for(v.loaded.wait(), opts.get("load_timeout", 300))
            if v.error is None:
                return v
            failed.add(v.name)
            alt = router.fallback(failed)
            if alt is None:
                raise BadInput(f"model not loaded: {v.error}", 503)
            v = alt

    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        if len(rid) > 200:
            return _error(400, "X-Request-Id is longer than 200 characters")
        # sticky by user when the client says who it is, else a random split by request
        v = router.route(request.headers.get("x-user-id") or rid)
        batcher = v.batcher
        if batcher is not None:
            batcher.reading()
        counted = batcher is not None
        status, err, out_text, n, bsize = 200, None, None, None, None
        body, ctype = None, ""
        try:
            if v.batcher is None:
                v = await answering(v)
            body = await request.body()
            if len(body) > MAX_BODY:
                body = None
                raise BadInput(f"body over {MAX_BODY} bytes", 413)
            ctype = request.headers.get("content-type", "application/json").split(";")[0]
            if st.filler is not None and ctype != ARROW_TYPE:
                body = await _fill(st.filler, body, v.predictor)
            fields = _parse(body, ctype, v.predictor)
            n = len(next(iter(fields.values())))
            # a variant that was still loading had no batcher to count this request in
            was_reading, counted = counted, False
            out, bsize = await v.batcher.submit(fields, was_reading)
            if st.monitor is not None:  # references only; profiled in its own thread
                st.monitor.add(v.name, v.version, fields)
            out_text, dtype = _encode(out)
            body_out = (
                f'{{"predictions":{out_text},"dtype":{dtype},"model":{json.dumps(st.name)},'
                f'"version":{v.version},"variant":{json.dumps(v.name)},'
                f'"request_id":{json.dumps(rid)}}}'
            )
            return Response(
                body_out,
                200,
                media_type="application/json",
                headers={"X-Request-Id": rid},
                background=_shadow_task(body, ctype, rid, v),
            )
        except BadInput as e:
            status, err = e.status, str(e)
            out_body: dict[str, Any] = {"error": err, "request_id": rid}
            if e.status == 422:
                out_body["signature"] = v.predictor.signature if v.predictor else None
            return JSONResponse(
                out_body,
                e.status,
                headers={"X-Request-Id": rid},
                background=_shadow_task(body, ctype, rid, v),
            )
        except TimeoutError:
            status, err = 503, "model still loading"
            return _error(503, err, rid)
        except Exception as e:
            status, err = 500, f"{type(e).__name__}: {e}"
            log.exception("prediction failed")
            return _error(500, f"the model failed: {err}", rid)
        finally:
            if counted:
                batcher.read_done()
            if st.log is not None:
                st.log.add(st.row(rid, v, t0, status, err, n, bsize, out_text))

    def _shadow_task(body: bytes | None, ctype: str, rid: str, v: Any) -> Any:
        sv = router.shadow
        if sv is None or body is None or sv.version == v.version:
            return None  # no shadow, nothing read, or the request already ran on its version
        return BackgroundTask(start_shadow, sv, body, ctype, rid)

    async def start_shadow(sv: Any, body: bytes, ctype: str, rid: str) -> None:
        # its own task: the connection is free for the client's next request meanwhile
        if len(st.shadows) >= SHADOW_BACKLOG:  # a slow shadow must not pile up memory
            if st.log is not None:
                err = f"shadow skipped: {len(st.shadows)} shadow requests in flight"
                st.log.add(st.row(rid, sv, time.perf_counter(), 429, err, None, None, None))
            return
        task = asyncio.get_running_loop().create_task(shadow(sv, body, ctype, rid))
        st.shadows.add(task)  # a strong reference until it ends
        task.add_done_callback(st.shadows.discard)

    async def shadow(sv: Any, body: bytes, ctype: str, rid: str) -> None:
        """The request again on the shadow, after the answer was sent: only logged."""
        t0 = time.perf_counter()
        status, err, out_text, n, bsize = 200, None, None, None, None
        try:
            if not sv.loaded.is_set():
                await asyncio.wait_for(sv.loaded.wait(), opts.get("load_timeout", 300))
            if sv.error is not None:
                raise BadInput(f"model not loaded: {sv.error}", 503)
            fields = _parse(body, ctype, sv.predictor)  # against the shadow's own signature
            n = len(next(iter(fields.values())))
            out, bsize = await sv.batcher.submit(fields)
            out_text, _ = _encode(out)
        except BadInput as e:
            status, err = e.status, str(e)
        except TimeoutError:
            status, err = 503, "model still loading"
        except Exception as e:
            status, err = 500, f"{type(e).__name__}: {e}"
        if st.log is not None:
            st.log.add(st.row(rid, sv, t0, status, err, n, bsize, out_text))

    async def feedback(request: Request) -> Response:
        try:
            obj = json.loads(await request.body())
        except ValueError as e:
            return _error(400, f"body is not valid JSON: {e}")
        if not isinstance(obj, dict) or not isinstance(obj.get("request_id"), str):
            return _error(422, 'body must be {"request_id": str, "value": ...}')
        if "value" not in obj:
            return _error(422, "feedback needs a 'value'")
        from ..store import serving as sstore

        add = sstore.add_feedback
        if getattr(store, "remote_serving", False):  # over a tracking server
            add = type(store).add_feedback
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, add, store, obj["request_id"], obj["value"]
            )
        except Exception as e:
            return _error(503, f"feedback not stored: {e}")
        return JSONResponse({"stored": True, "request_id": obj["request_id"]})

    async def stats(request: Request) -> Response:
        per = {}
        for v in router.all():
            b = v.batcher
            per[v.name] = {
                "version": v.version,
                "model_calls": b.calls if b else 0,
                "rows": b.rows if b else 0,
                "max_batch_seen": b.max_seen if b else 0,
            }
        main = per[router.control().name]
        return JSONResponse(
            {
                "worker": st.worker,
                **{k: main[k] for k in ("model_calls", "rows", "max_batch_seen")},
                "variants": per,
                "log_written": st.log.written if st.log else 0,
                "log_queued": len(st.log.rows) if st.log else 0,
                "log_dropped": st.log.dropped if st.log else 0,
            }
        )

    async def openapi(request: Request) -> Response:
        from .openapi import spec as make_spec

        v = router.control()
        return JSONResponse(make_spec(st.name, v.version, v.predictor))

    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/invocations", predict, methods=["POST"]),  # MLflow's path
        Route("/feedback", feedback, methods=["POST"]),
        Route("/health", health),
        Route("/ready", ready),
        Route("/stats", stats),
        Route("/openapi.json", openapi),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await startup()
        try:
            yield
        finally:
            await shutdown()

    async def http_error(request: Request, exc: Exception) -> Response:
        # unknown paths and methods answer JSON like every other route
        code = getattr(exc, "status_code", 500)
        return _error(
            code, f"{getattr(exc, 'detail', 'error')}: {request.method} {request.url.path}"
        )

    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={404: http_error, 405: http_error}
    )
    app.state.serving = st
    return app


def _model_info(name: str, v: Any) -> dict[str, Any]:
    p = v.predictor
    return {
        "ready": True,
        "model": name,
        "version": v.version,
        "variant": v.name,
        "kind": p.kind,
        "signature": p.signature,
        "signature_text": describe(p.signature),
    }


async def _fill(filler: Any, body: bytes, predictor: Any) -> bytes:
    """The request with its online features filled (one batched read, off the loop)."""
    from ..errors import InvalidInputError
    from ..features.redis_store import OnlineStoreError

    sig = predictor.signature
    names = field_names(sig) if sig else None
    try:
        return await asyncio.get_running_loop().run_in_executor(None, filler.fill, body, names)
    except OnlineStoreError as e:
        raise BadInput(f"online features: {e}", 503) from None
    except InvalidInputError as e:
        raise BadInput(f"online features: {e}", 422) from None


def _parse(body: bytes, ctype: str, predictor: Any) -> dict[str, np.ndarray]:
    """The request's fields, checked against `predictor`'s signature (BadInput if not)."""
    sig, default = predictor.signature, predictor.default_dtype
    if ctype == ARROW_TYPE:
        return parse_arrow(body, sig, default)
    try:
        return parse_json(body, sig, default)
    except BadInput as e:
        if e.status == 400 and "json" not in ctype:  # e.g. curl's form default
            raise BadInput(f"Content-Type must be application/json or {ARROW_TYPE}", 415) from None
        raise


def _encode(out: Any) -> tuple[str, str]:
    """Predictions as JSON text and their dtype(s) as JSON text."""
    if isinstance(out, dict):
        parts = {k: _encode(v) for k, v in out.items()}
        text = "{" + ",".join(f"{json.dumps(k)}:{t}" for k, (t, _) in parts.items()) + "}"
        dt = "{" + ",".join(f"{json.dumps(k)}:{d}" for k, (_, d) in parts.items()) + "}"
        return text, dt
    if isinstance(out, tuple):
        parts2 = [_encode(v) for v in out]
        return "[" + ",".join(t for t, _ in parts2) + "]", "[" + ",".join(
            d for _, d in parts2
        ) + "]"
    a = np.asarray(out)
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        # JSON has no NaN/Infinity: send null, as MLflow does
        text = json.dumps(np.where(np.isfinite(a), a, None).tolist())
    else:
        text = json.dumps(a.tolist())
    return text, json.dumps("string" if a.dtype.kind in "USO" else str(a.dtype))
