"""`mlops-jupyter mlflow import --from URI` and `mlops-jupyter mlflow export --to URI`."""

from __future__ import annotations

import argparse
import sys


def cmd_import(args: argparse.Namespace) -> int:
    from . import import_runs
    from .common import redact

    c = import_runs(args.from_uri, args.experiment, quiet=args.quiet)
    print(
        f"imported {c['imported']} run(s), completed {c['completed']}, skipped "
        f"{c['skipped']} already imported; {c['points']} metric points, {c['artifacts']} "
        f"artifact file(s) from {redact(args.from_uri)}"
    )
    for why in c["refused"]:
        print(f"refused: {why}", file=sys.stderr)
    return 1 if c["refused"] else 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import export_runs
    from .common import redact

    c = export_runs(args.to_uri, args.experiment, quiet=args.quiet)
    print(
        f"exported {c['exported']} run(s), skipped {c['skipped']} already exported, redid "
        f"{c['redone']} interrupted; {c['points']} metric points, {c['artifacts']} artifact "
        f"file(s) to {redact(args.to_uri)}"
    )
    return 0


def add_parser(sub) -> None:
    """Register `mlflow import|export`."""
    p = sub.add_parser("mlflow", help="import runs from MLflow, or export ours to MLflow")
    msub = p.add_subparsers(dest="mlflow_command", required=True)
    i = msub.add_parser("import", help="bring runs from an MLflow tracking URI (idempotent)")
    i.add_argument(
        "--from",
        dest="from_uri",
        required=True,
        metavar="URI",
        help="sqlite:///mlflow.db, postgresql://..., an mlruns folder, or http://host:5000",
    )
    i.add_argument(
        "--experiment", "-e", action="append", help="only this MLflow experiment (repeatable)"
    )
    i.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    i.set_defaults(func=cmd_import)
    x = msub.add_parser("export", help="push our runs to an MLflow tracking URI (idempotent)")
    x.add_argument("--to", dest="to_uri", required=True, metavar="URI")
    x.add_argument("--experiment", "-e", action="append", help="only this experiment")
    x.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    x.set_defaults(func=cmd_export)
