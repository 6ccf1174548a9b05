// LLM evaluation runs side by side (GET /llm/compare): per score, each run's mean ± 95 %
// bootstrap interval and its change against the first run (regressions highlighted); per
// example, the question, each run's answer and score, sortable by the change. Every
// question and answer is user text: it goes through textContent only.
import { api, ApiError } from '../api';
import { LlmCompare, LlmExampleRow, LlmScoreRow, LlmScoreValue, MetricInfo } from '../types';
import { el, fmtNum, table } from '../util';

export interface LlmRun {
  id: string;
  name: string;
}

const LIMIT = 200; // examples fetched; the table says how many there are in all
const TEXT_MAX = 400; // characters of a question or answer shown in a cell (full text in the tooltip)
const REGRESSED_STYLE = 'background: var(--jp-error-color3, #fdd); font-weight: 600';

/** Whether a run's metric summaries hold an LLM evaluation (`llm/...` scores). */
export function hasLlmEval(metrics: MetricInfo[]): boolean {
  return metrics.some(m => m.key.startsWith('llm/'));
}

function cut(s: string | null): string {
  if (s === null) {
    return '';
  }
  return s.length > TEXT_MAX ? s.slice(0, TEXT_MAX - 1) + '…' : s;
}

function fmtSigned(v: number | null): string {
  return v === null ? '–' : (v > 0 ? '+' : '') + fmtNum(v);
}

function fmtScore(v: LlmScoreValue | null): string {
  if (v === null || v.mean === null) {
    return '–';
  }
  if (v.ci_low === null || v.ci_high === null) {
    return fmtNum(v.mean);
  }
  return `${fmtNum(v.mean)} ± ${fmtNum((v.ci_high - v.ci_low) / 2)}`;
}

/** A text cell: cut to TEXT_MAX characters, the whole text in the tooltip. */
function textCell(s: string | null, cls: string): HTMLElement {
  const span = el('span', cls, cut(s));
  if (s !== null && s.length > TEXT_MAX) {
    span.title = s;
  }
  return span;
}

export class LlmView {
  readonly node = el('div', 'mj-llm');
  private metric = '';
  private data: LlmCompare | null = null;
  private sortDesc: boolean | null = null; // null: the server's order (worst drop first)

  constructor(private runs: LlmRun[]) {
    this.node.style.display = 'none';
    this.node.style.overflowX = 'auto'; // answers side by side are wider than the sidebar
  }

