// Compare: the curves of the selected runs (one request for every key), params with the
// differing ones highlighted, metric summaries. While a run is running, a poll asks only
// for the points after the last step seen and updates the charts in place.
import { api } from '../api';
import { CurveChart, CurveOptions, destroyCharts } from '../charts';
import { Compare } from '../types';
import { el, fmtDuration, fmtNum, fmtValue, section, table } from '../util';

export class CompareView {
  keys: string[] | null = null;
  options: CurveOptions = {};
  private charts = new Map<string, CurveChart>();
  private last: Compare | null = null;

  constructor(
    readonly body: HTMLElement,
    private ids: () => string[],
    private width: () => number,
    private onError: (e: unknown) => void
  ) {}

  /** Full render (selection or chosen keys changed). */
  async render(): Promise<void> {
    const ids = this.ids();
    if (ids.length < 1) {
      this.clear();
      this.body.replaceChildren(el('div', 'mj-empty', 'Select runs with the checkboxes in the Runs tab to compare them.'));
      return;
    }
    let c: Compare;
    try {
      c = await api<Compare>('compare', { ids: ids.join(','), keys: this.keys?.join(','), max_points: '1000' });
    } catch (e) {
      this.onError(e);
      return;
    }
    this.onError(null);
    this.last = c;
    this.clear();
    this.body.replaceChildren();
    this.draw(c);
  }

  /** Incremental refresh: only points after the last step seen, charts updated in place. */
  async poll(): Promise<number> {
    const c = this.last;
    if (!c || !c.runs.some(r => r.status === 'running') || !this.charts.size) {
      return 0;
    }
    let since = Infinity;
    for (const chart of this.charts.values()) {
      for (const cv of chart.data) {
        since = Math.min(since, cv.step.length ? cv.step[cv.step.length - 1] : -1);
      }
    }
    const fresh = await api<Compare>('compare', {
      ids: c.runs.map(r => r.id).join(','),
      keys: Array.from(this.charts.keys()).join(','),
      max_points: '1000',
      since_step: isFinite(since) ? String(since) : undefined
    });
    const t0 = performance.now();
    let points = 0;
    for (const [key, curves] of Object.entries(fresh.curves)) {
      this.charts.get(key)?.append(curves);
      points += curves.reduce((a, cv) => a + cv.step.length, 0);
    }
    this.last = { ...c, runs: fresh.runs };
    // uPlot redraws in a microtask queued by setData: these resume after it
    await Promise.resolve();
    await Promise.resolve();
    // the browser's cost of one poll (merge + in-place redraw), read by the benchmark
    this.body.dataset.pollMs = (performance.now() - t0).toFixed(2);
    this.body.dataset.pollPoints = String(points);
    this.body.dataset.polls = String(Number(this.body.dataset.polls ?? '0') + 1);
    return points;
  }

  setOptions(o: CurveOptions): void {
    this.options = o;
    for (const chart of this.charts.values()) {
      chart.update(chart.data, o);
    }
  }

  clear(): void {
    destroyCharts(this.body);
    this.charts.clear();
  }

  private draw(c: Compare): void {
    const body = this.body;
    const names = c.runs.map(r => r.name);
    const charts = el('div', 'mj-charts');
    // chips choose the curves drawn (default: up to 4 metrics the runs share)
    const shown = Object.keys(c.curves);
    const chips = el('div', 'mj-key-chips');
    for (const k of c.metric_keys) {
      const chip = el('button', shown.includes(k) ? 'mj-key-chip mj-on' : 'mj-key-chip', k);
      chip.onclick = () => {
        this.keys = shown.includes(k) ? shown.filter(x => x !== k) : [...shown, k];
        void this.render();
      };
      chips.appendChild(chip);
    }
    const curves = el('div');
    curves.append(chips, charts);
    body.append(section('Metric curves', curves));
    if (!shown.length) {
      charts.appendChild(el('div', 'mj-empty', 'no metrics logged'));
    }
    for (const [key, cv] of Object.entries(c.curves)) {
      if (cv.length) {
        const chart = new CurveChart(key, cv, this.width(), this.options);
        this.charts.set(key, chart);
        charts.appendChild(chart.host);
      }
    }
    const ptable = table(['param', ...names], c.param_keys.map(k => [k, ...c.runs.map(r => fmtValue(r.params[k]))]), 'mj-table mj-params');
    c.param_keys.forEach((k, i) => {
      if (c.params_differ.includes(k)) {
        ptable.tBodies[0].rows[i].classList.add('mj-differ');
      }
    });
    body.append(section('Parameters (differences highlighted)', c.param_keys.length ? ptable : null));
    const rows: string[][] = [];
    for (const k of c.metric_keys) {
      for (const stat of ['last', 'min', 'max'] as const) {
        rows.push([`${k} ${stat}`, ...c.runs.map(r => fmtNum(r.metrics[k]?.[stat] ?? null))]);
      }
    }
    body.append(section('Metric summaries', rows.length ? table(['metric', ...names], rows) : null));
    body.append(
      section('Runs', table(['run', 'status', 'experiment', 'duration'], c.runs.map(r => [r.name, r.status, r.experiment, fmtDuration(r.duration_s)])))
    );
  }
}
