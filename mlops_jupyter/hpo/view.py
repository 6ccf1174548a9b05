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

RECENT_S = 30.0  # window of the "recent" trials/s
MAX_LINES = 1000  # the parallel-coordinates chart draws at most the latest this many trials

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
        self.finished_at: list[float] = []  # when each trial was recorded (trials/s)
        self.complete: list[tuple[float, dict[str, Any]]] = []  # (value, params) for the chart
        self.log_params: set[str] = set()  # params known to be searched on a log scale
        self.linear_params: set[str] = set()  # ... known not to be

    def add(
        self,
        number: int,
        state: str,
        value: float | None,
        params: dict[str, Any],
        *,
        worker: str | None = None,
        distributions: dict[str, Any] | None = None,
    ) -> None:
        """Record a finished trial; `worker` names where it ran ("host:pid"; None: this
        process); `distributions` (optuna's, e.g. `trial.distributions`) tell which params
        are log-scaled (without them: positive values spanning two decades are)."""
        self.states[state] = self.states.get(state, 0) + 1
        self.finished_at.append(time.time())
        w = worker or "this process"
        per = self.workers.setdefault(w, {})
        per[state] = per.get(state, 0) + 1
        for k, d in (distributions or {}).items():
            if getattr(d, "log", False):
                self.log_params.add(k)
            elif hasattr(d, "low"):
                self.linear_params.add(k)
        if state != "complete" or value is None or not math.isfinite(value):
            return
        self.points.append((number, value))
        self.complete.append((value, dict(params)))
        better = (
            self.best is None
            or (self.direction == "minimize" and value < self.best[1])
            or (self.direction == "maximize" and value > self.best[1])
        )
        if better:
            self.best = (number, value, dict(params))

    def rates(self, now: float | None = None) -> tuple[float, float]:
        """(trials/s since the sweep started, trials/s over the last RECENT_S seconds)."""
        now = time.time() if now is None else now
        if self.done and self.finished_at:
            now = self.finished_at[-1]
        elapsed = max(now - self.started, 1e-9)
        window = min(RECENT_S, elapsed)
        recent = sum(1 for t in self.finished_at if t >= now - window)
        return len(self.finished_at) / elapsed, recent / window

    # -- text ---------------------------------------------------------------------------
    def summary(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items())) or "no trials yet"
        head = f"{self.title}: {counts}" + (" (done)" if self.done else "")
        if self.waiting:
            head += f" - waiting: {self.waiting}"
        if self.finished_at:
            overall, recent = self.rates()
            head += f"\n{overall:.3g} trials/s ({recent:.3g} recent)"
        if len(self.workers) > 1:
            head += "\nworkers: " + "; ".join(
                f"{w}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
                for w, c in sorted(self.workers.items())
            )
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

    def _parcoords(self, w: int = 520, h: int = 200) -> str:
        """Params against the objective: one line per complete trial over one axis per
        param (numeric: scaled to its range, log where the param is; categorical: evenly
        spaced levels) and the objective last, coloured by the objective (dark = best)."""
        rows = self.complete[-MAX_LINES:]
        names = sorted({k for _, ps in rows for k in ps})
        if not rows or not names:
            return ""
        axes = [_axis(k, [ps.get(k) for _, ps in rows], self._is_log(k, rows)) for k in names]
        axes.append(_axis("objective", [v for v, _ in rows], False))
        top, bottom, left, right = 16, h - 30, 30, w - 40
        xs = [left + i * (right - left) / max(1, len(axes) - 1) for i in range(len(axes))]
        vals = [v for v, _ in rows]
        v0, v1 = min(vals), max(vals)
        lines = []
        for v, ps in rows:
            pts = []
            for x, ax in zip(xs, axes):
                f = ax.frac(v if ax.name == "objective" else ps.get(ax.name))
                if f is not None:
                    pts.append(f"{x:.1f},{bottom - f * (bottom - top):.1f}")
            good = 0.5 if v1 == v0 else (v - v0) / (v1 - v0)
            if self.direction == "maximize":
                good = 1 - good
            lines.append(
                f'<polyline points="{" ".join(pts)}" fill="none" stroke="{_ramp(good)}" '
                'stroke-opacity="0.6" stroke-width="1"/>'
            )
        e = html.escape
        ticks = "".join(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#999"/>'
            f'<text x="{x:.1f}" y="{h - 16}" font-size="10" fill="#444" text-anchor="middle">'
            f"{e(ax.name)}{' (log)' if ax.log else ''}</text>"
            f'<text x="{x + 2:.1f}" y="{top - 4}" font-size="9" fill="#666">{e(ax.hi_label)}</text>'
            f'<text x="{x + 2:.1f}" y="{bottom + 10}" font-size="9" fill="#666">{e(ax.lo_label)}</text>'
            for x, ax in zip(xs, axes)
        )
        return (
            f'<svg width="{w}" height="{h}" role="img" aria-label="parallel coordinates" '
            f'class="mlops-parcoords">{"".join(lines)}{ticks}</svg>'
        )

    def _is_log(self, name: str, rows: list[tuple[float, dict[str, Any]]]) -> bool:
        if name in self.log_params or name in self.linear_params:
            return name in self.log_params
        xs = [x for _, ps in rows if _num(x := ps.get(name))]
        return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 100

    def _repr_html_(self) -> str:
        e = html.escape
        counts = " &middot; ".join(f"{n} {e(s)}" for s, n in sorted(self.states.items()))
        status = (
            "done" if self.done else ("waiting: " + e(self.waiting) if self.waiting else "running")
        )
        rate = ""
        if self.finished_at:
            overall, recent = self.rates()
            rate = f"<br>{overall:.3g} trials/s &middot; {recent:.3g} recent"
        rows = ""
        if self.best is not None:
            n, v, params = self.best
            rows = f"<tr><th>best trial</th><td>{n}</td></tr><tr><th>value</th><td>{e(_fmt(v))}</td></tr>"
            rows += "".join(
                f"<tr><th>{e(str(k))}</th><td>{e(_fmt(x))}</td></tr>" for k, x in params.items()
            )
        states = sorted({s for c in self.workers.values() for s in c})
        workers = ""
        if self.workers:
            workers = (
                '<table class="mlops-sweep-workers" style="border-collapse:collapse;'
                'margin-top:8px" cellpadding="3">'
                "<tr><th>worker</th>"
                + "".join(f"<th>{e(s)}</th>" for s in states)
                + "</tr>"
                + "".join(
                    f"<tr><td>{e(w)}</td>"
                    + "".join(f"<td>{c.get(s, 0)}</td>" for s in states)
                    + "</tr>"
                    for w, c in sorted(self.workers.items())
                )
                + "</table>"
            )
        return (
            '<div class="mlops-sweep" style="display:flex;flex-wrap:wrap;gap:16px;'
            'align-items:flex-start;font-family:sans-serif;font-size:12px">'
            f"<div><b>{e(self.title)}</b> ({e(self.direction)}, {status})<br>"
            f"{counts or 'no trials yet'}{rate}<br>"
            f"{self._svg()}<br><span style='color:#4c78a8'>&#9679; trial value</span> "
            "<span style='color:#e45756'>&#9472; best so far</span></div>"
            f'<div><table style="border-collapse:collapse">{rows}</table>{workers}</div>'
            f"<div>{self._parcoords()}</div></div>"
        )


