"""Lineage of a registered model (data -> features -> training sets -> runs -> versions ->
stages and rollouts) as a typed graph, and audit queries over the registry's log.

    g = mj.lineage("classifier")            # every version; version=3 for one
    g.to_dict(); g.dot(); g                  # the notebook shows an SVG (no graphviz needed)
    mj.audit(model="classifier", action="transition", since="7d")

`mj.lineage(run)` with a run (not a model name) keeps giving that run's data lineage.
"""

from __future__ import annotations

import html as _html
import json
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl

from ..errors import InvalidInputError

__all__ = ["ModelLineage", "audit", "lineage", "model_lineage"]

# left-to-right order of the kinds; the layout puts a node at least one layer right of its
# inputs, so this only breaks ties and colours
KINDS = ("data", "feature_view", "training_set", "run", "model_version", "stage", "rollout")
_COLOURS = {
    "data": "#e3f2fd",
    "feature_view": "#ede7f6",
    "training_set": "#e8eaf6",
    "run": "#fff3e0",
    "model_version": "#e8f5e9",
    "stage": "#fce4ec",
    "rollout": "#fffde7",
}


class ModelLineage:
    """A typed graph: nodes {id, kind, label, ...}, edges {source, target, type}."""

    def __init__(self, model: str, nodes: dict[str, dict], edges: list[dict]) -> None:
        self.model = model
        self.nodes = nodes
        self.edges = edges

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: model, nodes (list), edges (list)."""
        return {"model": self.model, "nodes": list(self.nodes.values()), "edges": self.edges}

    def dot(self) -> str:
        """Graphviz text (`dot -Tsvg`)."""

        def q(s: Any) -> str:
            return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

        lines = [f"digraph {q('lineage ' + self.model)} {{", "  rankdir=LR;", "  node [shape=box];"]
        for n in self.nodes.values():
            fill = _COLOURS.get(n["kind"], "#eeeeee")
            lines.append(
                f"  {q(n['id'])} [label={q(n['label'])}, style=filled, fillcolor={q(fill)}];"
            )
        for e in self.edges:
            lines.append(f"  {q(e['source'])} -> {q(e['target'])} [label={q(e['type'])}];")
        return "\n".join(lines + ["}"]) + "\n"

    def layers(self) -> dict[str, int]:
        """Layer of each node: the longest path from a node without inputs (bounded, so a
        cycle cannot loop)."""
        layer = dict.fromkeys(self.nodes, 0)
        for _ in range(len(self.nodes)):
            changed = False
            for e in self.edges:
                if layer[e["target"]] < layer[e["source"]] + 1:
                    layer[e["target"]] = layer[e["source"]] + 1
                    changed = True
            if not changed:
                break
        return layer

    def svg(self) -> str:
        """The graph drawn left to right by layers, as self-contained SVG."""
        layer = self.layers()
        cols: dict[int, list[str]] = {}
        for i in self.nodes:
            cols.setdefault(layer[i], []).append(i)
        # one barycentre sweep: order each layer by the mean position of its inputs
        pos: dict[str, float] = {}
        preds: dict[str, list[str]] = {}
        for e in self.edges:
            preds.setdefault(e["target"], []).append(e["source"])
        for li in sorted(cols):
            ids = cols[li]
            if li > min(cols):
                ids.sort(
                    key=lambda i: (
                        sum(pos.get(p, 0.0) for p in preds.get(i, []))
                        / max(1, len(preds.get(i, [])))
                    )
                )
            for k, i in enumerate(ids):
                pos[i] = float(k)
        w, h, gx, gy = 170, 40, 60, 18
        xy = {
            i: (20 + li * (w + gx), 20 + k * (h + gy))
            for li, ids in cols.items()
            for k, i in enumerate(ids)
        }
        width = 40 + (max(cols, default=0) + 1) * (w + gx) - gx
        height = 40 + max((len(v) for v in cols.values()), default=1) * (h + gy) - gy
        e = _html.escape
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
            '<defs><marker id="mj-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6"'
            ' markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>',
        ]
        for ed in self.edges:
            (x1, y1), (x2, y2) = xy[ed["source"]], xy[ed["target"]]
            x1, y1, x2, y2 = x1 + w, y1 + h / 2, x2, y2 + h / 2
            mx = (x1 + x2) / 2
            out.append(
                f'<path d="M{x1},{y1} C{mx},{y1} {mx},{y2} {x2},{y2}" fill="none" stroke="#888"'
                f' marker-end="url(#mj-arrow)"><title>{e(ed["type"])}</title></path>'
            )
        for i, n in self.nodes.items():
            x, y = xy[i]
            lines = str(n["label"]).split("\n")[:2]
            out.append(
                f'<g><title>{e(n["kind"])}: {e(i)}</title><rect x="{x}" y="{y}" width="{w}"'
                f' height="{h}" rx="5" fill="{_COLOURS.get(n["kind"], "#eee")}" stroke="#555"/>'
            )
            for k, t in enumerate(lines):
                t = t if len(t) <= 28 else t[:27] + "…"
                out.append(f'<text x="{x + 6}" y="{y + 16 + k * 14}">{e(t)}</text>')
            out.append("</g>")
        out.append("</svg>")
        return "\n".join(out)

    def _repr_html_(self) -> str:
        return self.svg()

    def __repr__(self) -> str:
        kinds = {k: sum(n["kind"] == k for n in self.nodes.values()) for k in KINDS}
        shown = ", ".join(f"{k}={v}" for k, v in kinds.items() if v)
        return f"ModelLineage({self.model!r}: {shown}; {len(self.edges)} edges)"


def model_lineage(name: str, version: int | None = None) -> ModelLineage:
    """The lineage graph of model `name`: every version, or only `version`."""
    from ..registry import _check_name, _check_version, _remote, _store

    _check_name(name)
    if version is not None:
        version = _check_version(version)
    if (url := _remote()) is not None:  # built by the tracking server (remote/loop.py)
        from ..remote import loop as remote

        return remote.model_lineage(url, name, version)
    return lineage_in(_store(), name, version)


def lineage_in(store: Any, name: str, version: int | None = None) -> ModelLineage:
    """model_lineage on `store` (arguments checked); the tracking server calls it."""
    from ..store import data as dstore
    from ..store import features as fstore
    from ..store import registry as rs
    from ..store import serving_rollouts as ro

    if version is None:
        infos = rs.list_versions(store, name)
        if not infos:
            rs.find_version(store, name)  # an unknown model: say so, with the known names
    else:
        infos = [rs.find_version(store, name, version)]
    nodes: dict[str, dict] = {}
    edges: list[dict] = []
    seen_edges: set[tuple] = set()

    def node(nid: str, kind: str, label: str, **extra: Any) -> str:
        nodes.setdefault(nid, {"id": nid, "kind": kind, "label": label, **extra})
        return nid

    def edge(src: str, dst: str, typ: str) -> None:
        if (src, dst, typ) not in seen_edges:
            seen_edges.add((src, dst, typ))
            edges.append({"source": src, "target": dst, "type": typ})

    def data_node(v: dict) -> str:
        label = f"{v.get('name') or 'data'}\n{v['id']}"
        return node(f"data:{v['id']}", "data", label, rows=v.get("n_rows"))

    for info in sorted(infos, key=lambda i: i["version"]):
        mv = node(
            f"model:{name}@v{info['version']}",
            "model_version",
            f"{name} v{info['version']}\n{info['stage']}",
            version=info["version"],
            stage=info["stage"],
        )
        if info["stage"] in ("staging", "production"):
            edge(mv, node(f"stage:{info['stage']}", "stage", info["stage"]), "in_stage")
        rid = ro.version_run(store, name, info["version"])
        if rid is None:
            continue
        r = dstore.run_info(store, rid)
        rn = node(f"run:{r['id']}", "run", f"{r['name']}\n{r['id']}", status=r["status"])
        edge(rn, mv, "registered")
        for v in dstore.run_versions(store, rid):
            sources = fstore.training_set_sources(store, v["_id"]) if v["role"] == "input" else []
            if sources:
                vid = node(
                    f"data:{v['id']}",
                    "training_set",
                    f"{v.get('name') or 'training set'}\n{v['id']}",
                )
                nodes[vid]["kind"] = "training_set"  # may have been seen as plain data first
            else:
                vid = data_node(v)
            if v["role"] == "input":
                edge(vid, rn, "input")
            else:
                edge(rn, vid, "output")
            for s in sources:
                src = node(f"data:{s['data_version']}", "data", f"{s['role']}\n{s['data_version']}")
                if s["role"] == "labels":
                    edge(src, vid, "labels")
                else:
                    fv = node(
                        f"view:{s['view']}@{s['version']}",
                        "feature_view",
                        f"{s['view']} v{s['version']}\n{', '.join(s['features'] or [])}",
                    )
                    edge(src, fv, "materialized")
                    edge(fv, vid, "features")
    rollout = ro.get(store, name)
    if rollout is not None:
        layout = rollout["layout"]
        rol = node(
            f"rollout:{name}", "rollout", f"rollout {rollout['state']}\ngen {rollout['generation']}"
        )
        for _vname, ver, weight in layout.get("variants") or []:
            mv = f"model:{name}@v{int(ver)}"
            if mv in nodes:
                edge(mv, rol, f"serves {weight / 100:g}%")
        sh = layout.get("shadow")
        if sh and f"model:{name}@v{int(sh[1])}" in nodes:
            edge(f"model:{name}@v{int(sh[1])}", rol, "shadow")
    return ModelLineage(name, nodes, edges)


def lineage(ref: Any = None, version: int | None = None) -> Any:
    """A registered model's lineage graph (`ref` a model name; `version` one version, else
    all), or, when `ref` is a run (Run, run id or name, default the active/latest run) and
    no model has that name, the run's data lineage (mj.data.lineage)."""
    if isinstance(ref, str):
        from ..registry import _remote, _store
        from ..store import registry as rs

        if (url := _remote()) is not None:  # the server's model names (remote/loop.py)
            from ..remote import loop as remote

            names = remote.model_names(url)
        else:
            names = rs.model_names(_store())
        if version is not None or ref in names:
            return model_lineage(ref, version)
    elif version is not None:
        raise InvalidInputError("version= needs a model name")
    from ..data.graph import lineage as run_lineage

    return run_lineage(ref)


