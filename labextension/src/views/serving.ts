// Serving: served models (GET serving) and one model's traffic by variant, latency
// percentiles, error rate, per-window charts, drift per window, the A/B verdict with its
// recommended action and the rollout history (GET serving/{model}). Refreshed by the panel's
// poll while the tab is visible. Every name and reason is stored text: textContent only.
import { api } from '../api';
import { CurveChart } from '../charts';
import { Curve, Json } from '../types';
import { el, fmtNum, fmtTime, section, table } from '../util';

export interface ServedModel {
  model: string;
  requests: number;
  first_ts: number;
  last_ts: number;
}

export interface VariantStats {
  variant: string;
  versions: number[];
  shadow: boolean;
  requests: number;
  share: number | null;
  errors: number;
  client_errors: number;
  error_rate: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  last_ts: number;
}

export interface WindowSeries {
  variant: string;
  requests: number[];
  errors: number[];
  error_rate: (number | null)[];
  p50_ms: (number | null)[];
  p95_ms: (number | null)[];
  p99_ms: (number | null)[];
}

export interface ServingWindows {
  window_s: number;
  start: number[];
  series: WindowSeries[];
}

export interface VerdictRow {
  variant: string;
  control: string;
  metric: string;
  n: number;
  estimate: number | null;
  n_control: number;
  control_estimate: number | null;
  diff: number | null;
  ci_low: number | null;
  ci_high: number | null;
  pvalue: number | null;
  always_valid_p: number | null;
  cs_low: number | null;
  cs_high: number | null;
  effect_for_n: number | null;
  n_needed_control: number | null;
  n_needed_variant: number | null;
  action: string;
}

export interface Verdict {
  control: string;
  metric: string;
  alpha: number;
  correction: string;
  looks: number;
  variants: VerdictRow[];
  higher_is_better: boolean;
  winner: string | null;
}

export interface DriftWindow {
  window_start: number;
  window_end: number;
  variant: string | null;
  version: number | null;
  n: number;
  drifted: boolean | null; // null: not judged (no reference data)
  share: number | null;
  columns: Json;
}

export interface RolloutEntry {
  ts: number;
  version: number | null;
  reason: string | null;
  user: string | null;
}

export interface ServingDetail {
  model: string;
  requests: number;
  first_ts: number | null;
  last_ts: number | null;
  variants: VariantStats[];
  windows: ServingWindows | null;
  verdict: Verdict | null;
  verdict_note: string | null;
  rollouts: RolloutEntry[];
  drift: DriftWindow[];
  drift_note: string | null;
  canary: { [key: string]: Json } | null;
  canary_note: string | null;
  elapsed_ms: number;
}

const STALE_MS = 30_000; // feedback, drift and rollouts change without new predictions

const WINDOWS: [string, string][] = [
  ['', 'auto'],
  ['1m', '1 min'],
  ['5m', '5 min'],
  ['15m', '15 min'],
  ['1h', '1 h'],
  ['1d', '1 day']
];

function pct(v: number | null): string {
  return v === null ? '–' : `${fmtNum(Math.round(v * 1000) / 10)}%`;
}

function interval(lo: number | null, hi: number | null): string {
  return lo === null || hi === null ? '(unbounded)' : `[${fmtNum(lo)}, ${fmtNum(hi)}]`;
}

/** The drifted columns of a window as names (a list of names, or {name: statistic}). */
export function columnNames(columns: Json): string[] {
  if (Array.isArray(columns)) {
    return columns.map(c => (c !== null && typeof c === 'object' && !Array.isArray(c) && typeof c['column'] === 'string' ? c['column'] : String(c)));
  }
  if (columns !== null && typeof columns === 'object') {
    return Object.keys(columns);
  }
  return [];
}

/** One curve per variant over the windows (x = window start time). */
function curves(w: ServingWindows, pick: (s: WindowSeries) => (number | null)[]): Curve[] {
  return w.series.map(s => {
    const value = pick(s);
    return {
      key: s.variant,
      run_id: s.variant,
      name: s.variant,
      n: value.length,
      decimated: false,
      last_step: value.length - 1,
      step: value.map((_, i) => i),
      ts: w.start,
      value
    };
  });
}

