"""`mlops-jupyter server`: run the tracking server; `server token add|ls|revoke`: its tokens.

Workers: the listening socket is bound once, then the process forks N workers that share
it (the kernel spreads connections); each worker opens the store itself, after the fork.
The parent only supervises: it forwards SIGTERM/SIGINT and restarts a worker that died."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import datetime

from ..cli_format import safe, table


def _store_location(args) -> str:
    from ..config import find_store_location

    loc = getattr(args, "server_store", None) or getattr(args, "store", None)
    return os.fspath(loc or find_store_location())


def _open(args):
    from ..store import open_store

    return open_store(_store_location(args))


def _fork(n: int) -> int | None:
    """Fork n workers; return the worker's index in a child. The parent supervises and exits
    when every worker has stopped."""
    children: dict[int, int] = {}
    stopping = False

    def spawn(i: int) -> int | None:
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            return i
        children[pid] = i
        return None

    for i in range(n):
        if spawn(i) is not None:
            return i

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        i = children.pop(pid, None)
        if i is None or stopping:
            continue
        print(f"mlops-jupyter server: worker {i} exited ({status}); restarting", file=sys.stderr)
        time.sleep(0.5)
        if spawn(i) is not None:
            return i
    sys.exit(0)


def _die_with_parent() -> None:
    # a worker must not outlive a supervisor killed with SIGKILL (Linux only)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def cmd_serve(args) -> int:
    import ssl

    import tornado.httpserver
    import tornado.ioloop
    import tornado.netutil

    from ..errors import InvalidInputError
    from .app import make_app

    if (args.certfile is None) != (args.keyfile is None):
        raise InvalidInputError("give both --certfile and --keyfile for TLS")
    ctx = None
    if args.certfile:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as e:
            raise InvalidInputError(f"cannot load --certfile/--keyfile: {e}") from None
    if args.artifacts:
        # store.artifacts reads it: every worker serves files from the same place
        os.environ["MLOPS_JUPYTER_ARTIFACTS"] = args.artifacts
    location = _store_location(args)
    try:
        sockets = tornado.netutil.bind_sockets(args.port, args.host)
    except OSError as e:
        raise InvalidInputError(f"cannot listen on {args.host}:{args.port}: {e}") from None
    port = sockets[0].getsockname()[1]
    scheme = "https" if ctx else "http"
    print(
        f"mlops-jupyter server: {scheme}://{args.host}:{port} ({args.workers} worker"
        f"{'s' if args.workers != 1 else ''})",
        file=sys.stderr,
        flush=True,
    )
    if args.workers > 1:
        _fork(args.workers)
    from ..store import open_store

    store = open_store(location)  # after the fork: each worker has its own connections
    app = make_app(store, max_body=args.max_body_mb << 20, max_upload=args.max_upload_mb << 20)
    server = tornado.httpserver.HTTPServer(
        app, ssl_options=ctx, xheaders=True, max_body_size=app.settings["max_wire"] + (1 << 20)
    )
    server.add_sockets(sockets)
    loop = tornado.ioloop.IOLoop.current()

    def stop(signum, frame) -> None:
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"mlops-jupyter server: ready on port {port} (pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    loop.start()
    server.stop()
    return 0


def _when(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def cmd_token_add(args) -> int:
    from ..store import tokens

    expires = tokens.parse_duration(args.expires) if args.expires else None
    secret = tokens.add(_open(args), args.name, args.scope, expires)
    print(secret)
    print(
        f"token {safe(args.name)} ({args.scope}) created; it is shown only once",
        file=sys.stderr,
    )
    return 0


def cmd_token_ls(args) -> int:
    from ..store import tokens

    rows = tokens.list_tokens(_open(args))
    if args.json:
        from ..cli_format import json_text

        print(json_text(rows))
        return 0
    if not rows:
        print("no tokens")
        return 0
    cells = [
        [
            safe(r["name"]),
            r["scope"],
            _when(r["created"]),
            ("expired " if r["expired"] else "") + (_when(r["expires"]) or "never"),
            _when(r["last_used"]),
        ]
        for r in rows
    ]
    print(table(cells, ["name", "scope", "created", "expires", "last used"]))
    return 0


def cmd_token_revoke(args) -> int:
    from ..store import tokens

    if not tokens.revoke(_open(args), args.name):
        print(f"no token named {safe(args.name)}", file=sys.stderr)
        return 1
    print(f"revoked {safe(args.name)}")
    return 0


def _store_arg(p, default: object = None) -> None:
    p.add_argument(
        "--store",
        dest="server_store",
        metavar="URL",
        default=default,
        help="store (SQLite path or postgresql:// URL; default: --store before the command, "
        "MLOPS_JUPYTER_STORE or the nearest .mlops/)",
    )


def add_parser(sub) -> None:
    """Register `server` and `server token add|ls|revoke`."""
    p = sub.add_parser(
        "server",
        help="run the tracking server (our API and MLflow's); manage its tokens",
        description="A standalone tracking server for remote jobs and MLflow clients. "
        "Stateless: all state is in the store and the artifact store.",
    )
    _store_arg(p)
    p.add_argument("--artifacts", metavar="URL", help="artifact store (folder or s3:// ...)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    p.add_argument("--certfile", help="TLS certificate (PEM)")
    p.add_argument("--keyfile", help="TLS private key (PEM)")
    p.add_argument("--max-body-mb", type=int, default=16, help="JSON body limit (413 over)")
    p.add_argument("--max-upload-mb", type=int, default=5 << 10, help="artifact file limit")
    p.set_defaults(func=cmd_serve)
    ts = p.add_subparsers(dest="server_command")
    t = ts.add_parser("token", help="API tokens: add, ls, revoke")
    tt = t.add_subparsers(dest="token_command", required=True)
    a = tt.add_parser("add", help="create a token (printed once)")
    a.add_argument("name")
    a.add_argument("--scope", choices=["read", "write", "admin"], required=True)
    a.add_argument("--expires", metavar="DURATION", help="e.g. 30d, 12h (default: never)")
    _store_arg(a, argparse.SUPPRESS)  # keep `server --store X token ...`
    a.set_defaults(func=cmd_token_add)
    ls = tt.add_parser("ls", help="list tokens (never their secrets)")
    ls.add_argument("--json", action="store_true")
    _store_arg(ls, argparse.SUPPRESS)  # keep `server --store X token ...`
    ls.set_defaults(func=cmd_token_ls)
    r = tt.add_parser("revoke", help="delete a token")
    r.add_argument("name")
    _store_arg(r, argparse.SUPPRESS)  # keep `server --store X token ...`
    r.set_defaults(func=cmd_token_revoke)