  /** Fetch and render; a 404 (no evaluation in a run, or no route) shows nothing. */
  async load(): Promise<void> {
    try {
      this.data = await api<LlmCompare>('llm/compare', {
        runs: this.runs.map(r => r.id).join(','),
        metric: this.metric || undefined,
        limit: String(LIMIT)
      });
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        this.data = null;
        this.node.style.display = 'none';
        return;
      }
      throw e;
    }
    this.metric = this.data.metric;
    this.render();
  }

  private render(): void {
    const d = this.data;
    this.node.replaceChildren();
    if (!d) {
      this.node.style.display = 'none';
      return;
    }
    this.node.style.display = '';
    this.node.dataset.metric = d.metric;
    this.node.appendChild(el('h3', 'mj-section-title', 'LLM evaluation'));
    this.node.appendChild(this.scoresTable(d));
    const bar = el('div', 'mj-filter-row mj-llm-bar');
    const pick = el('select', 'mj-input mj-llm-metric', null, { title: 'per-example score' });
    for (const m of d.metrics_available) {
      const o = el('option', '', m, { value: m });
      o.selected = m === d.metric;
      pick.appendChild(o);
    }
    pick.onchange = () => {
      this.metric = pick.value;
      this.sortDesc = null;
      void this.load();
    };
    const shown = Math.min(d.examples.total, d.examples.rows.length);
    bar.append(
      el('span', 'mj-muted', 'examples by'),
      pick,
      el('span', 'mj-muted mj-llm-count', `${shown} of ${d.examples.total}${d.runs.length > 1 ? ', biggest drop first' : ', worst first'}`)
    );
    this.node.append(bar, this.examplesTable(d));
  }

  private scoresTable(d: LlmCompare): HTMLElement {
    const multi = d.runs.length > 1;
    const heads = ['score', ...d.runs.map((r, i) => (i === 0 || !multi ? r.name : `${r.name} (Δ vs ${d.runs[0].name})`))];
    const rows = d.scores.map(s => this.scoreCells(s, multi));
    const t = table(heads, rows, 'mj-table mj-llm-scores');
    // highlight the regressions: a run's mean beyond the first run's interval, in the bad direction
    d.scores.forEach((s, i) => {
      const tr = t.tBodies[0].rows[i];
      tr.dataset.metric = s.metric;
      s.regressed.forEach((bad, j) => {
        if (bad) {
          const td = tr.cells[j + 1];
          td.classList.add('mj-llm-regressed');
          td.setAttribute('style', REGRESSED_STYLE);
          td.title = `below the interval of ${d.runs[0].name}`;
        }
      });
    });
    return t;
  }

  private scoreCells(s: LlmScoreRow, multi: boolean): string[] {
    const label = s.metric + (s.lower_is_better ? ' (lower is better)' : s.descriptive ? ' (descriptive)' : '');
    return [label, ...s.values.map((v, j) => fmtScore(v) + (multi && j > 0 ? `  (${fmtSigned(s.delta[j])})` : ''))];
  }

  private examplesTable(d: LlmCompare): HTMLElement {
    const multi = d.runs.length > 1;
    const t = el('table', 'mj-table mj-llm-examples');
    const head = t.createTHead().insertRow();
    head.appendChild(el('th', '', '#'));
    head.appendChild(el('th', '', 'question'));
    d.runs.forEach(r => head.appendChild(el('th', 'mj-llm-answer-head', `answer: ${r.name}`)));
    d.runs.forEach(r => head.appendChild(el('th', '', `${d.metric}: ${r.name}`)));
    if (multi) {
      const arrow = this.sortDesc === null ? '' : this.sortDesc ? ' ▾' : ' ▴';
      const th = el('th', 'mj-llm-sort-delta', `Δ ${d.metric}${arrow}`, { title: 'sort by the change against the first run' });
      th.style.cursor = 'pointer';
      th.onclick = () => {
        this.sortDesc = this.sortDesc === null ? true : !this.sortDesc;
        this.render();
      };
      head.appendChild(th);
    }
    const body = t.createTBody();
    for (const r of this.sorted(d.examples.rows)) {
      const tr = body.insertRow();
      tr.className = 'mj-llm-example';
      tr.dataset.row = String(r.row);
      tr.insertCell().textContent = String(r.row);
      tr.insertCell().appendChild(textCell(r.question, 'mj-llm-question'));
      r.answers.forEach((a, j) => {
        const td = tr.insertCell();
        td.appendChild(textCell(a, 'mj-llm-answer'));
        const err = r.errors[j];
        if (err) {
          td.appendChild(el('div', 'mj-cell-error', err));
        }
      });
      r.scores.forEach(s => (tr.insertCell().textContent = fmtNum(s)));
      if (multi) {
        const td = tr.insertCell();
        td.className = 'mj-llm-delta';
        td.textContent = fmtSigned(r.delta);
        const worse = r.delta !== null && (d.lower_is_better ? r.delta > 0 : r.delta < 0);
        if (worse) {
          td.setAttribute('style', REGRESSED_STYLE);
        }
      }
    }
    return t;
  }

  /** The rows in the server's order, or by the change (missing changes last). */
  private sorted(rows: LlmExampleRow[]): LlmExampleRow[] {
    const desc = this.sortDesc;
    if (desc === null) {
      return rows;
    }
    return [...rows].sort((a, b) => {
      if (a.delta === null || b.delta === null) {
        return a.delta === b.delta ? 0 : a.delta === null ? 1 : -1;
      }
      return desc ? b.delta - a.delta : a.delta - b.delta;
    });
  }
}