export class ServingView {
  readonly node = el('div', 'mj-serving');
  private picker = el('select', 'mj-input mj-serving-model');
  private windowPick = el('select', 'mj-input mj-serving-window');
  private status = el('div', 'mj-muted mj-serving-status');
  private body = el('div', 'mj-serving-body');
  private model = '';
  private charts = new Map<string, CurveChart>();
  private lastKey = '';
  private lastLoad = 0;

  constructor(private width: () => number) {
    const bar = el('div', 'mj-filter-row');
    for (const [value, label] of WINDOWS) {
      this.windowPick.appendChild(el('option', '', label, { value }));
    }
    this.windowPick.title = 'window of the charts';
    this.picker.onchange = () => {
      this.model = this.picker.value;
      void this.refresh();
    };
    this.windowPick.onchange = () => void this.refresh();
    bar.append(this.picker, this.windowPick);
    this.node.append(bar, this.status, this.body);
  }

  /** Reload the served models and the picked model's detail. A poll (`force` false)
   * skips the detail while the model logged nothing new, for up to STALE_MS: the detail
   * reads the model's whole log, the list only an index. */
  async refresh(force = true): Promise<void> {
    const { models } = await api<{ models: ServedModel[] }>('serving');
    this.fillPicker(models);
    const m = models.find(x => x.model === this.model);
    if (!m) {
      this.status.textContent = '';
      this.destroyCharts();
      this.body.replaceChildren(el('div', 'mj-empty', 'no served model has logged a prediction yet (mlops-jupyter serve NAME)'));
      return;
    }
    const key = `${m.model}|${this.windowPick.value}|${m.requests}|${m.last_ts}`;
    if (!force && key === this.lastKey && Date.now() - this.lastLoad < STALE_MS) {
      return;
    }
    const d = await api<ServingDetail>(`serving/${encodeURIComponent(m.model)}`, { window: this.windowPick.value });
    if (d.model === this.model) {
      this.render(d);
      this.lastKey = key;
      this.lastLoad = Date.now();
    }
  }

  private fillPicker(models: ServedModel[]): void {
    if (!models.some(m => m.model === this.model)) {
      this.model = models.length ? models[0].model : '';
    }
    const names = models.map(m => m.model).join('\n');
    if (this.picker.dataset.names !== names) {
      this.picker.replaceChildren(...models.map(m => el('option', '', m.model, { value: m.model })));
      this.picker.dataset.names = names;
    }
    this.picker.value = this.model;
  }

  private destroyCharts(): void {
    for (const c of this.charts.values()) {
      c.destroy();
    }
    this.charts.clear();
  }

  private chart(key: string, data: Curve[]): HTMLElement {
    let c = this.charts.get(key);
    if (!c || c.isDestroyed) {
      c = new CurveChart(key, data, this.width(), { xTime: true });
      this.charts.set(key, c);
    } else {
      c.update(data);
    }
    return c.host;
  }

