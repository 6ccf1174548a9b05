"""Rich HTML reprs of runs (a card with params, metric summaries and sparklines, alerts)."""

from __future__ import annotations

import html
import math
from typing import Any

from .render import _badge, decimate, jsonable, sparkline_svg

_STATUS_LEVEL = {"running": "info", "finished": "ok", "failed": "bad", "crashed": "bad"}


def _num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.5g}" if math.isfinite(v) else str(v)
    return html.escape(str(v))


def run_html(run: Any, sparklines: int = 8) -> str:
    """An HTML card for a Run (or run id/name): status, duration, params, metric summaries
    with sparklines of the first `sparklines` metrics, alerts."""
    from .. import tracking

    ref = getattr(run, "id", run)
    d = tracking.get_run(ref)
    user = [m for m in d["metrics"] if not m["key"].startswith("sys/")]
    curves: dict[str, str] = {}
    if user and sparklines:
        keys = [m["key"] for m in user[:sparklines]]
        long = tracking.metrics(d["id"], keys=keys)
        for (key,), part in long.group_by(["key"], maintain_order=True):
            _x, y = decimate(part["step"].to_numpy(), part["value"].to_numpy(), 60)
            curves[key] = sparkline_svg(jsonable(y), 120, 24)
    params = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{_num(v)}</td></tr>"
        for k, v in d["params"].items()
    )
    metrics = "".join(
        f"<tr><th style='text-align:left'>{html.escape(m['key'])}</th><td>{_num(m['last'])}</td>"
        f"<td>{_num(m['min'])}</td><td>{_num(m['max'])}</td><td>{m['count']}</td>"
        f"<td>{curves.get(m['key'], '')}</td></tr>"
        for m in user
    )
    alerts = [e for e in d["events"] if e["kind"] in ("alert", "throttle")]
    alert_html = "".join(
        f"<div>{_badge(e['level'], 'bad' if e['level'] == 'critical' else 'warn')} "
        f"{html.escape(e['message'])}</div>"
        for e in alerts[:10]
    )
    return (
        '<div class="mlops-run" style="font-family:sans-serif;font-size:12px">'
        f"<div><b>{html.escape(d['name'] or '')}</b> <code>{d['id']}</code> "
        f"{_badge(d['status'], _STATUS_LEVEL.get(d['status'], 'warn'))} "
        f"<span style='color:#777'>{html.escape(d['experiment'])} · "
        f"{d['duration_s']:.1f} s · attempt {d['attempt']}</span></div>"
        + (
            f"<table><caption style='text-align:left'>params</caption>{params}</table>"
            if params
            else ""
        )
        + (
            "<table><thead><tr><th>metric</th><th>last</th><th>min</th><th>max</th>"
            f"<th>n</th><th></th></tr></thead>{metrics}</table>"
            if metrics
            else ""
        )
        + alert_html
        + "</div>"
    )
