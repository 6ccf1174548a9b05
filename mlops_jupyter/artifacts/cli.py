"""`mlops-jupyter artifacts ls|get|where|gc`: a run's stored files, downloading one (its
hash verified), where artifacts live, and finding objects no run references."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..cli_format import json_text, safe, table

GC_HELP = """\
List stored objects no row of the tracking store references, and with --delete remove
them: blobs under artifacts/ whose digest no run artifact or logged media names, model
folders under models/ that no registered model version names, and uploads that were
started and never completed (a process killed mid-upload). Without --delete nothing is
removed (a dry run). Objects younger than --older-than hours (default 24) are always
kept, so an upload whose row is not written yet is safe.

Checkpoints (checkpoints/) and pipeline stage caches are not referenced by rows and are
left alone. Run gc with the store that owns the artifact location: objects of another
store sharing the same location would look unreferenced."""


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _age(t: float, now: float) -> str:
    h = max(0.0, now - t) / 3600
    return f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} d"


def _hours(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of hours, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def _store():
    from ..tracking.api import current_store

    return current_store()


def _run_files(ref: str) -> tuple[list[dict], object]:
    """(a run's artifact rows: name, size, digest; fetch(row, dest) -> bytes written,
    verified) from the store, or over a tracking server through its artifact routes."""
    from ..tracking.api import remote_url

    if (url := remote_url()) is not None:
        import shutil

        from ..remote import data_more as rmore
        from ..remote import files
        from ..remote.api import remote_store

        rs = remote_store(url)
        uid = rmore.resolve_uid(rs, ref)
        arts = files._list(rs, uid)
        rows = [{"name": a["name"], "size": a["size"], "digest": a["sha256"]} for a in arts]

        def fetch(r: dict, dest: Path) -> int:
            shutil.copyfile(files.artifact_path(rs, uid, r["name"]), dest)  # verified copy
            return int(r["size"])

        return rows, fetch
    from ..store import artifact_refs as refs
    from ..store import runs as rstore

    st = _store()
    rows = refs.run_artifacts(st, rstore.resolve_run(st, ref))
    return rows, lambda r, dest: st.artifacts.get_blob(r["digest"], dest)


def cmd_ls(args) -> int:
    rows, _fetch = _run_files(args.run)
    if args.json:
        print(json_text(rows))
        return 0
    if not rows:
        print(f"(run {safe(args.run)} has no artifacts: log one with mj.log_artifact(path))")
        return 0
    print(
        table(
            [[r["name"], _size(r["size"]), r["digest"][:12]] for r in rows],
            ["name", "size", "digest"],
        )
    )
    return 0


def _targets(rows: list[dict], name: str, out: Path) -> list[tuple[dict, Path]]:
    """(row, destination) for artifact `name`: one file, or a logged folder's files."""
    exact = [r for r in rows if r["name"] == name]
    if exact:
        return [(exact[0], out)]
    inside = [r for r in rows if r["name"].startswith(name.rstrip("/") + "/")]
    base = name.rstrip("/") + "/"
    return [(r, out / r["name"][len(base) :]) for r in inside]


def cmd_get(args) -> int:
    from ..errors import ArtifactNotFoundError, InvalidInputError
    from .base import check_key

    rows, fetch = _run_files(args.run)
    out = Path(args.output) if args.output else Path(Path(args.name.rstrip("/")).name or "out")
    pairs = _targets(rows, args.name, out)
    if not pairs:
        known = ", ".join(safe(r["name"]) for r in rows[:10]) or "(none)"
        raise ArtifactNotFoundError(
            f"run {safe(args.run)} has no artifact {args.name!r}; it has: {known}"
        )
    for r, dest in pairs:
        if len(pairs) > 1:
            check_key(r["name"])  # a stored name can never write outside the output folder
        if dest.exists() and not args.force:
            raise InvalidInputError(f"{dest} exists; pass --force to overwrite it")
    total = 0
    for r, dest in pairs:
        dest.parent.mkdir(parents=True, exist_ok=True)
        total += fetch(r, dest)  # verified against the digest
        if len(pairs) == 1:
            print(f"wrote {safe(dest)} ({_size(r['size'])}, sha256 {r['digest'][:12]}, verified)")
    if len(pairs) > 1:
        print(f"wrote {len(pairs)} files into {safe(out)} ({_size(total)}, each verified)")
    return 0


