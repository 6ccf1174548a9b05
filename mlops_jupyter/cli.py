"""`mlops-jupyter` command line: runs, show, metrics (+ subcommands contributed by features)."""

from __future__ import annotations

import argparse
import importlib
import sys
from datetime import datetime

from .cli_format import json_text, num, require_store, safe, table, use_store
from .cli_format import positive_int as _positive
from .errors import MlopsJupyterError

# Features add subcommands from their own module: `add_parser(subparsers)` registering a
# parser whose `func(args) -> int` does the work. Missing modules are skipped.
SUBCOMMAND_MODULES = (
    "mlops_jupyter.export.cli",
    "mlops_jupyter.registry.cli",
    "mlops_jupyter.data.cli",
    "mlops_jupyter.store.cli",
    "mlops_jupyter.artifacts.cli",
    "mlops_jupyter.hpo.cli",
    "mlops_jupyter.trackserver.cli",
    "mlops_jupyter.mlflowio.cli",
    "mlops_jupyter.serving.server",
    "mlops_jupyter.serving.rollout_cli",
    "mlops_jupyter.loop.cli",
    "mlops_jupyter.loop.card_cli",
    "mlops_jupyter.loop.watch",
    "mlops_jupyter.features.cli",
)


# Subcommands that only read: they must find an existing store, never create one.
READ_COMMANDS = {
    "mlops_jupyter.cli.cmd_runs",
    "mlops_jupyter.cli.cmd_show",
    "mlops_jupyter.cli.cmd_metrics",
    "mlops_jupyter.data.cli.cmd_ls",
    "mlops_jupyter.data.cli.cmd_show",
    "mlops_jupyter.data.cli.cmd_lineage",
    "mlops_jupyter.registry.cli.cmd_ls",
    "mlops_jupyter.registry.cli.cmd_history",
    "mlops_jupyter.registry.cli.cmd_package",
    "mlops_jupyter.store.cli.cmd_info",
    "mlops_jupyter.artifacts.cli.cmd_ls",
    "mlops_jupyter.artifacts.cli.cmd_get",
    "mlops_jupyter.artifacts.cli.cmd_where",
    "mlops_jupyter.artifacts.cli.cmd_gc",
    "mlops_jupyter.mlflowio.cli.cmd_export",
    "mlops_jupyter.serving.rollout_cli.cmd_show",
    "mlops_jupyter.loop.cli.cmd_gates",
    "mlops_jupyter.features.cli.cmd_export",
    "mlops_jupyter.loop.card_cli.cmd_card",
    "mlops_jupyter.loop.card_cli.cmd_lineage",
    "mlops_jupyter.loop.card_cli.cmd_audit",
}


