"""The Markdown summary of `mlops-jupyter ci` (a pull-request comment) and its PNG plots:
the training run's metric curves and a candidate-vs-production bar chart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

_MAX_CURVES = 6


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4g}"


def _secs(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f} s" if v < 60 else f"{v / 60:.1f} min")


def metric_rows(report: Any) -> list[dict[str, Any]]:
    """One row per metric from the gate's evidence: candidate, production, difference and
    its interval (not_worse rules), else the candidate's value (threshold rules)."""
    rows: dict[str, dict[str, Any]] = {}
    for r in report.results:
        ev = r.evidence or {}
        m = ev.get("metric")
        if not m:
            continue
        row = rows.setdefault(m, {"metric": m, "candidate": ev.get("candidate")})
        if "baseline" in ev and "baseline" not in row:
            row.update(
                baseline=ev["baseline"],
                difference=ev.get("difference"),
                interval=ev.get("interval"),
                confidence=ev.get("confidence"),
                higher_is_better=ev.get("higher_is_better", True),
                n=ev.get("n"),
            )
    return list(rows.values())


def _metrics_table(res: Any) -> list[str]:
    rows = metric_rows(res.report)
    base = f"production v{res.report.baseline}" if res.report.baseline is not None else "production"
    if not rows:
        return ["(no metric rules in the gate)"]
    lines = [
        f"| metric | candidate v{res.candidate} | {base} | delta | interval of the delta |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if "baseline" in r:
            lo, hi = r["interval"] or (None, None)
            conf = f"{r['confidence']:.0%} " if r.get("confidence") else ""
            arrow = "" if r.get("higher_is_better", True) else " (lower is better)"
            iv = f"{conf}[{lo:+.4g}, {hi:+.4g}]{arrow}" if lo is not None else "-"
            delta = f"{r['difference']:+.4g}" if r.get("difference") is not None else "-"
            lines.append(
                f"| {_cell(r['metric'])} | {_num(r['candidate'])} | {_num(r['baseline'])} "
                f"| {delta} | {iv} |"
            )
        else:
            lines.append(f"| {_cell(r['metric'])} | {_num(r['candidate'])} | - | - | - |")
    return lines


def _plot_curves(run: str | None, path: Path) -> bool:
    """Metric curves of the training run (one panel per metric); False when none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..tracking.api import metrics

    if run is None:
        return False
    df = metrics(run)
    keys = [
        k
        for k in sorted(set(df["key"].to_list()))
        if not k.startswith("sys/") and not k.endswith(("/ci_low", "/ci_high"))
    ][:_MAX_CURVES]
    if not keys:
        return False
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
    for ax, k in zip(axes[0], keys):
        s = df.filter(df["key"] == k).sort("step")
        ax.plot(s["step"].to_list(), s["value"].to_list(), marker="." if s.height < 30 else None)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _plot_bars(res: Any, path: Path) -> bool:
    """Candidate vs production per metric of the gate; False when the gate has none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = metric_rows(res.report)
    if not rows:
        return False
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(3.5, 1.6 * len(rows) + 1.5), 2.8))
    cand = [r["candidate"] if r["candidate"] is not None else np.nan for r in rows]
    base = [r.get("baseline", np.nan) for r in rows]
    w = 0.38
    ax.bar(x - w / 2, cand, w, label=f"candidate v{res.candidate}")
    if any(np.isfinite(b) for b in base):
        label = f"production v{res.report.baseline}" if res.report.baseline is not None else "base"
        ax.bar(x + w / 2, base, w, label=label)
    ax.set_xticks(x, [r["metric"] for r in rows], fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.set_title(f"{res.model}: candidate vs production", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _plots(res: Any, out: Path) -> tuple[list[str], list[Path]]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ["no plots (matplotlib is not installed)"], []
    lines, made = [], []
    curves = out.with_name(f"{out.stem}-curves.png")
    bars = out.with_name(f"{out.stem}-metrics.png")
    if _plot_curves(res.training_run, curves):
        lines.append(f"![metric curves of the training run]({curves.name})")
        made.append(curves)
    if _plot_bars(res, bars):
        lines.append(f"![candidate vs production]({bars.name})")
        made.append(bars)
    return (lines or ["no plots (nothing to draw)"]), made


def summary_markdown(res: Any, plot_lines: list[str]) -> str:
    """The summary's Markdown text (plots referenced by relative links)."""
    rep = res.report
    verdict = "PASS" if rep.passed else "FAIL"
    how = (
        "registered by `mlops-jupyter ci`" if res.registered_here else "registered by the pipeline"
    )
    against = f"production v{rep.baseline}" if rep.baseline is not None else "no production"
    lines = [
        f"## Model CI: {_cell(res.model)} v{res.candidate} — {verdict}",
        "",
        f"{rep.summary()}.",
        "",
        f"Candidate v{res.candidate} ({how}, training run `{res.training_run or '-'}`) vs "
        f"{against}; pipeline `{_cell(res.pipeline)}` run `{res.pipeline_run or '-'}`"
        + (f"; evaluation data `{rep.data_id}`" if rep.data_id else "")
        + f"; {_secs(res.seconds)} in all.",
        "",
        "### Metrics",
        "",
        *_metrics_table(res),
        "",
        "### Gate",
        "",
        "| rule | verdict | detail |",
        "| --- | --- | --- |",
    ]
    for r in rep.results:
        word = {"pass": "pass", "fail": "**FAIL**"}.get(r.status, r.status)
        lines.append(f"| {_cell(r.rule)} | {word} | {_cell(r.detail)} |")
    if rep.slices:
        from .slices import markdown_table

        lines += markdown_table(rep.slices)
    ran = sum(s.status == "ran" for s in res.stages)
    lines += [
        "",
        f"### Pipeline stages ({ran} run, {len(res.stages) - ran} cached)",
        "",
        "| stage | status | time | run |",
        "| --- | --- | ---: | --- |",
    ]
    for s in res.stages:
        note = f" (from `{s.source_run}`)" if s.status == "cached" and s.source_run else ""
        lines.append(f"| {_cell(s.name)} | {s.status} | {_secs(s.seconds)} | `{s.run_id}`{note} |")
    lines += ["", "### Plots", "", *plot_lines, ""]
    return "\n".join(lines)


def write_summary(res: Any, out: Path, plots: bool = True) -> Path:
    """Write the summary to `out` and its PNG plots next to it; returns `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_lines, made = _plots(res, out) if plots else (["no plots (--no-plots)"], [])
    res.plots = made
    out.write_text(summary_markdown(res, plot_lines), encoding="utf-8")
    return out


def write_failure(model: str, pipeline: str, error: str, out: Path) -> Path:
    """A summary for a pipeline that failed: the stage's error, no gate."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fence = "~~~~" if "```" in error else "```"
    text = "\n".join(
        [
            f"## Model CI: {_cell(model)} — pipeline failed",
            "",
            f"Pipeline `{_cell(pipeline)}` stopped before a candidate could be gated:",
            "",
            fence + "text",
            error,
            fence,
            "",
        ]
    )
    out.write_text(text, encoding="utf-8")
    return out
