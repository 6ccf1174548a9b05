"""`mlops-jupyter gate NAME --candidate V --data FILE [--rules rules.toml|rules.py]`:
exit code 0 when the gate passes, 1 when it fails, 2 on a usage error."""

from __future__ import annotations

import argparse
import runpy
from pathlib import Path
from typing import Any

from ..cli_format import json_text, safe
from ..errors import InvalidInputError

_KINDS = ("threshold", "not_worse", "latency", "drift", "privacy", "llm_score")


def _rule_from_table(i: int, t: dict[str, Any]):
    from . import rules as r

    t = dict(t)
    kind = t.pop("type", None)
    if kind not in _KINDS:
        raise InvalidInputError(
            f"rule {i + 1}: type must be one of {', '.join(_KINDS)} (custom rules go in a "
            f".py rules file), got {kind!r}"
        )
    try:
        if kind == "threshold":
            return r.threshold(t.pop("metric"), t.pop("op", ">="), t.pop("value"), **t)
        if kind == "not_worse":
            return r.not_worse(t.pop("metric"), **t)
        if kind in ("drift", "privacy", "llm_score"):
            from . import rules_more

            return getattr(rules_more, kind)(**t)
        return r.latency(**t)
    except (KeyError, TypeError) as e:
        raise InvalidInputError(f"rule {i + 1} ({kind}): missing or unknown field: {e}") from None


def load_rules(path: str | Path) -> dict[str, Any]:
    """{"rules": [...], "target": str | None, "features": list | None, "predict": fn | None}
    from a TOML file ([[rule]] tables with type = threshold | not_worse | latency | drift |
    privacy | llm_score) or a
    Python file (RULES, and optionally TARGET, FEATURES, PREDICT, SLICES); a TOML file's
    top-level `slices = ["country"]` names evaluation slices."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidInputError(f"no such rules file: {p}")
    if p.suffix == ".toml":
        from .notify import read_toml

        cfg = read_toml(p, "rules file")
        tables = cfg.get("rule", [])
        if not isinstance(tables, list) or not tables:
            raise InvalidInputError(f"rules file {p}: no [[rule]] tables")
        out = {"rules": [_rule_from_table(i, t) for i, t in enumerate(tables)]}
        return {
            **out,
            "target": cfg.get("target"),
            "features": cfg.get("features"),
            "predict": None,
            "slices": cfg.get("slices"),
        }
    if p.suffix == ".py":
        ns = runpy.run_path(str(p))  # the user's own file, as `python rules.py` would run it
        if "RULES" not in ns:
            raise InvalidInputError(f"rules file {p} defines no RULES list")
        return {
            "rules": list(ns["RULES"]),
            "target": ns.get("TARGET"),
            "features": ns.get("FEATURES"),
            "predict": ns.get("PREDICT"),
            "slices": ns.get("SLICES"),
        }
    raise InvalidInputError(f"rules file {p}: must be .toml or .py")


def cmd_gate(args) -> int:
    from . import gate, not_worse

    spec: dict[str, Any] = {"rules": [], "target": None, "features": None, "predict": None}
    spec["slices"] = None
    if args.rules:
        spec = load_rules(args.rules)
    else:
        spec["rules"] = [not_worse(args.metric, by=0.0)]
    baseline: Any = args.baseline
    if baseline == "none":
        baseline = None
    report = gate(
        args.name,
        args.candidate,
        args.data,
        spec["rules"],
        baseline=baseline,
        target=args.target or spec["target"] or "y",
        features=spec["features"],
        predict=spec["predict"],
        trusted=args.trusted,
        slices=args.slice or spec.get("slices"),
    )
    if args.markdown:
        Path(args.markdown).write_text(report.markdown())
    print(json_text(report.to_dict()) if args.json else safe(report.markdown()))
    return 0 if report.passed else 1


def cmd_gates(args) -> int:
    from datetime import datetime

    from ..cli_format import table
    from . import gates

    rows = gates(args.name, args.version)
    if args.json:
        print(json_text(rows))
        return 0
    if not rows:
        print(
            f"(no gates of {safe(args.name)} yet: run `mlops-jupyter gate {safe(args.name)} ...`)"
        )
        return 0
    out = []
    for g in rows:
        failed = [r["rule"] for r in g["report"]["results"] if r["status"] == "fail"]
        out.append(
            [
                str(g["id"]),
                f"v{g['version']}",
                "-" if g["baseline_version"] is None else f"v{g['baseline_version']}",
                "pass" if g["passed"] else "FAIL",
                datetime.fromtimestamp(g["time"]).strftime("%Y-%m-%d %H:%M:%S"),
                safe(g["user"] or ""),
                g["data_id"] or "",
                safe(", ".join(failed)),
            ]
        )
    print(table(out, ["id", "version", "baseline", "verdict", "time", "by", "data", "failed"]))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `gate`, `gates` and `ci`."""
    g = sub.add_parser(
        "gate",
        help="check a candidate model version against production (exit 0 pass, 1 fail)",
        description=__doc__,
    )
    g.add_argument("name", help="registered model name")
    g.add_argument("--candidate", required=True, help="the candidate version number")
    g.add_argument(
        "--data",
        required=True,
        help="evaluation data: .parquet/.csv/.arrow/.npz or a data version id",
    )
    g.add_argument("--rules", help="rules file (.toml with [[rule]] tables, or .py with RULES)")
    g.add_argument("--target", help="target column of the data (default: the rules file's, else y)")
    g.add_argument(
        "--baseline",
        default="production",
        help="production (default), a version, an alias, or none",
    )
    g.add_argument(
        "--metric", default="accuracy", help="without --rules: not_worse on this metric (accuracy)"
    )
    g.add_argument(
        "--slice",
        action="append",
        metavar="COLUMN",
        help="also report metrics per value of this column of the data (repeatable)",
    )
    g.add_argument("--trusted", action="store_true", help="allow unpickling your own model classes")
    g.add_argument("--json", action="store_true", help="the report as JSON")
    g.add_argument("--markdown", metavar="FILE", help="also write the Markdown report to FILE")
    g.set_defaults(func=cmd_gate)
    ls = sub.add_parser("gates", help="stored gate verdicts of a model (oldest first)")
    ls.add_argument("name", help="registered model name")
    ls.add_argument("--version", help="only this version's gates")
    ls.add_argument("--json", action="store_true", help="the stored reports as JSON")
    ls.set_defaults(func=cmd_gates)
    from .ci import add_parser as add_ci

    add_ci(sub)
