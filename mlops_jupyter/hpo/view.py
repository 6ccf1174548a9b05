"""Rendering of a sweep's progress (optimisation history + best params) as HTML with an
inline SVG chart and as plain text, without any notebook dependency.

Notebook front ends register a display factory (`set_display_factory`), e.g. the IPython
magics make one from `IPython.display.display(..., display_id=True)`; this module only
calls it, so sweeps also run in plain scripts."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable
from typing import Any

# factory(obj) -> handle with .update(obj); set by a notebook adaptor
_display_factory: Callable[[Any], Any] | None = None


def set_display_factory(factory: Callable[[Any], Any] | None) -> None:
    """Register how live sweep views are shown (None: no live view)."""
    global _display_factory
    _display_factory = factory


def display_factory() -> Callable[[Any], Any] | None:
    return _display_factory


class SweepView:
    """A snapshot of a sweep that renders as HTML (`_repr_html_`) or text."""

    def __init__(self, title: str, direction: str) -> None:
        self.title = title
        self.direction = direction
        self.points: list[tuple[int, float]] = []  # (trial number, value) of complete trials
        self.states: dict[str, int] = {}
        self.best: tuple[int, float, dict[str, Any]] | None = None
        self.waiting: str | None = None  # reason while paused for thermal state
        self.done = False
        self.started = time.time()
        self.workers: dict[str, dict[str, int]] = {}  # worker -> state -> count

    def add(
        self,
        number: int,
        state: str,
        value: float | None,
        params: dict[str, Any],
        *,
        worker: str | None = None,
    ) -> None:
        """Record a finished trial; `worker` names where it ran ("host:pid"; None: this
        process)."""
        self.states[state] = self.states.get(state, 0) + 1
        w = worker or "this process"
        per = self.workers.setdefault(w, {})
        per[state] = per.get(state, 0) + 1
        if state != "complete" or value is None or not math.isfinite(value):
            return
        self.points.append((number, value))
        better = (
            self.best is None
            or (self.direction == "minimize" and value < self.best[1])
            or (self.direction == "maximize" and value > self.best[1])
        )
        if better:
            self.best = (number, value, dict(params))

    # -- text ---------------------------------------------------------------------------
    def summary(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items())) or "no trials yet"
        head = f"{self.title}: {counts}" + (" (done)" if self.done else "")
        if self.waiting:
            head += f" - waiting: {self.waiting}"
        if self.best is None:
            return head
        n, v, params = self.best
        ps = ", ".join(f"{k}={_fmt(x)}" for k, x in params.items())
        return f"{head}\nbest: trial {n} value={_fmt(v)}  {ps}"

    def __repr__(self) -> str:
        return self.summary()

    # -- html ---------------------------------------------------------------------------
    def _svg(self, w: int = 420, h: int = 180) -> str:
        if not self.points:
            return f'<svg width="{w}" height="{h}"><text x="10" y="20" fill="#888">waiting for the first complete trial</text></svg>'
        pad = 34
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        y0, y1 = min(ys), max(ys)
        if y1 == y0:
            y0, y1 = y0 - 1, y1 + 1

        def sx(x: float) -> float:
            return pad + (x - x0) / (x1 - x0) * (w - pad - 8)

        def sy(y: float) -> float:
            return h - pad + 8 - (y - y0) / (y1 - y0) * (h - pad - 8)

        dots = "".join(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="#4c78a8" opacity="0.7"/>'
            for x, y in self.points
        )
        best_pts, cur = [], None
        for x, y in self.points:
            if cur is None or (y < cur if self.direction == "minimize" else y > cur):
                cur = y
            best_pts.append(f"{sx(x):.1f},{sy(cur):.1f}")
        line = f'<polyline points="{" ".join(best_pts)}" fill="none" stroke="#e45756" stroke-width="1.5"/>'
        axes = (
            f'<line x1="{pad}" y1="{h - pad + 8}" x2="{w - 8}" y2="{h - pad + 8}" stroke="#999"/>'
            f'<line x1="{pad}" y1="8" x2="{pad}" y2="{h - pad + 8}" stroke="#999"/>'
            f'<text x="{pad}" y="{h - 8}" font-size="10" fill="#666">trial {x0}</text>'
            f'<text x="{w - 8}" y="{h - 8}" font-size="10" fill="#666" text-anchor="end">{x1}</text>'
            f'<text x="2" y="14" font-size="10" fill="#666">{_fmt(y1)}</text>'
            f'<text x="2" y="{h - pad + 8}" font-size="10" fill="#666">{_fmt(y0)}</text>'
        )
        return f'<svg width="{w}" height="{h}" role="img" aria-label="optimisation history">{axes}{dots}{line}</svg>'

    def _repr_html_(self) -> str:
        e = html.escape
        counts = " &middot; ".join(f"{n} {e(s)}" for s, n in sorted(self.states.items()))
        status = (
            "done" if self.done else ("waiting: " + e(self.waiting) if self.waiting else "running")
        )
        rows = ""
        if self.best is not None:
            n, v, params = self.best
            rows = f"<tr><th>best trial</th><td>{n}</td></tr><tr><th>value</th><td>{e(_fmt(v))}</td></tr>"
            rows += "".join(
                f"<tr><th>{e(str(k))}</th><td>{e(_fmt(x))}</td></tr>" for k, x in params.items()
            )
        return (
            '<div class="mlops-sweep" style="display:flex;gap:16px;align-items:flex-start;'
            'font-family:sans-serif;font-size:12px">'
            f"<div><b>{e(self.title)}</b> ({e(self.direction)}, {status})<br>{counts or 'no trials yet'}<br>"
            f"{self._svg()}<br><span style='color:#4c78a8'>&#9679; trial value</span> "
            "<span style='color:#e45756'>&#9472; best so far</span></div>"
            f'<table style="border-collapse:collapse">{rows}</table></div>'
        )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
