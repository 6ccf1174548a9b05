// The sidebar's runs list: virtualised rows, server-side filter/sort/paging, a key metric
// column, checkboxes selecting runs for comparison.
import { api } from '../api';
import { Experiment, RunRow, RunsPage } from '../types';
import { badge, el, fmtDuration, fmtNum, fmtTime } from '../util';
import { nextSort, renderVisible, selectCheckbox } from '../virtual';

const ROW_H = 26;
const PAGE = 200;

function signature(exps: Experiment[]): string {
  return exps.map(e => `${e.name}:${e.runs}:${e.running}:${e.last_start}`).join('|');
}

export interface RunsCallbacks {
  open: (id: string) => void;
  selectionChanged: () => void;
  error: (e: unknown) => void;
}

export class RunsView {
  readonly node = el('div', 'mj-listview');
  readonly selected = new Map<string, string>(); // id -> name
  readonly search = el('input', 'mj-input mj-search', null, { placeholder: 'Search name / id', type: 'search' });
  readonly experiment = el('select', 'mj-input mj-experiment');
  readonly where = el('input', 'mj-input mj-where', null, { placeholder: 'Filter: params.lr>=0.01; metrics.loss<0.5' });
  readonly actions = el('div', 'mj-actions');
  private metricSelect = el('select', 'mj-input mj-metric', null, { title: 'Key metric column' });
  private status = el('select', 'mj-input mj-status');
  private count = el('div', 'mj-count');
  private header = el('div', 'mj-row mj-head');
  private viewport = el('div', 'mj-viewport');
  private spacer = el('div', 'mj-spacer');
  readonly compareButton = el('button', 'jp-mod-styled jp-mod-accept mj-compare-btn', 'Compare');
  private sort = 'start_time';
  private order: 'asc' | 'desc' = 'desc';
  private total = 0;
  private metric: string | null = null;
  private pages = new Map<number, RunRow[]>();
  private inflight = new Map<number, Promise<void>>();
  private generation = 0;
  lastLoad = 0;
  private storeSignature = '';

  constructor(private cb: RunsCallbacks) {
    const filters = el('div', 'mj-filters');
    this.status.appendChild(el('option', '', 'any status', { value: '' }));
    for (const s of ['running', 'finished', 'failed', 'killed', 'crashed', 'stopped']) {
      this.status.appendChild(el('option', '', s, { value: s }));
    }
    this.experiment.appendChild(el('option', '', 'all experiments', { value: '' }));
    let debounce: number | undefined;
    this.search.oninput = () => {
      window.clearTimeout(debounce);
      debounce = window.setTimeout(() => void this.reload(), 250);
    };
    this.where.onchange = () => void this.reload();
    this.where.onkeydown = e => {
      if (e.key === 'Enter') {
        void this.reload();
      }
    };
    this.status.onchange = () => void this.reload();
    this.experiment.onchange = () => void this.reload();
    const refresh = el('button', 'jp-mod-styled mj-refresh', '↻', { title: 'Refresh' });
    refresh.onclick = () => void this.reload();
    const row1 = el('div', 'mj-filter-row');
    row1.append(this.search, refresh);
    const row2 = el('div', 'mj-filter-row');
    row2.append(this.experiment, this.status, this.metricSelect);
    this.metricSelect.onchange = () => {
      this.metric = this.metricSelect.value || null;
      void this.reload(false);
    };
    filters.append(row1, row2, this.where);
    this.compareButton.disabled = true;
    this.actions.append(this.count, this.compareButton);
    this.viewport.appendChild(this.spacer);
    this.viewport.onscroll = () => this.renderRows();
    this.node.append(filters, this.actions, this.header, this.viewport);
    this.renderHeader();
  }

  private query(offset: number): Record<string, string | string[] | undefined> {
    const where = this.where.value
      .split(';')
      .map(s => s.trim())
      .filter(s => s);
    return {
      q: this.search.value.trim(),
      experiment: this.experiment.value,
      status: this.status.value,
      where,
      sort: this.sort,
      order: this.order,
      metric: this.metric ?? undefined,
      limit: String(PAGE),
      offset: String(offset)
    };
  }

  /** Drop cached pages and load the visible ones again (keeps the scroll position). */
  async reload(resetMetric = true): Promise<void> {
    this.lastLoad = Date.now();
    this.generation++;
    if (resetMetric && this.sort !== 'metric') {
      this.metric = null;
    }
    const gen = this.generation;
    try {
      await this.loadExperiments();
      const first = Math.floor(this.viewport.scrollTop / ROW_H / PAGE);
      const page = await api<RunsPage>('runs', this.query(first * PAGE));
      if (gen !== this.generation) {
        return;
      }
      this.cb.error(null);
      this.pages.clear();
      this.inflight.clear();
      this.pages.set(first, page.runs);
      this.total = page.total;
      this.metric = page.metric;
      this.count.textContent = `${page.total} run${page.total === 1 ? '' : 's'}`;
      void this.loadMetricKeys().catch(() => undefined);
      this.renderHeader();
      this.renderRows();
    } catch (e) {
      this.cb.error(e);
    }
  }

