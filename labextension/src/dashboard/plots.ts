// Plain SVG/canvas plots of many runs: scatter (param vs metric), histogram of a metric,
// parallel coordinates (params -> objective) with brushing on every axis.
import { color } from '../charts';

const SVG = 'http://www.w3.org/2000/svg';

function svgEl<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    n.setAttribute(k, String(v));
  }
  if (text !== undefined) {
    n.textContent = text; // names and keys are data: text, never markup
  }
  return n;
}

function extent(vs: number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of vs) {
    if (v < lo) {
      lo = v;
    }
    if (v > hi) {
      hi = v;
    }
  }
  if (!isFinite(lo)) {
    return [0, 1];
  }
  return lo === hi ? [lo - 0.5, hi + 0.5] : [lo, hi];
}

function num(v: unknown): number | null {
  return typeof v === 'number' && isFinite(v) ? v : null;
}

/** Scatter of x against y; `labels` become the points' tooltips. */
export function scatter(xs: unknown[], ys: unknown[], labels: string[], xName: string, yName: string, width = 420, height = 280): SVGSVGElement {
  const svg = svgEl('svg', { width, height, class: 'mj-scatter' });
  const pts: [number, number, string][] = [];
  xs.forEach((x, i) => {
    const a = num(x);
    const b = num(ys[i]);
    if (a !== null && b !== null) {
      pts.push([a, b, labels[i]]);
    }
  });
  const [x0, x1] = extent(pts.map(p => p[0]));
  const [y0, y1] = extent(pts.map(p => p[1]));
  const m = 40;
  const sx = (v: number) => m + ((v - x0) / (x1 - x0)) * (width - 2 * m);
  const sy = (v: number) => height - m - ((v - y0) / (y1 - y0)) * (height - 2 * m);
  svg.appendChild(svgEl('line', { x1: m, y1: height - m, x2: width - m, y2: height - m, stroke: 'currentColor' }));
  svg.appendChild(svgEl('line', { x1: m, y1: m, x2: m, y2: height - m, stroke: 'currentColor' }));
  svg.appendChild(svgEl('text', { x: width / 2, y: height - 8, 'text-anchor': 'middle', 'font-size': 11, fill: 'currentColor' }, xName));
  svg.appendChild(svgEl('text', { x: 4, y: 14, 'font-size': 11, fill: 'currentColor' }, yName));
  svg.appendChild(svgEl('text', { x: m, y: height - m + 14, 'font-size': 10, fill: 'currentColor' }, String(Number(x0.toPrecision(3)))));
  svg.appendChild(svgEl('text', { x: width - m, y: height - m + 14, 'font-size': 10, 'text-anchor': 'end', fill: 'currentColor' }, String(Number(x1.toPrecision(3)))));
  for (const [a, b, label] of pts) {
    const c = svgEl('circle', { cx: sx(a), cy: sy(b), r: 3, fill: color(0), 'fill-opacity': 0.6, class: 'mj-dot' });
    c.appendChild(svgEl('title', {}, `${label}: ${a}, ${b}`));
    svg.appendChild(c);
  }
  return svg;
}

/** Histogram of the finite values in `vs` (`bins` equal-width bins). */
export function histogram(vs: unknown[], name: string, bins = 20, width = 420, height = 240): SVGSVGElement {
  const svg = svgEl('svg', { width, height, class: 'mj-histogram' });
  const vals = vs.map(num).filter((v): v is number => v !== null);
  const [lo, hi] = extent(vals);
  const counts = new Array<number>(bins).fill(0);
  for (const v of vals) {
    counts[Math.min(bins - 1, Math.floor(((v - lo) / (hi - lo)) * bins))]++;
  }
  const top = Math.max(1, ...counts);
  const m = 30;
  const bw = (width - 2 * m) / bins;
  counts.forEach((c, i) => {
    const h = (c / top) * (height - 2 * m);
    const bar = svgEl('rect', { x: m + i * bw, y: height - m - h, width: Math.max(1, bw - 1), height: h, fill: color(0), class: 'mj-bar' });
    bar.appendChild(svgEl('title', {}, `${(lo + (i * (hi - lo)) / bins).toPrecision(3)}…: ${c}`));
    svg.appendChild(bar);
  });
  svg.appendChild(svgEl('text', { x: width / 2, y: height - 8, 'text-anchor': 'middle', 'font-size': 11, fill: 'currentColor' }, `${name} (${vals.length} runs)`));
  return svg;
}

export type Brushes = Map<string, [number, number]>;

/** Parallel coordinates on a canvas: one polyline per run over numeric axes; dragging on
 * an axis brushes a range, and `onBrush` gets every axis' range (runs outside are dimmed). */
export class ParallelCoords {
  readonly node = document.createElement('div');
  private canvas = document.createElement('canvas');
  private overlay = svgEl('svg', { class: 'mj-pc-overlay' });
  brushes: Brushes = new Map();
  private ranges: [number, number][] = [];
  lastRedrawMs = 0;

  constructor(
    private axes: string[],
    private data: (number | null)[][], // data[axis][run]
    private onBrush: (b: Brushes) => void,
    private width = 720,
    private height = 300
  ) {
    this.node.className = 'mj-parcoords';
    this.node.style.position = 'relative';
    this.canvas.width = width;
    this.canvas.height = height;
    this.overlay.setAttribute('width', String(width));
    this.overlay.setAttribute('height', String(height));
    this.overlay.style.position = 'absolute';
    this.overlay.style.left = '0';
    this.overlay.style.top = '0';
    this.node.append(this.canvas, this.overlay);
    this.ranges = data.map(col => extent(col.filter((v): v is number => v !== null)));
    this.drawAxes();
    this.redraw();
  }