  render(d: ServingDetail): void {
    this.status.textContent = `${d.requests} requests · last ${fmtTime(d.last_ts)}${d.windows ? ` · window ${fmtNum(d.windows.window_s)} s` : ''}`;
    const parts: HTMLElement[] = [];
    parts.push(section('Traffic by variant', this.variantTable(d.variants), 'no requests in this range'));
    if (d.windows) {
      const w = d.windows;
      const charts = el('div', 'mj-serving-charts');
      charts.append(
        this.chart(
          'requests per window',
          curves(w, s => s.requests)
        ),
        this.chart(
          'p95 latency (ms)',
          curves(w, s => s.p95_ms)
        ),
        this.chart(
          'error rate',
          curves(w, s => s.error_rate)
        )
      );
      parts.push(section('Per window', charts));
    }
    parts.push(section('A/B verdict', d.verdict ? this.verdict(d.verdict) : null, d.verdict_note ?? 'no verdict'));
    parts.push(section('Drift per window', d.drift.length ? this.drift(d.drift) : null, d.drift_note ?? 'no drift windows yet'));
    if (d.canary) {
      const rows = Object.entries(d.canary).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]);
      parts.push(section('Rollout state', table(['field', 'value'], rows, 'mj-table mj-serving-canary')));
    }
    parts.push(
      section(
        'Rollout history',
        d.rollouts.length
          ? table(
              ['time', 'layout', 'user'],
              d.rollouts.map(r => [fmtTime(r.ts), r.reason ?? '', r.user ?? '']),
              'mj-table mj-serving-rollouts'
            )
          : null,
        'no rollout recorded'
      )
    );
    this.body.replaceChildren(...parts);
  }

  private variantTable(vs: VariantStats[]): HTMLElement | null {
    if (!vs.length) {
      return null;
    }
    const t = table(
      ['variant', 'requests', 'share', '5xx', 'p50 ms', 'p95 ms', 'p99 ms'],
      vs.map(v => [
        v.shadow ? `${v.variant} (shadow)` : v.variant,
        String(v.requests),
        pct(v.share),
        pct(v.error_rate),
        fmtNum(v.p50_ms),
        fmtNum(v.p95_ms),
        fmtNum(v.p99_ms)
      ]),
      'mj-table mj-serving-variants'
    );
    const rows = t.tBodies[0].rows;
    vs.forEach((v, i) => {
      rows[i].dataset.variant = v.variant;
      rows[i].dataset.requests = String(v.requests);
      rows[i].cells[0].title = `version(s) ${v.versions.join(', ')}; ${v.client_errors} client errors (4xx)`;
      if (v.error_rate > 0.05) {
        rows[i].cells[3].classList.add('mj-serving-bad');
      }
    });
    return t;
  }

  private verdict(r: Verdict): HTMLElement {
    const box = el('div', 'mj-serving-verdict');
    const actions = r.variants.map(v => v.action);
    const head = el('div', 'mj-serving-action', r.winner ? `Recommended: promote ${r.winner}` : `Recommended: ${actions.join('; ')}`);
    head.dataset.winner = r.winner ?? '';
    box.appendChild(head);
    box.appendChild(el('div', 'mj-muted', `${r.metric} metric · control ${r.control} · alpha ${fmtNum(r.alpha)} (${r.correction})`));
    // one card per variant: the sidebar is too narrow for a ten-column table
    for (const v of r.variants) {
      const card = el('div', 'mj-card mj-serving-ab');
      card.dataset.variant = v.variant;
      const what = r.metric === 'binary' ? 'rate' : 'mean';
      card.append(
        el('div', 'mj-card-title', `${v.variant} vs ${v.control}`),
        el('div', '', `${what} ${fmtNum(v.estimate)} (n ${v.n}) vs ${fmtNum(v.control_estimate)} (n ${v.n_control})`),
        el('div', '', `diff ${v.diff === null ? '–' : (v.diff > 0 ? '+' : '') + fmtNum(v.diff)}, always valid ${interval(v.cs_low, v.cs_high)}`),
        el('div', '', `p ${fmtNum(v.always_valid_p)} (always valid) · ${fmtNum(v.pvalue)} (fixed horizon)`),
        el('div', 'mj-muted', v.n_needed_variant === null ? 'sample size: –' : `still needed: ${v.n_needed_variant} + ${v.n_needed_control ?? 0} (control)`),
        el('div', 'mj-serving-ab-action', v.action)
      );
      box.appendChild(card);
    }
    return box;
  }

  private drift(ws: DriftWindow[]): HTMLElement {
    const t = table(
      ['window', 'variant', 'version', 'n', 'drifted', 'share', 'columns'],
      ws.map(w => [
        `${fmtTime(w.window_start)} – ${fmtTime(w.window_end)}`,
        w.variant ?? '–',
        w.version === null ? '–' : String(w.version),
        String(w.n),
        w.drifted === null ? 'not judged' : w.drifted ? 'drifted' : 'ok',
        pct(w.share),
        columnNames(w.columns).join(', ')
      ]),
      'mj-table mj-serving-drift'
    );
    ws.forEach((w, i) => {
      if (w.drifted) {
        t.tBodies[0].rows[i].classList.add('mj-serving-drifted');
      }
    });
    return t;
  }
}