  private async loadMetricKeys(): Promise<void> {
    const keys = await api<string[]>('metric-keys', { experiment: this.experiment.value });
    const have = Array.from(this.metricSelect.options).map(o => o.value);
    if (keys.join('\u0000') !== have.join('\u0000')) {
      this.metricSelect.replaceChildren(...keys.map(k => el('option', '', k, { value: k })));
    }
    if (this.metric && keys.includes(this.metric)) {
      this.metricSelect.value = this.metric;
    }
  }

  /** Cheap poll: did runs start, end or appear since the list was loaded? */
  async storeChanged(): Promise<boolean> {
    try {
      const exps = await api<Experiment[]>('experiments');
      return signature(exps) !== this.storeSignature;
    } catch {
      return false;
    }
  }

  private async loadExperiments(): Promise<void> {
    const exps = await api<Experiment[]>('experiments');
    this.storeSignature = signature(exps);
    const current = this.experiment.value;
    const names = exps.map(e => e.name);
    const have = Array.from(this.experiment.options)
      .slice(1)
      .map(o => o.value);
    if (names.join('\u0000') === have.join('\u0000')) {
      return;
    }
    while (this.experiment.options.length > 1) {
      this.experiment.remove(1);
    }
    for (const e of exps) {
      this.experiment.appendChild(el('option', '', `${e.name} (${e.runs})`, { value: e.name }));
    }
    this.experiment.value = names.includes(current) ? current : '';
  }

  private fetchPage(p: number): void {
    if (this.pages.has(p) || this.inflight.has(p)) {
      return;
    }
    const gen = this.generation;
    const job = api<RunsPage>('runs', this.query(p * PAGE))
      .then(page => {
        if (gen === this.generation) {
          this.pages.set(p, page.runs);
          this.renderRows();
        }
      })
      .catch(e => this.cb.error(e))
      .finally(() => this.inflight.delete(p));
    this.inflight.set(p, job);
  }

  anyRunningVisible(): boolean {
    for (const rows of this.pages.values()) {
      if (rows.some(r => r.status === 'running')) {
        return true;
      }
    }
    return false;
  }

  private renderHeader(): void {
    this.header.replaceChildren();
    const cols: [string, string, string][] = [
      ['', '', 'mj-c-check'],
      ['status', 'Status', 'mj-c-status'],
      ['name', 'Run', 'mj-c-name'],
      ['start_time', 'Start', 'mj-c-start'],
      ['duration', 'Dur.', 'mj-c-dur'],
      ['metric', this.metric ?? 'metric', 'mj-c-metric']
    ];
    for (const [key, label, cls] of cols) {
      const c = el('span', `mj-cell ${cls}`, label + (key && key === this.sort ? (this.order === 'desc' ? ' ▾' : ' ▴') : ''));
      if (key) {
        c.classList.add('mj-sortable');
        c.onclick = () => {
          ({ sort: this.sort, order: this.order } = nextSort(this.sort, this.order, key, key === 'name' || key === 'metric'));
          void this.reload(false);
        };
      }
      this.header.appendChild(c);
    }
  }

  /** Virtualised rendering: only the rows in (and near) the viewport exist in the DOM. */
  renderRows(): void {
    renderVisible({
      viewport: this.viewport,
      spacer: this.spacer,
      rowSelector: '.mj-run',
      total: this.total,
      rowH: ROW_H,
      pageSize: PAGE,
      margin: 10,
      pages: this.pages,
      fetchPage: p => this.fetchPage(p),
      rowNode: (r, i) => this.rowNode(r, i)
    });
  }

  private rowNode(r: RunRow, i: number): HTMLElement {
    const row = el('div', 'mj-row mj-run', null, { 'data-run-id': r.id });
    row.style.top = `${i * ROW_H}px`;
    const check = selectCheckbox('mj-cell mj-c-check', 'Select for comparison', row, r.id, r.name, this.selected, () => {
      this.compareButton.disabled = this.selected.size < 1;
      this.compareButton.textContent = this.selected.size ? `Compare ${this.selected.size}` : 'Compare';
      this.cb.selectionChanged();
    });
    const status = el('span', 'mj-cell mj-c-status', null, { title: r.status });
    status.appendChild(badge(r.status));
    const name = el('span', 'mj-cell mj-c-name');
    name.appendChild(el('span', 'mj-run-name', r.name));
    // narrow sidebars hide the start/duration columns; the sub-line keeps them visible
    name.appendChild(el('span', 'mj-run-exp', `${r.experiment} · ${fmtTime(r.start_time)} · ${fmtDuration(r.duration_s)}`));
    name.title = `${r.name}\n${r.experiment} · ${r.id}${r.attempt > 1 ? ` · attempt ${r.attempt}` : ''}`;
    const metric = r.metric ? fmtNum(r.metric.last) : '–';
    row.append(
      check,
      status,
      name,
      el('span', 'mj-cell mj-c-start', fmtTime(r.start_time)),
      el('span', 'mj-cell mj-c-dur', fmtDuration(r.duration_s)),
      el('span', 'mj-cell mj-c-metric', metric)
    );
    row.onclick = () => this.cb.open(r.id);
    return row;
  }
}
