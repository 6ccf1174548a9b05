"""Static rendering shared by the widgets and reprs: series decimation, the telemetry strip
items, and self-contained HTML/SVG (no scripts, no CDN) for places where a live widget
cannot render (exported HTML, GitHub, a closed kernel)."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from ..store.series import decimate as _decimate

THERMAL_LEVEL = {"nominal": "ok", "fair": "ok", "serious": "warn", "critical": "bad"}


def decimate(x: np.ndarray, y: np.ndarray, buckets: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """At most ~2*buckets points keeping each bucket's min and max (so spikes survive) and a
    few NaN/inf points (gaps), in x order; short series are returned unchanged. The same
    algorithm as the server's series (store.series.decimate)."""
    idx, dec = _decimate(x, y, 2 * max(1, int(buckets)) + 2)
    return (x[idx], y[idx]) if dec else (x, y)


def jsonable(y: np.ndarray) -> list[float | None]:
    """Floats for JSON: NaN/inf become None (JSON has no NaN), drawn as gaps."""
    return [v if math.isfinite(v) else None for v in y.tolist()]


def _fmt(v: float | None, unit: str = "", digits: int = 0) -> str:
    if v is None or v != v:
        return "–"
    return f"{v:.{digits}f}{unit}"


def telemetry_items(s: dict[str, float]) -> list[dict[str, str]]:
    """The telemetry strip: [{label, value, level}] from a `sys/...` sample."""
    items: list[dict[str, str]] = []

    def add(label: str, v: float | None, unit: str, digits: int = 0, warn=None, bad=None):
        if v is None:
            return
        level = "ok"
        if bad is not None and v >= bad:
            level = "bad"
        elif warn is not None and v >= warn:
            level = "warn"
        items.append({"label": label, "value": _fmt(v, unit, digits), "level": level})

    add("CPU", s.get("sys/cpu/percent"), " %", 0, 90)
    add("CPU temp", s.get("sys/cpu/temp_c"), " °C", 0, 80, 90)
    add("Mem", s.get("sys/mem/percent"), " %", 0, 80, 90)
    add("RSS", s.get("sys/proc/rss_gib"), " GiB", 2)
    gpus = sorted({k.split("/")[1] for k in s if k.startswith("sys/gpu")})
    for g in gpus:
        p = f"sys/{g}/"
        add(f"{g.upper()}", s.get(p + "util_percent"), " %")
        add(f"{g.upper()} mem", s.get(p + "mem_percent"), " %", 0, 85, 95)
        add(f"{g.upper()} temp", s.get(p + "temp_c"), " °C", 0, 80, 85)
        add(f"{g.upper()} power", s.get(p + "power_w"), " W")
    for k in sorted(s):
        if k.startswith("sys/torch/") and k.endswith("allocated_gib") and "peak" not in k:
            add(k[len("sys/torch/") : -len("/allocated_gib")] + " alloc", s[k], " GiB", 2)
    add("MLX active", s.get("sys/mlx/active_gib"), " GiB", 2)
    add("Disk free", s.get("sys/disk/free_percent"), " %", 0)
    return items


def sparkline_svg(y: list[float | None], width: int = 240, height: int = 60) -> str:
    """A small inline SVG line chart (None values break the line)."""
    vals = [v for v in y if v is not None]
    if not vals:
        return f'<svg width="{width}" height="{height}"></svg>'
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    n = max(1, len(y) - 1)
    segs: list[list[str]] = [[]]
    for i, v in enumerate(y):
        if v is None:
            segs.append([])
            continue
        px = 2 + (width - 4) * i / n
        py = height - 2 - (height - 4) * (v - lo) / span
        segs[-1].append(f"{px:.1f},{py:.1f}")
    lines = "".join(
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{" ".join(s)}"/>'
        for s in segs
        if s
    )
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'style="background:#fafafa;border:1px solid #eee">{lines}</svg>'
    )


def _badge(text: str, level: str) -> str:
    colors = {"ok": "#2e7d32", "warn": "#ef6c00", "bad": "#c62828", "info": "#546e7a"}
    return (
        f'<span style="display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;'
        f'background:{colors.get(level, "#546e7a")};font-size:11px">{html.escape(text)}</span>'
    )


def static_html(
    title: str,
    status: str,
    series: dict[str, dict[str, Any]],
    telemetry: list[dict[str, str]],
    thermal: str,
    alerts: list[dict[str, Any]],
) -> str:
    """A self-contained HTML snapshot of the live monitor (charts as inline SVG)."""
    parts = [
        '<div class="mlops-static" style="font-family:sans-serif;font-size:12px">',
        f"<div><b>{html.escape(title)}</b> {_badge(status, 'info')} ",
        f"{_badge('thermal: ' + thermal, THERMAL_LEVEL.get(thermal, 'info'))}</div>",
    ]
    if telemetry:
        parts.append('<div style="margin:4px 0">')
        for it in telemetry:
            col = {"warn": "#ef6c00", "bad": "#c62828"}.get(it["level"], "#333")
            parts.append(
                f'<span style="margin-right:12px;color:{col}">{html.escape(it["label"])}: '
                f"<b>{html.escape(it['value'])}</b></span>"
            )
        parts.append("</div>")
    parts.append('<div style="display:flex;flex-wrap:wrap;gap:8px">')
    for key, s in series.items():
        last = s.get("last")
        parts.append(
            f"<div><div>{html.escape(key)} <span style='color:#777'>n={s.get('n', 0)}, "
            f"last={_fmt(last, '', 4) if last is not None else '–'}</span></div>"
            f"{sparkline_svg(s.get('y', []))}</div>"
        )
    parts.append("</div>")
    for a in alerts[:20]:
        parts.append(
            f"<div>{_badge(a.get('level', 'warning'), 'bad' if a.get('level') == 'critical' else 'warn')} "
            f"{html.escape(str(a.get('message', '')))}</div>"
        )
    parts.append("</div>")
    return "".join(parts)
