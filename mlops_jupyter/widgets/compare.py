"""Run comparison: a params + metric-summary table (differing params highlighted) and an
altair overlay chart of one metric. Static output: renders in JupyterLab, VS Code and
exported HTML without a kernel or network."""

from __future__ import annotations

import html
import math
import re
from typing import Any

import numpy as np
import polars as pl

from ..errors import InvalidInputError
from .render import decimate

_PREFERRED = ("val_loss", "val/loss", "loss", "train/loss", "train_loss")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return str(v)


def _run_refs(runs: Any) -> list[str]:
    from ..tracking.run import Run

    if isinstance(runs, pl.DataFrame):
        if "id" not in runs.columns:
            raise InvalidInputError("a runs DataFrame needs an 'id' column (use mj.runs())")
        return runs["id"].to_list()
    if isinstance(runs, (str, Run)):
        runs = [runs]
    if not isinstance(runs, (list, tuple)):
        raise InvalidInputError(
            f"runs must be a list of runs/ids/names or a mj.runs() frame, got {type(runs).__name__}"
        )
    out = []
    for r in runs:
        if isinstance(r, Run):
            out.append(r.id)
        elif isinstance(r, str) and r:
            out.append(r)
        else:
            raise InvalidInputError(f"not a run, run id or name: {r!r}")
    return out


class Comparison:
    """What `mj.compare(...)` returns: `.table` (polars, one row per field, one column per
    run), `.differing` (param names whose values differ), `.chart` (altair) and `.metric`.
    For evaluation runs (`mj.llm_eval` scores), `.llm` holds each score per run with its
    interval and change against the first run (`regressed`: beyond the first run's interval)."""

    def __init__(self, runs: Any, metric: str | None = None, max_points: int = 500) -> None:
        from .. import tracking

        refs = _run_refs(runs)
        if not refs:
            raise InvalidInputError("compare() needs at least one run")
        details = [tracking.get_run(r) for r in refs]
        seen: set[str] = set()
        self.runs = [d for d in details if not (d["id"] in seen or seen.add(d["id"]))]
        self.labels = [f"{d['name']} ({d['id'][:6]})" for d in self.runs]
        pkeys = sorted({k for d in self.runs for k in d["params"]})
        self.differing = [
            k for k in pkeys if len({repr(d["params"].get(k)) for d in self.runs}) > 1
        ]
        mkeys = sorted(
            {m["key"] for d in self.runs for m in d["metrics"] if not m["key"].startswith("sys/")}
        )
        rows: list[tuple[str, str, list[Any]]] = [
            ("run", "status", [d["status"] for d in self.runs]),
            ("run", "duration_s", [round(d["duration_s"], 2) for d in self.runs]),
        ]
        rows += [("param", k, [d["params"].get(k) for d in self.runs]) for k in pkeys]
        for k in mkeys:
            by_run = [{m["key"]: m for m in d["metrics"]}.get(k) for d in self.runs]
            for stat in ("last", "min", "max"):
                rows.append(("metric", f"{k}.{stat}", [m and m[stat] for m in by_run]))
        self._rows = rows
        cols: dict[str, list[str]] = {
            "section": [r[0] for r in rows],
            "field": [r[1] for r in rows],
        }
        for i, lab in enumerate(self.labels):
            cols[lab] = [_fmt(r[2][i]) for r in rows]
        self.table = pl.DataFrame(cols)
        self.llm = _llm_frame(self.runs, self.labels)
        if metric is None:
            metric = next((m for m in _PREFERRED if m in mkeys), mkeys[0] if mkeys else None)
        elif not isinstance(metric, str):
            raise InvalidInputError(f"metric must be a string, got {type(metric).__name__}")
        else:
            all_keys = {m["key"] for d in self.runs for m in d["metrics"]}
            if metric not in all_keys:
                raise InvalidInputError(
                    f"no run has a metric {metric!r}; available: {', '.join(mkeys) or 'none'}"
                )
        self.metric = metric
        self.curves = self._curves(max_points) if metric else pl.DataFrame()
        self.chart = self._chart() if metric else None

    def _curves(self, max_points: int) -> pl.DataFrame:
        from .. import tracking

        long = tracking.metrics([d["id"] for d in self.runs], keys=[self.metric])
        label = dict(zip([d["id"] for d in self.runs], self.labels))
        frames = []
        for (rid,), part in long.group_by(["run_id"], maintain_order=True):
            x, y = decimate(
                part["step"].to_numpy(), part["value"].to_numpy(), max(1, max_points // 2)
            )
            y = np.where(np.isfinite(y), y, np.nan)
            frames.append(pl.DataFrame({"run": label[rid], "step": x, self.metric: y}))
        if not frames:
            return pl.DataFrame(
                schema={"run": pl.String, "step": pl.Int64, self.metric: pl.Float64}
            )
        return pl.concat(frames).fill_nan(None)

    def _chart(self) -> Any:
        try:
            import altair as alt
        except ImportError:
            return None
        data = self.curves.to_dicts()
        field = self.metric.replace(".", "\\.")
        return (
            alt.Chart(alt.Data(values=data))
            .mark_line()
            .encode(
                x=alt.X("step:Q", title="step"),
                y=alt.Y(f"{field}:Q", title=self.metric, scale=alt.Scale(zero=False)),
                color=alt.Color("run:N", title="run"),
                tooltip=["run:N", "step:Q", f"{field}:Q"],
            )
            .properties(width=520, height=260, title=f"{self.metric} by step")
            .interactive()
        )

    # -- rendering ---------------------------------------------------------------------
    def table_html(self) -> str:
        """The comparison table as HTML; differing params are highlighted."""
        head = "".join(f"<th>{html.escape(lab)}</th>" for lab in self.labels)
        body = []
        for section, field, vals in self._rows:
            diff = section == "param" and field in self.differing
            style = ' style="background:#fff3cd"' if diff else ""
            mark = " ●" if diff else ""
            cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in vals)
            body.append(
                f'<tr{style} class="mlops-{section}{" mlops-diff" if diff else ""}">'
                f'<td style="color:#777">{section}</td>'
                f"<th style='text-align:left'>{html.escape(field)}{mark}</th>{cells}</tr>"
            )
        return (
            '<table class="mlops-compare" style="border-collapse:collapse;font-size:12px">'
            f"<thead><tr><th></th><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            "</table>"
        )

    def llm_html(self) -> str:
        """The evaluation scores per run (mean ± half interval, change against the first run);
        regressions highlighted. Empty when no run holds `mj.llm_eval` scores."""
        if self.llm.is_empty():
            return ""
        head = "".join(f"<th>{html.escape(lab)}</th>" for lab in self.labels)
        body = []
        for (metric,), part in self.llm.group_by(["metric"], maintain_order=True):
            cells = []
            for i, r in enumerate(part.iter_rows(named=True)):
                text = "" if r["mean"] is None else _fmt(r["mean"])
                if r["ci_low"] is not None and r["ci_high"] is not None:
                    text += f" ± {_fmt((r['ci_high'] - r['ci_low']) / 2)}"
                if i and r["delta"] is not None:
                    text += f" ({r['delta']:+.4g})"
                bad = (
                    ' class="mlops-regressed" style="background:#f8d7da"' if r["regressed"] else ""
                )
                cells.append(f"<td{bad}>{html.escape(text)}</td>")
            body.append(
                f"<tr><th style='text-align:left'>{html.escape(metric)}</th>{''.join(cells)}</tr>"
            )
        return (
            "<div><b>LLM evaluation</b> (95% bootstrap intervals; change against the first run)"
            '<table class="mlops-compare-llm" style="border-collapse:collapse;font-size:12px">'
            f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        )

    def _chart_bundle(self) -> dict[str, Any] | None:
        """The chart as a Vega-Lite bundle labelled with the version altair writes (the
        lab extension renders v6 offline). No text/html: front ends prefer it over the
        chart, and would show a static picture instead of one interactive chart."""
        if self.chart is None:
            return None
        spec = self.chart.to_dict()
        return {
            vegalite_mime(spec): spec,
            "text/plain": f"<altair chart: {self.metric} by step for {len(self.runs)} runs>",
        }

    def _repr_html_(self) -> str:
        # exported HTML, GitHub: the table, and a static sketch of each curve
        return self.table_html() + self.llm_html() + self._sparklines_html()

    def _sparklines_html(self) -> str:
        from .render import sparkline_svg

        if self.chart is None:
            return ""
        svgs = []
        for (run,), part in self.curves.group_by(["run"], maintain_order=True):
            y = [None if v is None else float(v) for v in part[self.metric].to_list()]
            svgs.append(f"<div>{html.escape(run)}<br>{sparkline_svg(y, 360, 80)}</div>")
        return (
            f"<div><b>{html.escape(self.metric or '')}</b> by step"
            f"<div style='display:flex;flex-wrap:wrap;gap:8px'>{''.join(svgs)}</div></div>"
        )

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(
            {"text/html": self.table_html() + self.llm_html(), "text/plain": repr(self)}, raw=True
        )
        chart = self._chart_bundle()
        if chart is not None:
            display(chart, raw=True)

    def __repr__(self) -> str:
        return (
            f"Comparison({len(self.runs)} runs, metric={self.metric!r}, differing={self.differing})"
        )


