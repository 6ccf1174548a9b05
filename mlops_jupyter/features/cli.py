"""`mlops-jupyter features ...`: export feature views to other systems
(`features export --to-feast DIR [--view NAME ...]`)."""

from __future__ import annotations

import argparse

from ..cli_format import json_text, safe


def cmd_export(args: argparse.Namespace) -> int:
    """Write a Feast repository of the chosen (default: all) feature views."""
    from .feast_export import export_feast

    out = export_feast(args.to_feast, args.view, project=args.project)
    if args.json:
        print(json_text(out))
        return 0
    print(f"wrote a Feast repository to {safe(out['dir'])}: {', '.join(out['views'])}")
    print(f"next: cd {safe(out['dir'])} && feast apply")
    return 0


def add_parser(sub) -> None:
    """Register `features` and its subcommands."""
    f = sub.add_parser("features", help="feature views: export to Feast")
    fs = f.add_subparsers(dest="features_command", required=True)
    e = fs.add_parser(
        "export",
        help="write a Feast repository (feature_store.yaml, definitions, parquet copies)",
    )
    e.add_argument(
        "--to-feast",
        required=True,
        metavar="DIR",
        help="folder to write (new, empty, or an earlier export: re-exporting replaces it)",
    )
    e.add_argument(
        "--view",
        action="append",
        metavar="NAME[@VERSION]",
        help="a view to export (repeatable; default: the current version of each)",
    )
    e.add_argument("--project", default="mlops_jupyter", help="Feast project name")
    e.add_argument("--json", action="store_true", help="print what was written as JSON")
    e.set_defaults(func=cmd_export)