class _Axis:
    """Where a param's values fall on a parallel-coordinates axis (0 = bottom, 1 = top)."""

    def __init__(self, name: str, log: bool, lo: float, hi: float, levels: list[str]) -> None:
        self.name, self.log, self.lo, self.hi, self.levels = name, log, lo, hi, levels
        if levels:
            self.lo_label, self.hi_label = levels[0], levels[-1]
        else:
            self.lo_label = _fmt(10**lo if log else lo)
            self.hi_label = _fmt(10**hi if log else hi)

    def frac(self, v: Any) -> float | None:
        if self.levels:
            key = _level(v)
            if key not in self.levels:
                return None
            return 0.5 if len(self.levels) == 1 else self.levels.index(key) / (len(self.levels) - 1)
        if not _num(v) or (self.log and v <= 0):
            return None
        x = math.log10(v) if self.log else float(v)
        return 0.5 if self.hi == self.lo else (x - self.lo) / (self.hi - self.lo)


def _axis(name: str, values: list[Any], log: bool) -> _Axis:
    present = [v for v in values if v is not None]
    if present and all(_num(v) for v in present):
        xs = [math.log10(v) if log else float(v) for v in present if not log or v > 0]
        if xs:
            return _Axis(name, log, min(xs), max(xs), [])
    levels: list[str] = []
    for v in present:
        if _level(v) not in levels:
            levels.append(_level(v))
    if all(_num(v) for v in present):
        levels.sort(key=float)
    return _Axis(name, False, 0.0, 1.0, levels)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _level(v: Any) -> str:
    return v if isinstance(v, str) else _fmt(v)


def _ramp(t: float) -> str:
    """Colour of a line: t = 0 (best) dark blue to t = 1 (worst) light yellow."""
    t = min(1.0, max(0.0, t))
    stops = [(0.0, (33, 49, 140)), (0.5, (34, 168, 132)), (1.0, (230, 220, 90))]
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            r, g, b = (round(a + (b_ - a) * f) for a, b_ in zip(c0, c1))
            return f"#{r:02x}{g:02x}{b:02x}"
    return "#e6dc5a"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
