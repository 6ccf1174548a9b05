"""How a model card is laid out: its sections (title, kind, content) from the collected
record, shared by the Markdown and HTML forms (mlops_jupyter/loop/card.py)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

NOT_RECORDED = "not recorded"
# user-written fields shown first, in this order; any other field follows them
_FIELDS = ("intended_use", "limitations", "owners")
_PROFILE_KEYS = ("mean", "min", "max", "n_unique")


def _when(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


# A section: (title, kind, content) with kind "items" (list of (label, value)), "table"
# ((headers, rows)) or "text"; content None renders as "not recorded".
Section = tuple[str, str, Any]


def _sections(d: dict[str, Any]) -> list[Section]:
    m, f = d["model"], d["fields"]
    out: list[Section] = []
    out.append(
        (
            "Model",
            "items",
            [
                ("name", m["name"]),
                ("version", m["version"]),
                ("stage", m["stage"]),
                ("aliases", ", ".join(m["aliases"]) or "none"),
                ("flavor", m["flavor"]),
                ("size", f"{m['size']} bytes, sha256 {str(m['digest'])[:12]}"),
                ("registered", f"{_when(m['created'])} by {m['created_by']}"),
            ],
        )
    )
    for key in _FIELDS:
        val = f.get(key)
        if isinstance(val, list):
            val = ", ".join(map(str, val))
        out.append((key.replace("_", " ").capitalize(), "text", val or None))
    other = [(k, v) for k, v in sorted(f.items()) if k not in _FIELDS]
    if other:
        out.append(("Other fields", "items", [(k, _field_text(v)) for k, v in other]))
    run = d["run"]
    out.append(
        (
            "Training run",
            "items",
            run
            and [
                ("run", f"{run['name']} ({run['id']})"),
                ("experiment", run["experiment"]),
                ("status", run["status"]),
                ("started", _when(run["start_time"])),
            ],
        )
    )
    params = run["params"] if run else None
    out.append(
        (
            "Parameters",
            "table",
            params and (["param", "value"], [[k, v] for k, v in params.items()]),
        )
    )
    if run and run["metrics"]:
        rows = [
            [
                x["key"],
                _num(x["value"]),
                "" if x["ci_low"] is None else f"[{_num(x['ci_low'])}, {_num(x['ci_high'])}]",
            ]
            for x in run["metrics"]
        ]
    elif d["metrics"]:
        rows = [[k, _num(v), ""] for k, v in d["metrics"].items()]
    else:
        rows = None
    out.append(("Metrics", "table", rows and (["metric", "value", "interval"], rows)))
    data = d["data"]
    out.append(
        (
            "Training data",
            "table",
            data
            and (
                ["data version", "name", "rows", "columns", "profile"],
                [
                    [x["id"], x["name"], x["n_rows"], x["n_cols"], _profile_text(x["profile"])]
                    for x in data
                ],
            ),
        )
    )
    feats = d["features"]
    out.append(
        (
            "Features",
            "table",
            feats
            and (
                ["feature view", "version", "features", "training set"],
                [
                    [x["view"], x["version"], ", ".join(x["features"]), x["training_set"]]
                    for x in feats
                ],
            ),
        )
    )
    code = d["code"]
    out.append(
        (
            "Code",
            "items",
            code
            and [
                (k, NOT_RECORDED if code.get(k) is None else code[k])
                for k in ("notebook", "script", "commit", "branch", "dirty")
                if k not in ("script", "notebook") or code.get(k) is not None
            ],
        )
    )
    g = d["privacy"]
    out.append(
        (
            "Privacy",
            "text",
            g
            and (
                f"(epsilon={_num(g.get('epsilon'))}, delta={_num(g.get('delta'))})-DP, "
                f"{g.get('accountant')} accountant, {g.get('steps')} steps"
                + "".join(
                    f", {k.replace('_', ' ')} {_num(g[k])}"
                    for k in ("noise_multiplier", "max_grad_norm", "sample_rate")
                    if g.get(k) is not None
                )
            ),
        )
    )
    meta = d.get("metadata") or {}
    out.append(
        (
            "Version metadata",
            "items",
            meta and [(k, _field_text(v)) for k, v in sorted(meta.items())],
        )
    )
    out.append(
        (
            "Gates",
            "table",
            d["gates"]
            and (
                ["gate", "verdict", "baseline", "data", "time", "by", "rules"],
                [
                    [
                        f"#{x['id']}",
                        "pass" if x["passed"] else "FAIL",
                        "-" if x["baseline_version"] is None else f"v{x['baseline_version']}",
                        x["data_id"] or "",
                        _when(x["time"]),
                        x["user"] or "",
                        "; ".join(f"{r['rule']}: {r['status']}" for r in x["rules"]),
                    ]
                    for x in d["gates"]
                ],
            ),
        )
    )
    out.append(_slices_section(d.get("slices")))
    out.append(("Stage history", "table", _audit_table(d["stages"])))
    roll = d["rollouts"]
    cur = d["current_rollout"]
    out.append(("Rollout history", "table", _audit_table(roll)))
    if cur:
        out.append(
            (
                "Current rollout",
                "items",
                [
                    ("state", cur["state"]),
                    ("generation", cur["generation"]),
                    ("since", _when(cur["updated_at"])),
                    ("reason", cur["reason"]),
                ],
            )
        )
    out.append(("Audit trail", "table", _audit_table(d["audit"])))
    return out


def slices_record(stored: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The card's evaluation slices: those of the newest gate of the version that had
    slices (a gate's report["slices"]), None when the version has no gate at all, and
    {"gate": None, "rows": []} when none of its gates had slices."""
    if not stored:
        return None
    latest = stored[-1]["id"]
    for g in reversed(stored):
        table = g["report"].get("slices")
        if table:
            return {
                "gate": g["id"],
                "latest_gate": latest,
                "passed": g["passed"],
                "baseline_version": g["baseline_version"],
                "data_id": g["data_id"],
                "time": g["time"],
                **table,
            }
    return {"gate": None, "latest_gate": latest, "rows": []}