  private x(i: number): number {
    return 40 + (i * (this.width - 80)) / Math.max(1, this.axes.length - 1);
  }

  private y(axis: number, v: number): number {
    const [lo, hi] = this.ranges[axis];
    return this.height - 30 - ((v - lo) / (hi - lo)) * (this.height - 50);
  }

  private value(axis: number, y: number): number {
    const [lo, hi] = this.ranges[axis];
    return lo + ((this.height - 30 - y) / (this.height - 50)) * (hi - lo);
  }

  private drawAxes(): void {
    this.overlay.replaceChildren();
    this.axes.forEach((name, i) => {
      const x = this.x(i);
      const g = svgEl('g', { class: 'mj-pc-axis', 'data-axis': name });
      g.appendChild(svgEl('line', { x1: x, y1: 20, x2: x, y2: this.height - 30, stroke: 'currentColor' }));
      g.appendChild(svgEl('text', { x, y: this.height - 12, 'text-anchor': 'middle', 'font-size': 11, fill: 'currentColor' }, name));
      const [lo, hi] = this.ranges[i];
      g.appendChild(svgEl('text', { x: x + 3, y: 16, 'font-size': 9, fill: 'currentColor' }, String(Number(hi.toPrecision(3)))));
      g.appendChild(svgEl('text', { x: x + 3, y: this.height - 32, 'font-size': 9, fill: 'currentColor' }, String(Number(lo.toPrecision(3)))));
      // a wide transparent hit area to drag a brush on
      const hit = svgEl('rect', { x: x - 12, y: 20, width: 24, height: this.height - 50, fill: 'transparent', class: 'mj-pc-hit', 'data-axis': name });
      g.appendChild(hit);
      const b = this.brushes.get(name);
      if (b) {
        const y0 = this.y(i, b[1]);
        const y1 = this.y(i, b[0]);
        g.appendChild(svgEl('rect', { x: x - 8, y: y0, width: 16, height: Math.max(2, y1 - y0), class: 'mj-pc-brush', fill: 'rgba(31,119,180,0.25)', stroke: '#1f77b4' }));
      }
      hit.onpointerdown = e => this.startBrush(i, e);
      g.ondblclick = () => {
        this.brushes.delete(name);
        this.changed();
      };
      this.overlay.appendChild(g);
    });
  }

  private startBrush(axis: number, e: PointerEvent): void {
    e.preventDefault();
    const top = this.overlay.getBoundingClientRect().top;
    const y0 = e.clientY - top;
    const move = (ev: PointerEvent) => {
      const y1 = ev.clientY - top;
      const a = this.value(axis, Math.max(y0, y1));
      const b = this.value(axis, Math.min(y0, y1));
      if (Math.abs(y1 - y0) < 2) {
        this.brushes.delete(this.axes[axis]);
      } else {
        this.brushes.set(this.axes[axis], [a, b]);
      }
      this.drawAxes();
      this.redraw();
    };
    const up = (ev: PointerEvent) => {
      move(ev);
      window.removeEventListener('pointermove', move);
      window.removeEventListener('pointerup', up);
      this.changed();
    };
    window.addEventListener('pointermove', move);
    window.addEventListener('pointerup', up);
  }

  /** Brush an axis from code (tests, benchmarks): range in data units. */
  brush(axis: string, lo: number, hi: number): void {
    this.brushes.set(axis, [lo, hi]);
    this.changed();
  }

  private changed(): void {
    this.drawAxes();
    this.redraw();
    this.onBrush(this.brushes);
  }

  /** Runs inside every brush. */
  inside(run: number): boolean {
    for (const [name, [lo, hi]] of this.brushes) {
      const v = this.data[this.axes.indexOf(name)][run];
      if (v === null || v < lo || v > hi) {
        return false;
      }
    }
    return true;
  }

  redraw(): void {
    const t0 = performance.now();
    const ctx = this.canvas.getContext('2d');
    if (!ctx) {
      return;
    }
    ctx.clearRect(0, 0, this.width, this.height);
    const n = this.data.length ? this.data[0].length : 0;
    // dimmed lines first, then the brushed ones on top, each batch in one path
    for (const pass of [false, true]) {
      ctx.beginPath();
      ctx.strokeStyle = pass ? 'rgba(31,119,180,0.55)' : 'rgba(150,150,150,0.15)';
      ctx.lineWidth = 1;
      for (let r = 0; r < n; r++) {
        if (this.inside(r) !== pass) {
          continue;
        }
        let started = false;
        for (let a = 0; a < this.axes.length; a++) {
          const v = this.data[a][r];
          if (v === null) {
            started = false;
            continue;
          }
          const px = this.x(a);
          const py = this.y(a, v);
          if (started) {
            ctx.lineTo(px, py);
          } else {
            ctx.moveTo(px, py);
            started = true;
          }
        }
      }
      ctx.stroke();
    }
    this.lastRedrawMs = performance.now() - t0;
    this.node.dataset.redrawMs = this.lastRedrawMs.toFixed(2);
  }
}