def _llm_frame(details: list[dict[str, Any]], labels: list[str]) -> pl.DataFrame:
    """Long frame (metric, run, mean, ci_low, ci_high, delta, regressed) of `llm/` scores."""
    from ..llm.compare import score_rows

    rows = []
    if any(m["key"].startswith("llm/") for d in details for m in d["metrics"]):
        for s in score_rows(details):
            for lab, v, dl, bad in zip(labels, s["values"], s["delta"], s["regressed"]):
                v = v or {}
                rows.append(
                    (s["metric"], lab, v.get("mean"), v.get("ci_low"), v.get("ci_high"), dl, bad)
                )
    return pl.DataFrame(
        rows,
        schema={
            "metric": pl.String,
            "run": pl.String,
            "mean": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
            "delta": pl.Float64,
            "regressed": pl.Boolean,
        },
        orient="row",
    )


def vegalite_mime(spec: dict[str, Any]) -> str:
    """The MIME type of a Vega-Lite spec from its $schema (".../vega-lite/v6.4.1.json" ->
    application/vnd.vegalite.v6+json)."""
    m = re.search(r"/vega-lite/v(\d+)", str(spec.get("$schema", "")))
    return f"application/vnd.vegalite.v{m.group(1) if m else 6}+json"


def compare(runs: Any, metric: str | None = None, max_points: int = 500) -> Comparison:
    """Compare runs: table of params and metric summaries (differing params highlighted)
    and an overlay chart of `metric` (default: a loss-like or the first metric).

    `runs`: run ids/names/Run objects, or a `mj.runs()` frame (e.g. `mj.runs().head(5)`)."""
    return Comparison(runs, metric, max_points)
