"""Model cards: what a registered model version is, from what the store recorded about it.

    mj.set_model_card_fields("classifier", intended_use="...", owners=["ana"])
    card = mj.model_card("classifier")          # production, else the newest version
    card.markdown(); card.html(); card.to_dict()

Every section comes from a record (the registry, the training run and its tags, the data
versions it read, training-set lineage, gate verdicts, the audit log); a section with
nothing recorded says "not recorded" instead of guessing.
"""

from __future__ import annotations

import html as _html
import json
import math
from typing import Any

from ..errors import InvalidInputError
from .card_sections import _PROFILE_KEYS, NOT_RECORDED, _md_cell, _num, _sections, slices_record

__all__ = ["NOT_RECORDED", "ModelCard", "model_card", "set_model_card_fields"]


def _safe(v: Any) -> Any:
    """A JSON-safe copy: non-finite floats become None, unknown objects their str()."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_safe(x) for x in v]
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return str(v)


def set_model_card_fields(name: str, **fields: Any) -> dict[str, Any]:
    """Write user fields of model `name`'s card (intended_use=, limitations=, owners=[...],
    or any other JSON-able field; None removes one). Returns the fields now stored."""
    from ..registry import _check_name, _remote, _store, _user
    from ..store import cards

    _check_name(name)
    if not fields:
        raise InvalidInputError("give at least one field, e.g. intended_use='...'")
    owners = fields.get("owners")
    if owners is not None and (
        not isinstance(owners, (list, tuple)) or not all(isinstance(o, str) for o in owners)
    ):
        raise InvalidInputError(f"owners must be a list of names, got {owners!r}")
    try:
        json.dumps(fields)
    except (TypeError, ValueError):
        raise InvalidInputError("card fields must be JSON-able (text, numbers, lists)") from None
    if (url := _remote()) is not None:  # through the tracking server (remote/loop.py)
        from ..remote import loop as remote

        return remote.set_card_fields(url, name, fields)
    return cards.set_fields(_store(), name, fields, _user())


def _run_section(store, rid: int | None, reg_metrics: dict[str, float]) -> dict[str, Any] | None:
    from ..store import query

    if rid is None:
        return None
    d = query.run_detail(store, rid)
    last = {m["key"]: m["last"] for m in d["metrics"]}
    metrics = []
    for k in sorted(last):
        if k.endswith(("/ci_low", "/ci_high")):
            continue  # shown as the interval of their metric
        metrics.append(
            {
                "key": k,
                "value": last[k],
                "ci_low": last.get(f"{k}/ci_low"),
                "ci_high": last.get(f"{k}/ci_high"),
            }
        )
    tags = d["tags"]
    code = {
        k: tags.get(t)
        for k, t in (
            ("notebook", "notebook.path"),
            ("script", "script.path"),
            ("commit", "git.commit"),
            ("branch", "git.branch"),
            ("dirty", "git.dirty"),
        )
    }
    return {
        "id": d["id"],
        "name": d["name"],
        "experiment": d["experiment"],
        "status": d["status"],
        "start_time": d["start_time"],
        "end_time": d["end_time"],
        "params": d["params"],
        "metrics": metrics,
        "code": code if any(v is not None for v in code.values()) else None,
        "registered_metrics": reg_metrics,
    }


def _profile_summary(profile: list[dict] | None) -> list[dict[str, Any]] | None:
    if not profile:
        return None
    out = []
    for p in profile:
        row = {"column": p.get("name"), "kind": p.get("kind"), "nulls": p.get("nulls")}
        row.update({k: p[k] for k in _PROFILE_KEYS if k in p})
        out.append(row)
    return out


def _data_and_features(store, rid: int | None) -> tuple[list[dict], list[dict]]:
    from ..store import data as dstore
    from ..store import features as fstore

    if rid is None:
        return [], []
    data, feats = [], []
    for v in dstore.run_versions(store, rid):
        if v["role"] != "input":
            continue
        full = dstore.get_version(store, v["_id"])
        data.append(
            {
                "id": v["id"],
                "name": v["name"],
                "kind": v["kind"],
                "n_rows": v["n_rows"],
                "n_cols": v["n_cols"],
                "fingerprint": v["fingerprint"],
                "profile": _profile_summary(full.get("profile")),
            }
        )
        for s in fstore.training_set_sources(store, v["_id"]):
            if s["role"] == "features":
                feats.append(
                    {
                        "training_set": v["id"],
                        "view": s["view"],
                        "version": s["version"],
                        "features": s["features"] or [],
                        "data_version": s["data_version"],
                    }
                )
    return data, feats


def _audit_rows(store, name: str) -> list[dict[str, Any]]:
    from ..store import registry as rs

    keys = ("time", "model", "version", "action", "from_stage", "to_stage", "alias", "reason")
    return [{**dict(zip(keys, r[:8])), "user": r[8]} for r in rs.audit_log(store, name)]


def collect(name: str, version: int | None = None) -> dict[str, Any]:
    """Everything the card shows, as plain data (see ModelCard.to_dict)."""
    from ..registry import _check_name, _check_version, _remote, _store

    _check_name(name)
    if version is not None:
        version = _check_version(version)
    if (url := _remote()) is not None:  # collected by the tracking server (remote/loop.py)
        from ..remote import loop as remote

        return remote.card(url, name, version)
    return collect_in(_store(), name, version)


def collect_in(store: Any, name: str, version: int | None = None) -> dict[str, Any]:
    """collect() on `store` (arguments checked); the tracking server calls it."""
    from ..store import cards
    from ..store import gates as gstore
    from ..store import registry as rs
    from ..store import serving_rollouts as ro

    info = rs.find_version(store, name, version)
    v = info["version"]
    rid = ro.version_run(store, name, v)
    data, feats = _data_and_features(store, rid)
    audit = [a for a in _audit_rows(store, name) if a["version"] in (v, None)]
    stored = gstore.list_gates(store, name, v)
    gates = [
        {
            "id": g["id"],
            "passed": g["passed"],
            "baseline_version": g["baseline_version"],
            "data_id": g["data_id"],
            "time": g["time"],
            "user": g["user"],
            "rules": [
                {"rule": r["rule"], "status": r["status"], "detail": r.get("detail")}
                for r in g["report"].get("results", [])
            ],
        }
        for g in stored
    ]
    rollout = ro.get(store, name)
    run = _run_section(store, rid, info["metrics"])
    return _safe(
        {
            "model": {
                "name": name,
                "version": v,
                "stage": info["stage"],
                "aliases": info["aliases"],
                "flavor": info["flavor"],
                "size": info["size"],
                "digest": info["digest"],
                "created": info["created"],
                "created_by": info["created_by"],
            },
            "fields": cards.get_fields(store, name),
            "run": run,
            "metrics": info["metrics"],
            "data": data,
            "features": feats,
            "code": run["code"] if run else None,
            "privacy": (info["meta"].get("metadata") or {}).get("privacy"),
            "metadata": {
                k: v for k, v in (info["meta"].get("metadata") or {}).items() if k != "privacy"
            },
            "gates": gates,
            "slices": slices_record(stored),
            "stages": [a for a in audit if a["action"] == "transition" and a["version"] == v],
            "rollouts": [a for a in audit if a["action"] == "rollout"],
            "current_rollout": rollout,
            "audit": audit,
        }
    )


class ModelCard:
    """A model version's card: `.markdown()`, `.html()`, `.to_dict()`; shows itself in a
    notebook."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @property
    def name(self) -> str:
        return self.data["model"]["name"]

    @property
    def version(self) -> int:
        return self.data["model"]["version"]

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-able data."""
        return json.loads(json.dumps(self.data))

    def markdown(self) -> str:
        """The card as Markdown."""
        lines = [f"# Model card: {self.name} v{self.version}"]
        for title, kind, content in _sections(self.data):
            lines += ["", f"## {title}", ""]
            if not content:  # None, or an empty record
                lines.append(f"_{NOT_RECORDED}_")
            elif kind == "text":
                lines.append(str(content))
            elif kind == "items":
                lines += [f"- {k}: {_md_cell(v)}" for k, v in content]
            else:
                heads, rows = content[:2]
                if len(content) > 2:  # a note above the table
                    lines += [str(content[2]), ""]
                lines.append("| " + " | ".join(heads) + " |")
                lines.append("|" + " --- |" * len(heads))
                lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        """The card as one self-contained HTML fragment (no scripts, every value escaped)."""
        e = lambda v: _html.escape(str(_num(v)))  # noqa: E731
        parts = [
            '<div class="mj-model-card" style="font-family:sans-serif;max-width:60em">',
            f"<h2>Model card: {e(self.name)} v{e(self.version)}</h2>",
        ]
        cell = "border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top"
        for title, kind, content in _sections(self.data):
            parts.append(f"<h3>{e(title)}</h3>")
            if not content:  # None, or an empty record
                parts.append(f"<p><em>{NOT_RECORDED}</em></p>")
            elif kind == "text":
                parts.append(f"<p>{e(content)}</p>")
            elif kind == "items":
                parts.append(
                    "<ul>"
                    + "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in content)
                    + "</ul>"
                )
            else:
                heads, rows = content[:2]
                if len(content) > 2:  # a note above the table
                    parts.append(f"<p>{e(content[2])}</p>")
                parts.append('<table style="border-collapse:collapse">')
                parts.append(
                    "<tr>" + "".join(f'<th style="{cell}">{e(h)}</th>' for h in heads) + "</tr>"
                )
                for r in rows:
                    parts.append(
                        "<tr>" + "".join(f'<td style="{cell}">{e(c)}</td>' for c in r) + "</tr>"
                    )
                parts.append("</table>")
        parts.append("</div>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.html()

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def __str__(self) -> str:
        return self.markdown()  # print(card) reads like the card

    def __repr__(self) -> str:
        return f"ModelCard({self.name!r}, version={self.version})"


def model_card(name: str, version: int | None = None) -> ModelCard:
    """The card of `name` `version` (None: the production version, else the newest)."""
    return ModelCard(collect(name, version))
