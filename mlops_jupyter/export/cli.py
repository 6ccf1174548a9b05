"""`mlops-jupyter export NOTEBOOK.ipynb -o DIR [--target python|airflow|prefect]`."""

from __future__ import annotations

import argparse
import sys


def cmd_export(args: argparse.Namespace) -> int:
    """Export a notebook to a pipeline package and print what was written."""
    from .. import tracking
    from . import export_notebook

    if getattr(args, "store", None):
        tracking.set_store(args.store)
    res = export_notebook(
        args.notebook,
        args.output,
        args.target,
        source_run=args.source_run,
        experiment=args.experiment,
        overwrite=args.overwrite,
    )
    print(res.summary())
    if res.warnings:
        print(f"{len(res.warnings)} warning(s), see above", file=sys.stderr)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the `export` subcommand."""
    p = subparsers.add_parser(
        "export",
        help="turn a notebook into a pipeline (python -m DIR, an Airflow DAG or a Prefect flow)",
        description=(
            "Cells become stages (cell tags stage=NAME / skip / parameters, else markdown "
            "headings); stage inputs and outputs come from the code. The result runs with "
            "`python -m DIR [--param NAME=VALUE ...]`, caches stages and tracks its runs."
        ),
    )
    p.add_argument("notebook", help="the .ipynb file")
    p.add_argument(
        "-o", "--output", help="package folder to write (default: <notebook>_pipeline beside it)"
    )
    p.add_argument(
        "--target",
        choices=["python", "airflow", "prefect"],
        default="python",
        help="python: a package run with python -m DIR (default); airflow: also an Airflow DAG; "
        "prefect: also a Prefect 3 flow",
    )
    p.add_argument(
        "--source-run", help="notebook run to link to (default: newest run of this notebook)"
    )
    p.add_argument(
        "--experiment", help="experiment of the pipeline runs (default: the source run's)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="write into a folder that is not an earlier export"
    )
    p.set_defaults(func=cmd_export)
    return p