def cmd_where(args) -> int:
    from ..config import redact_url

    st = _store()
    a = st.artifacts
    source = (
        "MLOPS_JUPYTER_ARTIFACTS" if os.environ.get("MLOPS_JUPYTER_ARTIFACTS") else "store folder"
    )
    where = {"location": redact_url(a.location), "kind": a.kind, "from": source}
    if args.json:
        print(json_text(where))
    else:
        print(f"{safe(where['location'])}  ({where['kind']}, from {where['from']})")
    return 0


def cmd_gc(args) -> int:
    from .gc import find_orphans, remove

    st = _store()
    a = st.artifacts
    now = time.time()
    report = find_orphans(st, a, grace_s=args.older_than * 3600, now=now)
    rows = [[o.kind, o.key, _size(o.size), _age(o.modified, now)] for o in report.orphans]
    if args.json and not args.delete:
        print(
            json_text(
                {
                    "location": a.location,
                    "orphans": [o.__dict__ for o in report.orphans],
                    "bytes": report.bytes,
                    "kept_recent": report.kept_recent,
                }
            )
        )
        return 0
    if rows:
        print(table(rows, ["kind", "key", "size", "age"]))
    recent = (
        f"; {report.kept_recent} unreferenced kept (younger than {args.older_than:g} h)"
        if report.kept_recent
        else ""
    )
    where = safe(a.location)
    if not args.delete:
        print(
            f"dry run: would remove {len(report.orphans)} unreferenced item(s), "
            f"{_size(report.bytes)}, from {where}{recent}. Pass --delete to remove them."
        )
        return 0
    n, size = remove(st, a, report)
    print(f"removed {n} unreferenced item(s), {_size(size)}, from {where}{recent}")
    return 0


def add_parser(sub) -> None:
    """Register `artifacts ls|get|where|gc`."""
    p = sub.add_parser("artifacts", help="list, download and garbage-collect stored artifacts")
    ss = p.add_subparsers(dest="artifacts_command", required=True)
    ls = ss.add_parser("ls", help="a run's artifacts: name, size, digest")
    ls.add_argument("run", metavar="RUN", help="run id, unique id prefix or name")
    ls.add_argument("--json", action="store_true", help="JSON (full digests) instead of a table")
    ls.set_defaults(func=cmd_ls)
    g = ss.add_parser(
        "get",
        help="download an artifact (or a logged folder), its hash verified",
        description="Download artifact NAME of RUN (or every file of a logged folder NAME) "
        "from the artifact store; the bytes are checked against the stored digest.",
    )
    g.add_argument("run", metavar="RUN", help="run id, unique id prefix or name")
    g.add_argument("name", metavar="NAME", help="artifact name (as `artifacts ls` shows it)")
    g.add_argument("-o", "--output", metavar="PATH", help="where to write (default: ./NAME)")
    g.add_argument("--force", action="store_true", help="overwrite an existing file")
    g.set_defaults(func=cmd_get)
    w = ss.add_parser("where", help="the artifact location in use (never a secret)")
    w.add_argument("--json", action="store_true", help="JSON instead of text")
    w.set_defaults(func=cmd_where)
    gc = ss.add_parser(
        "gc",
        help="find objects no run references (dry run; --delete removes them)",
        description=GC_HELP,
    )
    gc.add_argument("--delete", action="store_true", help="remove what is listed")
    gc.add_argument(
        "--older-than",
        type=_hours,
        default=24.0,
        metavar="HOURS",
        help="grace period: keep anything younger than this (default 24)",
    )
    gc.add_argument("--json", action="store_true", help="JSON instead of text (dry run only)")
    gc.set_defaults(func=cmd_gc)
