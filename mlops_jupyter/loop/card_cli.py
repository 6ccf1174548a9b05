"""`mlops-jupyter card NAME`, `mlops-jupyter lineage MODEL` and `mlops-jupyter audit`: a
model version's card, a model's lineage graph, and the audit log with its evidence."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_format import json_text, safe, table


def _emit(text: str, out: str | None) -> None:
    if out:
        Path(out).expanduser().write_text(text, encoding="utf-8")
        print(f"wrote {safe(out)}")
    else:
        # line by line: a hostile field cannot drive the terminal, and lines stay lines
        print("\n".join(safe(line) for line in text.splitlines()))


def cmd_card(args) -> int:
    from .card import model_card

    card = model_card(args.name, args.version)
    if args.format == "html":
        text = "<!doctype html>\n<meta charset='utf-8'>\n" + card.html() + "\n"
    elif args.format == "json":
        text = json_text(card.to_dict())
    else:
        text = card.markdown()
    _emit(text, args.out)
    return 0


def cmd_lineage(args) -> int:
    from .lineage import model_lineage

    g = model_lineage(args.model, args.version)
    text = {"json": lambda: json_text(g.to_dict()), "svg": g.svg, "dot": g.dot}[args.format]()
    _emit(text, args.out)
    return 0


def cmd_audit(args) -> int:
    from .lineage import audit, audit_json

    df = audit(args.model, args.action or None, args.since, args.user)
    if args.json:
        print(audit_json(df))
        return 0
    if df.is_empty():
        print("(no audit entries match)")
        return 0
    rows = [
        [
            r["time"].strftime("%Y-%m-%d %H:%M:%S"),
            safe(r["model"]),
            "" if r["version"] is None else f"v{r['version']}",
            r["action"],
            f"{r['from_stage']} -> {r['to_stage']}" if r["to_stage"] else safe(r["alias"] or ""),
            safe(r["user"] or ""),
            safe(r["reason"] or ""),
            safe(r["evidence"] or ""),
        ]
        for r in df.iter_rows(named=True)
    ]
    print(table(rows, ["time", "model", "version", "action", "change", "by", "why", "evidence"]))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `card`, `lineage` and `audit`."""
    c = sub.add_parser("card", help="a model version's card (Markdown, HTML or JSON)")
    c.add_argument("name", help="registered model name")
    c.add_argument("--version", help="version number (default: production, else the newest)")
    c.add_argument("--format", choices=("md", "html", "json"), default="md")
    c.add_argument("--out", metavar="FILE", help="write to FILE instead of printing")
    c.set_defaults(func=cmd_card)
    li = sub.add_parser("lineage", help="a model's lineage: data, features, runs, versions")
    li.add_argument("model", help="registered model name")
    li.add_argument("--version", help="only this version (default: every version)")
    li.add_argument("--format", choices=("dot", "json", "svg"), default="dot")
    li.add_argument("--out", metavar="FILE", help="write to FILE instead of printing")
    li.set_defaults(func=cmd_lineage)
    a = sub.add_parser("audit", help="who did what, when, why and on which evidence")
    a.add_argument("--model", help="only this model")
    a.add_argument("--action", action="append", help="only this action (repeatable)")
    a.add_argument("--since", help="ISO date/time or a duration back from now (7d, 12h)")
    a.add_argument("--user", help="only this user's actions")
    a.add_argument("--json", action="store_true", help="the entries as JSON")
    a.set_defaults(func=cmd_audit)
