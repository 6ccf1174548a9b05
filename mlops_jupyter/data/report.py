"""Rendering: drift reports, data versions and lineage as self-contained HTML (inline SVG, no
scripts, no raw rows), so they display in Jupyter, VS Code and static exports alike, and
their size depends on the number of columns, never on the number of rows."""

from __future__ import annotations

import html
import json
import math
from typing import Any

import polars as pl

_CSS = (
    "<style>.mjd{font:12px/1.4 system-ui,sans-serif}.mjd table{border-collapse:collapse}"
    ".mjd td,.mjd th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}"
    ".mjd .bad{color:#b00020;font-weight:600}.mjd .ok{color:#2e7d32}"
    ".mjd .sub{color:#666}</style>"
)
_REF, _CUR = "#7f8c8d", "#e67e22"
_LABELS = {
    "ks": "KS p",
    "ks_d": "KS D",
    "wasserstein": "W/std",
    "psi": "PSI",
    "jensenshannon": "JS",
    "chisquare": "chi² p",
    "chi2": "chi²",
}
# statistics computed only when they give the column's verdict (slow on large samples)
_ONLY_IF_METHOD = ("ks",)
_NOT_COMPUTED = '<span title="not computed: KS is not this column\'s verdict method">—</span>'


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isinf(v) or abs(v) >= 1e299:
            return "inf"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return html.escape(str(v))


