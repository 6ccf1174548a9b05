// Metric curves with uPlot (bundled into the extension, no CDN). A chart is updated in
// place (uPlot.setData) when new points arrive; it is rebuilt only when its runs change.
import uPlot from 'uplot';
import { Curve } from './types';

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export function color(i: number): string {
  return PALETTE[i % PALETTE.length];
}

export interface CurveOptions {
  log?: boolean; // log-scale y (non-positive values are dropped)
  smooth?: number; // exponential moving average weight in [0, 1)
  xTime?: boolean; // x = wall-clock time instead of step
}

/** Exponential moving average as in TensorBoard (debiased), nulls kept as gaps. */
export function smooth(values: (number | null)[], weight: number): (number | null)[] {
  if (!(weight > 0)) {
    return values;
  }
  let last = 0;
  let n = 0;
  return values.map(v => {
    if (v === null || !isFinite(v)) {
      return null;
    }
    last = last * weight + (1 - weight) * v;
    n++;
    return last / (1 - Math.pow(weight, n));
  });
}

/** Merge the points of `fresh` (after `since`) into `old`: the incremental refresh. */
export function mergeCurve(old: Curve, fresh: Curve): Curve {
  const last = old.step.length ? old.step[old.step.length - 1] : -Infinity;
  const keep = fresh.step.map((s, i) => (s > last ? i : -1)).filter(i => i >= 0);
  return {
    ...fresh,
    step: old.step.concat(keep.map(i => fresh.step[i])),
    ts: old.ts.concat(keep.map(i => fresh.ts[i])),
    value: old.value.concat(keep.map(i => fresh.value[i]))
  };
}

function tables(curves: Curve[], o: CurveOptions): uPlot.AlignedData {
  const parts = curves.map(c => {
    let y = smooth(c.value, o.smooth ?? 0);
    if (o.log) {
      y = y.map(v => (v !== null && v > 0 ? v : null));
    }
    return [o.xTime ? c.ts : c.step, y] as unknown as uPlot.AlignedData;
  });
  if (parts.length === 1) {
    return parts[0];
  }
  return uPlot.join(parts);
}

/** Overlaid curves of one metric key for several runs. */
export class CurveChart {
  readonly host: HTMLElement;
  private plot: uPlot | null = null;
  private curves: Curve[];
  private names = '';
  private destroyed = false;

  constructor(
    readonly key: string,
    curves: Curve[],
    private width: number,
    private options: CurveOptions = {}
  ) {
    this.host = document.createElement('div');
    this.host.className = 'mj-chart';
    this.host.dataset.key = key;
    this.curves = curves;
    charts.set(this.host, this);
    // uPlot measures its host: draw once it is attached to the document
    requestAnimationFrame(() => this.draw());
  }

  get data(): Curve[] {
    return this.curves;
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /** New data: drawn in place when the runs are the same, else the chart is rebuilt. */
  update(curves: Curve[], options?: CurveOptions): void {
    const rebuild = options !== undefined && JSON.stringify(options) !== JSON.stringify(this.options);
    if (options) {
      this.options = options;
    }
    this.curves = curves;
    const names = curves.map(c => `${c.run_id}:${c.name}`).join('|');
    if (!this.plot || rebuild || names !== this.names) {
      this.draw();
      return;
    }
    this.plot.setData(tables(curves, this.options));
    this.host.dataset.points = String(curves.reduce((a, c) => a + c.step.length, 0));
    this.host.dataset.updates = String(Number(this.host.dataset.updates ?? '0') + 1);
  }

  /** Append the new points of each run's curve (answers of a since_step request). */
  append(fresh: Curve[]): void {
    const byRun = new Map(fresh.map(c => [c.run_id, c]));
    this.update(this.curves.map(c => (byRun.has(c.run_id) ? mergeCurve(c, byRun.get(c.run_id)!) : c)));
  }

  resize(width: number): void {
    this.width = width;
    this.plot?.setSize({ width: Math.max(200, width), height: 180 });
  }

  private draw(): void {
    if (this.destroyed) {
      return;
    }
    this.plot?.destroy();
    this.host.replaceChildren();
    const o = this.options;
    const opts: uPlot.Options = {
      title: this.key,
      width: Math.max(200, this.width),
      height: 180,
      legend: { show: true, live: false },
      scales: { x: { time: !!o.xTime }, y: o.log ? { distr: 3 } : {} },
      axes: [{ stroke: 'var(--jp-ui-font-color1)' }, { stroke: 'var(--jp-ui-font-color1)', size: 55 }],
      series: [
        { label: o.xTime ? 'time' : 'step' },
        ...this.curves.map((c, i) => ({ label: c.name, stroke: color(i), width: 1.5, spanGaps: true }))
      ]
    };
    this.names = this.curves.map(c => `${c.run_id}:${c.name}`).join('|');
    this.plot = new uPlot(opts, tables(this.curves, o), this.host);
    this.host.dataset.drawn = 'true';
    this.host.dataset.points = String(this.curves.reduce((a, c) => a + c.step.length, 0));
  }

  destroy(): void {
    this.destroyed = true;
    this.plot?.destroy();
    this.plot = null;
    charts.delete(this.host);
  }
}

const charts = new Map<HTMLElement, CurveChart>();

/** A chart of one key (the sidebar's simple use). */
export function curveChart(key: string, curves: Curve[], width: number): HTMLElement {
  return new CurveChart(key, curves, width).host;
}

/** Destroy the charts under `root` before it is re-rendered: uPlot keeps window listeners. */
export function destroyCharts(root: HTMLElement): void {
  for (const host of Array.from(root.querySelectorAll<HTMLElement>('.mj-chart'))) {
    charts.get(host)?.destroy();
  }
}