_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _since(since: Any) -> float | None:
    """Epoch seconds from a datetime, an ISO date/time, epoch seconds, a timedelta or a
    duration back from now ("7d", "12h")."""
    if since is None:
        return None
    if isinstance(since, datetime):
        return (since if since.tzinfo else since.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(since, timedelta):
        return time.time() - since.total_seconds()
    if isinstance(since, (int, float)) and not isinstance(since, bool):
        return float(since)
    if isinstance(since, str):
        if m := _DUR.match(since):
            return time.time() - float(m[1]) * _UNIT[m[2]]
        try:
            return _since(datetime.fromisoformat(since))
        except ValueError:
            pass
    raise InvalidInputError(
        f"since must be a datetime, an ISO date, epoch seconds or a duration like '7d', got {since!r}"
    )


def _gate_text(g: dict) -> str:
    parts = []
    for r in g["report"].get("results", []):
        ev = r.get("evidence") or {}
        iv = ev.get("interval") if isinstance(ev, dict) else None
        extra = f" interval [{iv[0]:.4g}, {iv[1]:.4g}]" if iv and None not in iv else ""
        parts.append(f"{r['rule']}: {r['status']}{extra}")
    base = "-" if g["baseline_version"] is None else f"v{g['baseline_version']}"
    head = f"gate #{g['id']} {'pass' if g['passed'] else 'FAIL'} vs {base}"
    if g["data_id"]:
        head += f" on data {g['data_id']}"
    return head + ("; " + "; ".join(parts) if parts else "")


def audit(
    model: str | None = None,
    action: str | list[str] | None = None,
    since: Any = None,
    user: str | None = None,
) -> pl.DataFrame:
    """Who did what, when, why and on which evidence, oldest first: time, model, version,
    action, from_stage, to_stage, alias, reason, user, gate_ids, evidence. A gate's row
    carries its verdict per rule; a promotion's row the newest gate of that version before
    it (or none); a rollout's row its recorded layout and reason."""
    from ..registry import _check_name, _remote, _store
    from ..store import gates as gstore
    from ..store import registry as rs

    if model is not None:
        _check_name(model)
    actions = [action] if isinstance(action, str) else action
    if actions is not None and not all(isinstance(a, str) for a in actions):
        raise InvalidInputError(f"action must be a string or a list of strings, got {action!r}")
    t0 = _since(since)
    if (url := _remote()) is not None:  # the log and the verdicts from the tracking server
        from ..remote import loop as remote

        rows, glist = remote.audit_data(url, model)
    else:
        store = _store()
        rows = rs.audit_log(store, model)
        if model is not None and not rows:
            rs.find_version(store, model)  # an unknown model: a clear error
        glist = gstore.list_gates(store, model)
    gates = {g["id"]: g for g in glist}
    out = []
    for ts, m, ver, act, frm, to, alias, reason, who in rows:
        if actions is not None and act not in actions:
            continue
        if t0 is not None and ts < t0:
            continue
        if user is not None and who != user:
            continue
        ids: list[int] = []
        if act == "gate" and reason and (mm := re.match(r"gate #(\d+)", reason)):
            ids = [int(mm[1])]
        elif act == "transition" and to in ("staging", "production"):
            before = [
                g
                for g in gates.values()
                if g["model"] == m and g["version"] == ver and g["time"] <= ts
            ]
            ids = [before[-1]["id"]] if before else []
        evidence = "; ".join(_gate_text(gates[i]) for i in ids if i in gates)
        out.append(
            {
                "time": int(ts * 1e6),
                "model": m,
                "version": ver,
                "action": act,
                "from_stage": frm,
                "to_stage": to,
                "alias": alias,
                "reason": reason,
                "user": who,
                "gate_ids": ids,
                "evidence": evidence or None,
            }
        )
    schema = {
        "time": pl.Int64,
        "model": pl.String,
        "version": pl.Int64,
        "action": pl.String,
        "from_stage": pl.String,
        "to_stage": pl.String,
        "alias": pl.String,
        "reason": pl.String,
        "user": pl.String,
        "gate_ids": pl.List(pl.Int64),
        "evidence": pl.String,
    }
    df = pl.DataFrame(out, schema=schema)
    return df.with_columns(pl.col("time").cast(pl.Datetime("us", "UTC")))


def audit_json(df: pl.DataFrame) -> str:
    """The audit frame as a JSON list (times as ISO text)."""
    rows = df.with_columns(pl.col("time").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ")).to_dicts()
    return json.dumps(rows, indent=2)