def _bars(ref: list[float], cur: list[float], w: int = 160, h: int = 36) -> str:
    """Side-by-side bars of two distributions (probabilities per bin or category)."""
    k = max(len(ref), 1)
    top = max([*ref, *cur, 1e-12])
    bw = w / k
    parts = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}">']
    for i, (a, b) in enumerate(zip(ref, cur)):
        ha, hb = a / top * (h - 2), b / top * (h - 2)
        x = i * bw
        parts.append(
            f'<rect x="{x:.1f}" y="{h - ha:.1f}" width="{bw / 2:.1f}" height="{ha:.1f}" fill="{_REF}"/>'
            f'<rect x="{x + bw / 2:.1f}" y="{h - hb:.1f}" width="{bw / 2:.1f}" height="{hb:.1f}" fill="{_CUR}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


class DriftReport:
    """Result of `mj.drift`: per-column verdicts, drift share, dataset verdict.

    Renders inline in notebooks; `to_frame()` gives the verdicts as a polars DataFrame."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    id = property(lambda self: self.data.get("id"), doc="stored id (None when not stored)")
    columns = property(lambda self: self.data["columns"], doc="per-column results (dicts)")
    n_drifted = property(lambda self: self.data["n_drifted"])
    drift_share = property(lambda self: self.data["drift_share"])
    dataset_drift = property(lambda self: self.data["dataset_drift"])
    mode = property(lambda self: self.data["mode"], doc='"raw" (exact) or "profile"')

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the columns whose verdict is drift."""
        return [c["column"] for c in self.columns if c["drifted"]]

    def column(self, name: str) -> dict[str, Any]:
        """The result of one column."""
        for c in self.columns:
            if c["column"] == name:
                return c
        raise KeyError(name)

    def to_frame(self) -> pl.DataFrame:
        """column, kind, method, statistic, threshold, drifted."""
        return to_frame(self.columns)

    def to_dict(self) -> dict[str, Any]:
        """The whole result as JSON-able data."""
        return json.loads(json.dumps(self.data, default=str))

    def __repr__(self) -> str:
        d = self.data
        return (
            f"DriftReport({d['n_drifted']}/{d['n_columns']} columns drifted, "
            f"share={d['drift_share']:.2f}, dataset_drift={d['dataset_drift']}, mode={d['mode']!r})"
        )

    def _repr_html_(self) -> str:
        return drift_html(self.data)

    def to_html(self) -> str:
        """Standalone HTML document of the report."""
        return f"<!doctype html><meta charset=utf-8><body>{drift_html(self.data)}</body>"

    def to_altair(self):
        """Altair bar chart of the per-column statistic vs its threshold (needs altair)."""
        import altair as alt

        rows = [
            {
                "column": c["column"],
                "statistic": c["statistic"],
                "threshold": c["threshold"],
                "method": c["method"],
                "drifted": c["drifted"],
            }
            for c in self.columns
        ]
        data = alt.Data(values=rows)
        return (
            alt.Chart(data)
            .mark_bar()
            .encode(
                x=alt.X("statistic:Q"),
                y=alt.Y("column:N", sort=None),
                color=alt.Color("drifted:N", scale=alt.Scale(range=[_REF, "#b00020"])),
                tooltip=["column:N", "method:N", "statistic:Q", "threshold:Q"],
            )
        )


def drift_html(d: dict[str, Any]) -> str:
    """HTML of a drift result: one row per column with statistic, threshold, verdict and a
    reference-vs-current sketch (aggregates only)."""
    ref, cur = d.get("reference") or {}, d.get("current") or {}
    verdict = (
        '<span class="bad">dataset drift</span>'
        if d["dataset_drift"]
        else '<span class="ok">no dataset drift</span>'
    )
    head = (
        f"<div><b>Data drift</b>: {verdict} — {d['n_drifted']} of {d['n_columns']} columns "
        f"drifted (share {d['drift_share']:.2f}, threshold "
        f"{d.get('settings', {}).get('drift_share', 0.5)}) "
        f'<span class="sub">reference {_fmt(ref.get("name") or ref.get("id"))} · current '
        f"{_fmt(cur.get('name') or cur.get('id'))} · {d['mode']} mode"
        f"{' · report ' + _fmt(d.get('id')) if d.get('id') else ''}</span></div>"
        f'<div class="sub"><span style="color:{_REF}">■</span> reference '
        f'<span style="color:{_CUR}">■</span> current</div>'
    )
    rows = []
    for c in d["columns"]:
        if "hist" in c:
            chart = _bars(c["hist"]["ref"], c["hist"]["cur"])
        elif "cats" in c:
            chart = _bars(c["cats"]["ref"], c["cats"]["cur"])
        else:
            chart = ""
        p_test = c["method"] in ("ks", "chisquare")
        rel = "p &lt;" if p_test else "≥"
        cls = "bad" if c["drifted"] else "ok"
        others = ", ".join(
            f"{_LABELS.get(k, k)} {_NOT_COMPUTED if k in _ONLY_IF_METHOD and v is None else _fmt(v)}"
            for k, v in c.get("stats", {}).items()
            if k != c["method"] and k not in ("dof",)
        )
        rows.append(
            f"<tr><td>{html.escape(c['column'])}</td><td>{c['kind']}</td><td>{c['method']}</td>"
            f"<td>{_fmt(c['statistic'])}</td><td>{rel} {_fmt(c['threshold'])}</td>"
            f'<td class="{cls}">{"drift" if c["drifted"] else "ok"}</td><td>{chart}</td>'
            f'<td class="sub">{others}</td></tr>'
        )
    note = (
        '<div class="sub">KS p —: not computed; the KS p-value is computed only for columns '
        'whose verdict is KS (num_method="ks", or "auto" up to 1,000 reference rows)</div>'
        if any(
            k in _ONLY_IF_METHOD and v is None
            for c in d["columns"]
            for k, v in c.get("stats", {}).items()
        )
        else ""
    )
    skipped = "".join(
        f'<div class="sub">skipped {html.escape(s["column"])}: {html.escape(s["reason"])}</div>'
        for s in d.get("skipped", [])
    )
    table = (
        "<table><tr><th>column</th><th>type</th><th>method</th><th>statistic</th>"
        "<th>drift if</th><th>verdict</th><th>distribution</th><th>other statistics</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return f'<div class="mjd">{_CSS}{head}{table}{note}{skipped}</div>'


def version_html(v) -> str:
    """HTML of a data version with its column profile."""
    shape = f"{v.n_rows} rows × {v.n_cols} columns" if v.n_cols is not None else ""
    head = (
        f"<div><b>Data version</b> {html.escape(v.id)} {_fmt(v.name)} "
        f'<span class="sub">{v.kind} {shape} {html.escape(v.source or "")}'
        f" {'(new)' if v.is_new else '(already stored)'}</span></div>"
    )
    rows = []
    for p in v.profile or []:
        if p.get("hist"):
            counts = p["hist"]["counts"]
            tot = sum(counts) or 1
            chart = _bars([c / tot for c in counts], [0.0] * len(counts), w=120, h=24)
            stats = f"min {_fmt(p.get('min'))} · mean {_fmt(p.get('mean'))} · max {_fmt(p.get('max'))} · std {_fmt(p.get('std'))}"
        elif p.get("top"):
            tot = p.get("count") or 1
            chart = ""
            stats = f"{p.get('n_unique')} distinct · " + ", ".join(
                f"{html.escape(str(k))} {c / tot:.0%}" for k, c in p["top"][:4]
            )
        else:
            chart, stats = "", ""
        rows.append(
            f"<tr><td>{html.escape(p['name'])}</td><td>{html.escape(p['dtype'])}</td>"
            f"<td>{p.get('count')}</td><td>{p.get('nulls')}</td><td>{stats}</td><td>{chart}</td></tr>"
        )
    table = (
        "<table><tr><th>column</th><th>dtype</th><th>count</th><th>nulls</th><th>summary</th>"
        "<th>histogram</th></tr>" + "".join(rows) + "</table>"
        if rows
        else ""
    )
    return f'<div class="mjd">{_CSS}{head}{table}</div>'


def lineage_html(lin) -> str:
    """HTML of a run's lineage: upstream runs → inputs → run → outputs → downstream runs."""

    def vrows(items: list[dict], other: str) -> str:
        out = []
        for v in items:
            links = ", ".join(
                f"{html.escape(r['run_name'] or '')} ({r['run_id']})" for r in v.get(other, [])
            )
            out.append(
                f"<tr><td>{html.escape(v['id'])}</td><td>{_fmt(v.get('name'))}</td>"
                f"<td>{v['kind']}</td><td>{_fmt(v.get('n_rows'))}</td>"
                f'<td class="sub">{html.escape(v.get("source") or "")}</td><td>{links or "–"}</td></tr>'
            )
        return "".join(out)

    r = lin.run
    return (
        f'<div class="mjd">{_CSS}<div><b>Lineage</b> of run {html.escape(r["name"] or "")} '
        f'<span class="sub">{r["id"]} · {r["status"]}</span></div>'
        "<div><b>inputs</b></div><table><tr><th>version</th><th>name</th><th>kind</th>"
        "<th>rows</th><th>source</th><th>produced by</th></tr>"
        + vrows(lin.inputs, "produced_by")
        + "</table><div><b>outputs</b></div><table><tr><th>version</th><th>name</th>"
        "<th>kind</th><th>rows</th><th>source</th><th>used by</th></tr>"
        + vrows(lin.outputs, "used_by")
        + "</table></div>"
    )


def to_frame(columns: list[dict]) -> pl.DataFrame:
    """Per-column verdicts as a polars DataFrame."""
    return pl.DataFrame(
        {
            "column": [c["column"] for c in columns],
            "kind": [c["kind"] for c in columns],
            "method": [c["method"] for c in columns],
            "statistic": [c["statistic"] for c in columns],
            "threshold": [c["threshold"] for c in columns],
            "drifted": [c["drifted"] for c in columns],
        },
        schema={
            "column": pl.String,
            "kind": pl.String,
            "method": pl.String,
            "statistic": pl.Float64,
            "threshold": pl.Float64,
            "drifted": pl.Boolean,
        },
    )