def _slices_section(s: dict[str, Any] | None) -> Section:
    from .slices import fmt

    title = "Evaluation slices"
    if not s:
        return (title, "text", None)
    if s["gate"] is None:
        return (
            title,
            "text",
            f"No gate of this version evaluated slices (the newest is #{s['latest_gate']}): "
            "mj.gate(..., slices=['column']) or mlops-jupyter gate --slice COLUMN adds them.",
        )
    base = s["baseline_version"]
    against = "no production version" if base is None else f"v{base}"
    note = (
        f"From gate #{s['gate']} ({'pass' if s['passed'] else 'FAIL'} against {against}, "
        f"{_when(s['time'])}, data {s['data_id']}): {s.get('confidence', 0.95):.0%} "
        f"bootstrap intervals; slices under {s.get('min_count')} examples show means only."
    )
    if s["latest_gate"] != s["gate"]:
        note += f" The newest gate, #{s['latest_gate']}, had no slices."
    if s.get("error"):
        note += f" Not computed: {s['error']}."
    rows = [
        [
            r["slice"],
            r["n"],
            r["metric"],
            fmt(r.get("candidate"), r.get("candidate_interval")),
            fmt(r.get("baseline"), r.get("baseline_interval")),
            fmt(r.get("difference"), r.get("difference_interval"), sign=True)
            + (f" ({r['note']})" if r.get("note") else ""),
        ]
        for r in s.get("rows", [])
    ]
    heads = ["slice", "n", "metric", "candidate", "production", "difference"]
    return (title, "table", (heads, rows, note))


def _field_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _profile_text(profile: list[dict] | None) -> str:
    if not profile:
        return NOT_RECORDED
    parts = []
    for p in profile:
        extra = ", ".join(f"{k} {_num(p[k])}" for k in _PROFILE_KEYS if k in p)
        parts.append(
            f"{p['column']} ({p['kind']}; nulls {p['nulls']}" + (f"; {extra})" if extra else ")")
        )
    return "; ".join(parts)


def _audit_table(rows: list[dict]) -> tuple[list[str], list[list]] | None:
    if not rows:
        return None
    return (
        ["time", "version", "action", "change", "reason", "by"],
        [
            [
                _when(a["time"]),
                "" if a["version"] is None else f"v{a['version']}",
                a["action"],
                f"{a['from_stage'] or ''} → {a['to_stage']}".strip()
                if a["to_stage"]
                else (f"alias {a['alias']}" if a["alias"] else ""),
                a["reason"] or "",
                a["user"] or "",
            ]
            for a in rows
        ],
    )


def _md_cell(v: Any) -> str:
    return str(_num(v)).replace("|", "\\|").replace("\n", " ")
