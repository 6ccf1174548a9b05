"""`mlops-jupyter data ...`: list and show data versions, lineage of a run, drift between
stored versions or files (with an exit code a pipeline can gate on)."""

from __future__ import annotations

import sys
from datetime import datetime

from ..cli_format import json_text, use_store
from ..cli_format import table as _table


def _s(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def cmd_ls(args) -> int:
    from . import versions

    use_store(args)
    df = versions(args.name, limit=args.last)
    if args.json:
        out = df.with_columns((df["created"].dt.epoch("ms") / 1000).alias("created"))
        print(json_text(out.to_dicts()))
        return 0
    if df.is_empty():
        print("(no data versions yet: mj.version(df, name=...) or read files inside a run)")
        return 0
    rows = [
        [
            r["id"],
            r["name"] or "",
            r["kind"],
            _s(r["n_rows"]),
            _s(r["n_cols"]),
            r["created"].astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            r["source"] or "",
        ]
        for r in df.iter_rows(named=True)
    ]
    print(_table(rows, ["id", "name", "kind", "rows", "cols", "created", "source"]))
    return 0


def cmd_show(args) -> int:
    from . import get_version

    use_store(args)
    v = get_version(args.ref)
    if args.json:
        print(json_text(v.to_dict()))
        return 0
    when = datetime.fromtimestamp(v.created).strftime("%Y-%m-%d %H:%M:%S") if v.created else ""
    print(f"data version {v.id}  {v.name or ''}  ({v.kind}, {when})")
    print(f"fingerprint {v.fingerprint}")
    if v.source:
        print(f"source      {v.source}")
    if v.profile:
        fr = v.profile_frame()
        cols = ["column", "dtype", "count", "nulls", "min", "mean", "max", "std", "n_unique", "top"]
        print(_table([[_s(r[c]) for c in cols] for r in fr.iter_rows(named=True)], cols))
    return 0


def cmd_lineage(args) -> int:
    from . import lineage

    use_store(args)
    lin = lineage(args.run)
    if args.json:
        print(json_text(lin.to_dict()))
        return 0
    print(f"run {lin.run['name']} ({lin.run['id']}, {lin.run['status']})")
    fr = lin.to_frame()
    rows = [
        [r["role"], r["id"], r["name"] or "", r["kind"], _s(r["n_rows"]), ", ".join(r["runs"])]
        for r in fr.iter_rows(named=True)
    ]
    print(_table(rows, ["role", "version", "name", "kind", "rows", "linked runs"]))
    return 0


def cmd_drift(args) -> int:
    from . import drift

    use_store(args)
    cols = [c for c in (args.columns or "").split(",") if c] or None
    rep = drift(
        args.reference,
        args.current,
        columns=cols,
        num_method=args.num_method,
        cat_method=args.cat_method,
        store=not args.no_store,
    )
    if args.json:
        print(json_text(rep.to_dict()))
    else:
        d = rep.data
        rows = [
            [
                c["column"],
                c["kind"],
                c["method"],
                _s(c["statistic"]),
                _s(c["threshold"]),
                "DRIFT" if c["drifted"] else "ok",
            ]
            for c in rep.columns
        ]
        print(_table(rows, ["column", "kind", "method", "statistic", "threshold", "verdict"]))
        verdict = "DATASET DRIFT" if d["dataset_drift"] else "no dataset drift"
        print(f"{verdict}: {d['n_drifted']}/{d['n_columns']} columns ({d['mode']} mode)")
    if args.fail_on_drift and rep.dataset_drift:
        print("dataset drift detected", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers) -> None:
    """Register `data ls|show|lineage|drift` on the main parser."""
    p = subparsers.add_parser("data", help="data versions, lineage and drift")
    sub = p.add_subparsers(dest="data_command", required=True)
    ls = sub.add_parser("ls", help="list data versions, newest first")
    ls.add_argument("name", nargs="?", help="only versions recorded under this name")
    ls.add_argument("--last", type=int, default=200, help="at most N (default 200)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)
    sh = sub.add_parser("show", help="one data version with its column profile")
    sh.add_argument("ref", help="version id, id prefix, fingerprint or name")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_show)
    li = sub.add_parser("lineage", help="inputs and outputs of a run")
    li.add_argument("run", nargs="?", default=None, help="run id or name (default: latest)")
    li.add_argument("--json", action="store_true")
    li.set_defaults(func=cmd_lineage)
    dr = sub.add_parser("drift", help="drift between two stored versions or files")
    dr.add_argument("reference", help="version id/name, or a tabular file")
    dr.add_argument("current", help="version id/name, or a tabular file")
    dr.add_argument("--num-method", default="auto", help="ks, wasserstein, psi, jensenshannon")
    dr.add_argument("--cat-method", default="auto", help="chisquare, psi, jensenshannon")
    dr.add_argument("--columns", help="comma-separated columns to compare")
    dr.add_argument("--no-store", action="store_true", help="don't store the result")
    dr.add_argument("--fail-on-drift", action="store_true", help="exit 1 on dataset drift")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(func=cmd_drift)
