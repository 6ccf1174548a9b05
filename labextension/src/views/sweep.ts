// A sweep run's progress across its workers (GET sweeps/{id}): trial counts, trials/s,
// best so far, a per-worker table and parallel coordinates of params against the
// objective (the dashboard's ParallelCoords: brush an axis to pick out trials).
import { api } from '../api';
import { ParallelCoords } from '../dashboard/plots';
import { Json, RunDetail } from '../types';
import { el, fmtNum, fmtValue, section, table } from '../util';

export type TrialState = 'running' | 'complete' | 'pruned' | 'fail';

export interface SweepTrial {
  trial: number;
  run_id: string;
  name: string | null;
  state: TrialState;
  value: number | null;
  params: Record<string, Json>;
  worker: string;
  start_time: number;
  end_time: number | null;
}

export interface SweepWorker {
  worker: string;
  running: number;
  complete: number;
  pruned: number;
  fail: number;
  total: number;
}

export interface SweepAxis {
  name: string;
  kind: 'numeric' | 'categorical';
  log?: boolean;
  min?: number;
  max?: number;
  levels?: Json[];
}

export interface SweepBest {
  trial: number;
  run_id: string;
  value: number;
  params: Record<string, Json>;
  worker: string;
}

export interface SweepSummary {
  run_id: string;
  name: string | null;
  status: string;
  study: string | null;
  direction: 'minimize' | 'maximize';
  n_trials: number | null;
  elapsed_s: number;
  counts: Record<TrialState, number>;
  trials_per_s: number;
  recent_trials_per_s: number;
  best: SweepBest | null;
  workers: SweepWorker[];
  axes: SweepAxis[];
  objective: string;
  trials: SweepTrial[];
}

/** Whether a run is a sweep (mj.sweep tags its run `sweep`). */
export function isSweep(d: RunDetail): boolean {
  return d.tags['sweep'] === true || (d.tags['optuna.study'] !== undefined && !d.parent_id);
}

/** Where a param value falls on its axis: log10 on log axes, the level's index on
 * categorical ones (evenly spaced), null where it has none. */
function axisValue(axis: SweepAxis, v: Json | undefined): number | null {
  if (v === undefined || v === null) {
    return null;
  }
  if (axis.kind === 'categorical') {
    const key = typeof v === 'object' ? JSON.stringify(v) : v;
    const i = (axis.levels ?? []).indexOf(key);
    return i < 0 ? null : i;
  }
  if (typeof v !== 'number' || !isFinite(v)) {
    return null;
  }
  if (axis.log) {
    return v > 0 ? Math.log10(v) : null;
  }
  return v;
}

function axisLabel(axis: SweepAxis): string {
  if (axis.kind === 'categorical') {
    return `${axis.name}: ${(axis.levels ?? []).map(l => fmtValue(l)).join(' | ')}`;
  }
  return axis.log ? `log10 ${axis.name}` : axis.name;
}

// the last answer per sweep run: a running sweep's detail refreshes every few seconds and
// shows the previous state until the new one arrives, instead of a "loading" flash
const lastSeen = new Map<string, SweepSummary>();

export class SweepView {
  readonly node: HTMLElement = el('div', 'mj-sweep');
  chart: ParallelCoords | null = null;

  constructor(
    private runId: string,
    private width: number
  ) {
    const prev = lastSeen.get(runId);
    if (prev) {
      this.render(prev);
    } else {
      this.node.appendChild(section('Sweep', el('div', 'mj-muted', 'loading…')));
    }
  }

  async load(): Promise<SweepSummary> {
    const s = await api<SweepSummary>(`sweeps/${encodeURIComponent(this.runId)}`);
    lastSeen.set(this.runId, s);
    this.render(s);
    return s;
  }

  render(s: SweepSummary): void {
    const body = el('div', 'mj-sweep-body');
    const c = s.counts;
    const of = s.n_trials !== null ? ` of ${s.n_trials}` : '';
    const counts = el(
      'div',
      'mj-sweep-counts',
      `${c.complete} complete${of} · ${c.running} running · ${c.pruned} pruned · ${c.fail} failed`
    );
    counts.dataset.complete = String(c.complete);
    counts.dataset.running = String(c.running);
    counts.dataset.fail = String(c.fail);
    body.appendChild(counts);
    body.appendChild(
      el('div', 'mj-sweep-rate', `${fmtNum(s.trials_per_s)} trials/s overall · ${fmtNum(s.recent_trials_per_s)} recent · ${s.workers.length} worker(s)`)
    );
    const best = el('div', 'mj-sweep-best');
    if (s.best) {
      const ps = Object.entries(s.best.params)
        .map(([k, v]) => `${k}=${fmtValue(v)}`)
        .join(', ');
      best.textContent = `best (${s.direction}): trial ${s.best.trial} = ${fmtNum(s.best.value)} on ${s.best.worker}${ps ? ` · ${ps}` : ''}`;
    } else {
      best.textContent = 'best: no complete trial yet';
    }
    body.appendChild(best);
    body.appendChild(
      table(
        ['worker', 'running', 'complete', 'pruned', 'failed', 'total'],
        s.workers.map(w => [w.worker, String(w.running), String(w.complete), String(w.pruned), String(w.fail), String(w.total)]),
        'mj-table mj-sweep-workers'
      )
    );
    const done = s.trials.filter(t => t.state === 'complete' && t.value !== null);
    if (done.length && s.axes.length) {
      const axes = [...s.axes.map(axisLabel), s.objective];
      const data = [...s.axes.map(a => done.map(t => axisValue(a, t.params[a.name]))), done.map(t => t.value)];
      // as wide as the panel allows (the sidebar is narrow, the dashboard wide)
      const w = Math.max(240, Math.min(this.width - 24, 180 * axes.length));
      this.chart = new ParallelCoords(axes, data, b => this.brushed(b.size > 0, done), w, 260);
      this.chart.node.classList.add('mj-sweep-parcoords');
      body.appendChild(this.chart.node);
      body.appendChild(el('div', 'mj-muted mj-sweep-picked', `${done.length} complete trials; drag on an axis to pick a range`));
    }
    this.node.replaceChildren(section('Sweep', body));
  }

  private brushed(any: boolean, done: SweepTrial[]): void {
    const note = this.node.querySelector('.mj-sweep-picked');
    if (!note || !this.chart) {
      return;
    }
    const chart = this.chart;
    const picked = done.filter((_, i) => chart.inside(i));
    note.textContent = any ? `${picked.length} of ${done.length} trials picked: ${picked.map(t => t.trial).join(', ')}` : `${done.length} complete trials; drag on an axis to pick a range`;
  }
}
