"""`mlops-jupyter models ...`: list registered models, promote versions, show the audit log."""

from __future__ import annotations

from ..cli_format import json_text, use_store
from ..cli_format import table as _table


def _fmt_time(t) -> str:
    return "" if t is None else t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def cmd_ls(args) -> int:
    from . import versions

    use_store(args)
    df = versions(args.name)
    if args.json:
        out = df.with_columns((df["created"].dt.epoch("ms") / 1000).alias("created"))
        print(json_text(out.to_dicts()))
        return 0
    if df.is_empty():
        print("(no registered models: add one with mlops_jupyter.register_model(name, model))")
        return 0
    mcols = [c for c in df.columns if c.startswith("metrics.")][:3]
    rows = [
        [
            r["name"],
            str(r["version"]),
            r["stage"],
            r["aliases"] or "",
            r["flavor"],
            r["run_id"] or "",
            _fmt_time(r["created"]),
            r["created_by"] or "",
        ]
        + ["" if r[c] is None else f"{r[c]:.6g}" for c in mcols]
        for r in df.iter_rows(named=True)
    ]
    header = ["name", "version", "stage", "aliases", "flavor", "run", "created", "by"]
    print(_table(rows, header + [c[len("metrics.") :] for c in mcols]))
    return 0


def cmd_promote(args) -> int:
    from . import promote_model

    use_store(args)
    changes = promote_model(
        args.name, args.version, args.stage, args.reason, archive_existing=not args.keep_existing
    )
    for ch in changes:
        why = f"  ({ch['reason']})" if ch["reason"] else ""
        print(f"{args.name} v{ch['version']}: {ch['from']} -> {ch['to']}{why}")
    return 0


def cmd_history(args) -> int:
    from . import history

    use_store(args)
    df = history(args.name)
    if args.json:
        out = df.with_columns((df["time"].dt.epoch("ms") / 1000).alias("time"))
        print(json_text(out.to_dicts()))
        return 0
    rows = []
    for r in df.iter_rows(named=True):
        change = (
            f"{r['from_stage'] or ''} -> {r['to_stage']}"
            if r["action"] in ("transition", "register")
            else f"alias {r['alias']}"
        )
        rows.append(
            [
                _fmt_time(r["time"]),
                r["model"],
                "" if r["version"] is None else str(r["version"]),
                r["action"],
                change.strip(),
                r["reason"] or "",
                r["user"] or "",
            ]
        )
    print(_table(rows, ["time", "model", "version", "action", "change", "reason", "by"]))
    return 0


def cmd_alias(args) -> int:
    from . import remove_alias, set_alias

    use_store(args)
    if args.delete:
        prev = remove_alias(args.name, args.alias)
        print(f"{args.name}: alias {args.alias} removed (was v{prev})")
    else:
        if args.version is None:
            print("error: give VERSION, or --delete")
            return 2
        prev = set_alias(args.name, args.alias, args.version)
        moved = f" (was v{prev})" if prev else ""
        print(f"{args.name}: alias {args.alias} -> v{args.version}{moved}")
    return 0


def cmd_package(args) -> int:
    from ..serving.bentoml_pkg import package

    use_store(args)
    out = package(
        args.name,
        args.out,
        target=args.target,
        force=args.force,
        trusted=args.trusted,
        code=args.code,
        wheels=args.wheel,
    )
    print(f"{args.name}: {args.target} service written to {out} (build: cd {out} && bentoml build)")
    return 0


def add_parser(subparsers) -> None:
    """Register `models ls|promote|history|alias` on the main parser."""
    from . import STAGES

    p = subparsers.add_parser("models", help="model registry: list, promote, audit log")
    sub = p.add_subparsers(dest="models_command", required=True)
    ls = sub.add_parser("ls", help="list registered model versions")
    ls.add_argument("name", nargs="?", help="only this model")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)
    pr = sub.add_parser("promote", help="move a version to another stage")
    pr.add_argument("name")
    pr.add_argument("version", type=int)
    pr.add_argument("stage", choices=STAGES)
    pr.add_argument("--reason", help="why (kept in the audit log)")
    pr.add_argument(
        "--keep-existing",
        action="store_true",
        help="do not archive the current production version",
    )
    pr.set_defaults(func=cmd_promote)
    hi = sub.add_parser("history", help="audit log of registrations, transitions, aliases")
    hi.add_argument("name", nargs="?")
    hi.add_argument("--json", action="store_true")
    hi.set_defaults(func=cmd_history)
    al = sub.add_parser("alias", help="point an alias (e.g. champion) at a version")
    al.add_argument("name")
    al.add_argument("alias")
    al.add_argument("version", type=int, nargs="?")
    al.add_argument("--delete", action="store_true")
    al.set_defaults(func=cmd_alias)
    pk = sub.add_parser("package", help="write a model as a deployable service (BentoML)")
    pk.add_argument("name", help="NAME, NAME@stage, NAME@alias or NAME:version")
    pk.add_argument("--target", required=True, help="what to write: bentoml")
    pk.add_argument("--out", required=True, help="the folder to write (new or empty)")
    pk.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    pk.add_argument(
        "--trusted",
        action="store_true",
        help="estimators and callables: the service unpickles them in full",
    )
    pk.add_argument(
        "--code",
        action="append",
        metavar="PATH",
        help="a .py file or package folder the model needs, copied beside service.py",
    )
    pk.add_argument(
        "--wheel", action="append", metavar="WHL", help="a wheel to bundle (e.g. mlops-jupyter's)"
    )
    pk.set_defaults(func=cmd_package)
