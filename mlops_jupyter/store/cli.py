"""`mlops-jupyter store copy|info`: copy runs between stores (SQLite <-> PostgreSQL) and
show what a store holds."""

from __future__ import annotations

from ..cli_format import json_text, safe


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_copy(args) -> int:
    from ..config import redact_url
    from ..errors import StoreError
    from .copy import copy_runs
    from .db import open_existing, open_store

    # the source is only read: a mistyped SRC must be an error, never a new empty store
    src = open_existing(args.src)
    if src is None:
        shown = redact_url(args.src) if "://" in args.src else args.src
        raise StoreError(f"no store at {safe(shown)}: the source of a copy must exist")
    dst = open_store(args.dst)
    n = copy_runs(
        src,
        dst,
        experiment=args.experiment,
        progress=not args.no_progress,
        src_artifacts=args.src_artifacts,
        dst_artifacts=args.dst_artifacts,
    )
    rate = n["points"] / n["seconds"] if n["seconds"] > 0 else 0.0
    runs = f"{n['runs']} run" + ("" if n["runs"] == 1 else "s")
    print(
        f"copied {runs} ({n['skipped']} already there) from {safe(src.location)} "
        f"to {safe(dst.location)}: {n['points']} metric points, {n['artifacts']} artifacts, "
        f"{_size(n['bytes'])} of files in {n['seconds']:.2f}s ({rate:,.0f} points/s)"
    )
    return 0


def cmd_info(args) -> int:
    from ..tracking.api import current_store
    from .stats import store_info

    d = store_info(current_store())
    if args.json:
        print(json_text(d))
        return 0
    width = max(len(k) for k in d)
    for k, v in d.items():
        shown = _size(v) if k == "size_bytes" else str(v).lower() if isinstance(v, bool) else v
        print(f"{k.replace('_', ' '):<{width}}  {safe(shown)}")
    return 0


def add_parser(sub) -> None:
    """Register `store copy` and `store info`."""
    p = sub.add_parser("store", help="copy runs between stores; show what a store holds")
    ss = p.add_subparsers(dest="store_command", required=True)
    c = ss.add_parser(
        "copy",
        help="copy the runs of SRC that DST lacks (by run id): idempotent, both ways",
        description="Copy every run of SRC whose id DST does not have, with its params, "
        "tags, metrics, artifacts, events, cells, data versions, drift reports and model "
        "versions. SRC must exist; DST is created if needed. A store is a SQLite file or "
        "folder, or a postgresql:// URL.",
    )
    c.add_argument("src", metavar="SRC", help="store to copy from (must exist)")
    c.add_argument("dst", metavar="DST", help="store to copy into (created if missing)")
    c.add_argument("--experiment", "-e", help="only the runs of this experiment")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    for side, store in (("src", "SRC"), ("dst", "DST")):
        c.add_argument(
            f"--{side}-artifacts",
            metavar="WHERE",
            help=f"where {store}'s files are (a folder or an s3://, gs://, az:// URL); "
            "default: MLOPS_JUPYTER_ARTIFACTS when set, else the store's own folder",
        )
    c.set_defaults(func=cmd_copy)
    i = ss.add_parser("info", help="backend, location, schema version, counts and size")
    i.add_argument("--json", action="store_true", help="JSON instead of text")
    i.set_defaults(func=cmd_info)