def _fmt_time(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _tree_order(rows: list[dict]) -> list[tuple[dict, int]]:
    """Rows (newest first) with each child right under its parent: (row, depth). A child
    whose parent is not listed stays where it is, at depth 0."""
    listed = {r["id"] for r in rows}
    kids: dict[str, list[dict]] = {}
    for r in rows:
        if r["parent_id"] in listed:
            kids.setdefault(r["parent_id"], []).append(r)
    out: list[tuple[dict, int]] = []

    def visit(r: dict, depth: int) -> None:
        out.append((r, depth))
        for k in reversed(kids.get(r["id"], [])):  # children in the order they started
            visit(k, depth + 1)

    for r in rows:
        if r["parent_id"] not in listed:
            visit(r, 0)
    return out


def cmd_runs(args) -> int:
    from . import tracking

    df = tracking.runs(experiment=args.experiment, status=args.status)
    if args.last is not None:
        df = df.head(args.last)
    if args.json:
        out = df.with_columns(
            [(df[c].dt.epoch("ms") / 1000).alias(c) for c in ("start_time", "end_time")]
        )
        print(json_text(out.to_dicts()))
        return 0
    metric_cols = [c for c in df.columns if c.startswith("metrics.") and c.endswith(".last")][:4]
    header = ["id", "name", "parent", "experiment", "status", "start", "duration_s"] + [
        c[len("metrics.") : -len(".last")] for c in metric_cols
    ]
    rows = []
    for r, depth in _tree_order(list(df.iter_rows(named=True))):
        st = r["start_time"]
        # children are indented under their parent; the parent column names it anyway
        indent = "  " * (depth - 1) + "\u2514 " if depth else ""
        rows.append(
            [
                r["id"],
                indent + safe(r["name"] or ""),
                r["parent_id"] or "",
                r["experiment"],
                r["status"],
                st.astimezone().strftime("%Y-%m-%d %H:%M:%S") if st else "",
                f"{r['duration_s']:.1f}",
            ]
            + [num(r[c]) for c in metric_cols]
        )
    print(table(rows, header))
    if not rows:
        print("(no runs yet: start one with mlops_jupyter.start_run() or %%mlops_run)")
    return 0


def cmd_show(args) -> int:
    from . import tracking

    d = tracking.get_run(args.run)
    if args.json:
        print(json_text(d))
        return 0
    print(f"run {d['id']}  {safe(d['name'])}  [{d['status']}]")
    print(f"  experiment: {safe(d['experiment'])}   attempt: {d['attempt']}")
    print(
        f"  start: {_fmt_time(d['start_time'])}   end: {_fmt_time(d['end_time'])}   "
        f"duration: {d['duration_s']:.2f}s"
    )
    if d["parent_id"]:
        print(f"  parent: {d['parent_id']}")
    for title, mapping in (("params", d["params"]), ("tags", d["tags"])):
        print(f"{title}:" + ("" if mapping else " (none)"))
        for k, v in mapping.items():
            shown = json_text(v) if not isinstance(v, str) else v
            print(f"  {safe(k)} = {safe(shown)}")
    print("metrics:" + ("" if d["metrics"] else " (none)"))
    if d["metrics"]:
        rows = [
            [
                m["key"],
                str(m["count"]),
                num(m["last"]),
                num(m["min"]),
                num(m["max"]),
                str(m["last_step"]),
            ]
            for m in d["metrics"]
        ]
        for line in table(rows, ["key", "count", "last", "min", "max", "last_step"]).split("\n"):
            print("  " + line)
    print("artifacts:" + ("" if d["artifacts"] else " (none)"))
    for a in d["artifacts"]:
        print(f"  {safe(a['name'])}  {a['size']} bytes  sha256:{a['digest'][:12]}")
    if d["events"]:
        print("events:")
        for e in d["events"]:
            print(f"  [{safe(e['level'])}] {safe(e['kind'])}: {safe(e['message'])}")
    return 0


def cmd_metrics(args) -> int:
    from . import tracking

    tracking.get_run(args.run)  # clear error for an unknown run
    df = tracking.metrics(args.run, args.key)
    df = df.with_columns((df["ts"].dt.epoch("ms") / 1000).alias("ts"))
    if df.is_empty():
        print(f"run {safe(args.run)} has no metric {safe(repr(args.key))}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json_text(df.select("step", "ts", "value").to_dicts()))
    else:
        sys.stdout.write(df.select("step", "ts", "value").write_csv())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops-jupyter", description=__doc__)
    p.add_argument(
        "--store", help="store file or folder (default: nearest .mlops/ or $MLOPS_JUPYTER_STORE)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--experiment", "-e")
    r.add_argument(
        "--status", choices=["running", "finished", "failed", "killed", "crashed", "stopped"]
    )
    r.add_argument("--last", type=_positive, metavar="N", help="only the N newest (N >= 1)")
    r.add_argument("--json", action="store_true", help="JSON instead of a table")
    r.set_defaults(func=cmd_runs)
    s = sub.add_parser("show", help="params, metric summaries, tags and artifacts of a run")
    s.add_argument("run", help="run id, unique id prefix, or name")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)
    m = sub.add_parser("metrics", help="one metric's history of a run")
    m.add_argument("run")
    m.add_argument("key")
    m.add_argument("--format", choices=["csv", "json"], default="csv")
    m.set_defaults(func=cmd_metrics)
    for mod in SUBCOMMAND_MODULES:
        try:
            importlib.import_module(mod).add_parser(sub)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):
                raise
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlops-jupyter` command."""
    args = build_parser().parse_args(argv)
    try:
        if f"{args.func.__module__}.{args.func.__name__}" in READ_COMMANDS:
            require_store(args)
        use_store(args)
        return int(args.func(args) or 0)
    except MlopsJupyterError as e:
        print(f"error: {safe(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
