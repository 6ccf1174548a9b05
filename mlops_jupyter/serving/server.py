"""`mlops-jupyter serve NAME[@stage|@alias|:version]`: serve a registry model over HTTP.

The version (or, with --split/--shadow, every version; see variants.py) is resolved once,
before anything starts (an unknown model, version, stage or
alias is a one-line error, exit 2), so every worker serves the same version even if the
stage moves meanwhile. The listening socket is bound once, then N worker processes are
forked that share it (the kernel spreads the connections); each loads the model and opens
the store itself, after the fork. The parent only supervises: it forwards SIGTERM/SIGINT
and restarts a worker that died (the tracking server's supervisor). Workers keep no state
of their own, so more machines can serve behind any load balancer."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from ..cli_format import number_in
from ..cli_format import positive_int as _positive
from ..errors import InvalidInputError

_wait_ms = number_in("milliseconds", lambda v: 0 <= v <= 10_000, "between 0 and 10000 ms")


def _window(text: str) -> float:
    from .monitor import parse_window

    try:
        return parse_window(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def resolve(spec: str) -> dict:
    """The registry entry `spec` names (raises ModelNotFoundError / InvalidInputError)."""
    from .model import parse_spec
    from .variants import find_version

    kw = parse_spec(spec)
    return find_version(kw.pop("name"), **kw)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket with Nagle off for every connection it accepts. (A socket
    made without proto=IPPROTO_TCP is skipped by asyncio's own TCP_NODELAY, and a response
    written as headers then body would wait for the client's delayed ACK: 40 ms.)"""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited on accept
        sock.bind(addr)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def cmd_serve(args) -> int:
    from ..remote.serving import serving_store
    from .live import serve_plan

    store = serving_store()  # the session's store, or a tracking server's routes
    if getattr(store, "remote_serving", False) and args.log_inputs:
        raise InvalidInputError(
            "--log-inputs needs a direct store (the raw rows go to its artifact store); "
            "over a tracking server the input profiles are stored without them"
        )
    if getattr(args, "features", None):  # unknown views or features: refused before listening
        from ..features.serving import FeatureFiller

        FeatureFiller(args.features, args.entity_key)
    # the stored layout (live.py) for a bare NAME; --split/--shadow store theirs
    plan, generation = serve_plan(store, args)
    location_note = store.location
    try:
        sock = bind(args.host, args.port)
    except OSError as e:
        raise InvalidInputError(f"cannot listen on {args.host}:{args.port}: {e}") from None
    if generation is not None and (args.split or args.shadow):
        from .live import store_plan

        generation = store_plan(store, plan)
    port = sock.getsockname()[1]
    n = args.workers
    print(
        f"mlops-jupyter serve: listening on http://{args.host}:{port} "
        f"({plan.describe()}, {n} worker{'s' if n != 1 else ''}, "
        f"store {location_note})",
        file=sys.stderr,
        flush=True,
    )
    # imported once here, before the fork: workers (and restarted ones) start without
    # importing them again each (no threads run yet, so forking after is safe)
    from . import app as _app  # noqa: F401

    if args.monitor_window:  # the drift check's scipy, once for all workers (monitor.py)
        from .monitor import preload

        preload(store, plan.model, plan.versions())

    if "torch" in plan.flavors:
        import torch  # noqa: F401
    if generation is not None:  # the canary controller, in a child process of its own
        from .live import start_controller

        start_controller(plan.model)
    if n > 1:
        from ..trackserver.cli import _fork

        _fork(n)  # returns in each worker; the parent supervises and exits there
    opts = {**vars(args), "plan": plan, "follow": generation is not None}
    run_worker(sock, args.model, plan.variants[0][1], {**opts, "generation": generation})
    return 0


def run_worker(sock: socket.socket, spec: str, version: int, opts: dict) -> None:
    """Serve on `sock` in this process until SIGTERM/SIGINT."""
    import uvicorn

    from ..remote.serving import serving_store
    from .app import make_app

    threads = opts.get("threads") or max(1, (os.cpu_count() or 1) // opts.get("workers", 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    store = serving_store()  # after the fork: this worker's own connections
    app = make_app(
        spec,
        version,
        store,
        max_batch=opts.get("max_batch", 64),
        max_wait_ms=opts.get("max_wait_ms", 5.0),
        trusted=opts.get("trusted", False),
        log=not opts.get("no_log", False),
        variant=opts.get("variant"),
        plan=opts.get("plan"),
        model_thread=opts.get("model_thread", False),
        monitor_window=opts.get("monitor_window", 60.0),
        monitor_rows=opts.get("monitor_rows"),
        log_inputs=opts.get("log_inputs", False),
        follow=opts.get("follow", False),
        generation=opts.get("generation"),
        features=opts.get("features"),
        entity_key=opts.get("entity_key"),
    )
    if opts.get("model_thread"):
        sys.setswitchinterval(0.0005)  # hand the GIL to the model thread sooner
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run(sockets=[sock])


def add_parser(sub) -> None:
    """Register `serve`."""
    p = sub.add_parser(
        "serve",
        help="serve a registry model over HTTP (JSON and Arrow; micro-batching)",
        description="Serve one version of a registered model (or a split of several "
        "versions, and a shadow): POST /predict, /feedback; "
        "GET /health, /ready, /openapi.json. Every prediction is logged to the store.",
    )
    p.add_argument("model", help="NAME, NAME@stage, NAME@alias or NAME:version")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 = any free port")
    p.add_argument("--workers", type=_positive, default=1, help="processes sharing the port")
    p.add_argument("--max-batch", type=_positive, default=64, help="rows per model call")
    p.add_argument(
        "--max-wait-ms",
        type=_wait_ms,
        default=5.0,
        help="longest time a request waits for others to join its batch",
    )
    p.add_argument("--threads", type=_positive, help="torch threads per worker")
    p.add_argument("--variant", help="variant name in the prediction log (default vN)")
    p.add_argument(
        "--split",
        help="serve several versions: 'v3=90,v4=10' (vN = version N, or a stage/alias); "
        "sticky by the X-User-Id header, else random per request",
    )
    p.add_argument(
        "--shadow",
        help="also run every request on this version after answering (vN, stage or alias); "
        "its answers are only logged (variant 'shadow:NAME')",
    )
    p.add_argument(
        "--trusted",
        action="store_true",
        help="allow full unpickling (estimators and callables you registered yourself)",
    )
    p.add_argument(
        "--model-thread",
        action="store_true",
        help="run the model in its own thread (large models; default: on the event loop)",
    )
    p.add_argument("--no-log", action="store_true", help="do not log predictions to the store")
    p.add_argument(
        "--monitor-window",
        type=_window,
        default=60.0,
        help="profile the answered inputs per window (e.g. 60s, 5m; 0 = off) and compare "
        "them with the model's training data",
    )
    p.add_argument("--monitor-rows", type=_positive, help="rows sampled per window (default 10000)")
    p.add_argument(
        "--log-inputs",
        action="store_true",
        help="also store each window's sampled raw input rows (Parquet); default: profiles only",
    )
    p.add_argument(
        "--features",
        help="feature references (view:feature,...) filled from the online store for "
        "requests that send entity ids instead (docs/features.md)",
    )
    p.add_argument(
        "--entity-key", help="the request field holding the entity id (default: the views')"
    )
    p.set_defaults(func=cmd_serve)
