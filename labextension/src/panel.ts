// The "MLOps" left-sidebar panel: runs list (virtualised, server-side filter/sort/paging),
// run detail, comparison, live telemetry + alerts, and data drift.
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Widget } from '@lumino/widgets';
import { api, ApiError, Compare, RunRow, RunsPage } from './api';
import { curveChart, destroyCharts } from './charts';
import { badge, el, fmtDuration, fmtNum, fmtTime, fmtValue, section, table } from './util';

const ROW_H = 26;

interface Experiment {
  name: string;
  runs: number;
  running: number;
  last_start: number | null;
}

function signature(exps: Experiment[]): string {
  return exps.map(e => `${e.name}:${e.runs}:${e.running}:${e.last_start}`).join('|');
}
const PAGE = 200;
const POLL_MS = 3000;
type Tab = 'runs' | 'compare' | 'live' | 'data';

export class MlopsPanel extends Widget {
  private app: JupyterFrontEnd;
  private tab: Tab = 'runs';
  private tabs = new Map<Tab, { button: HTMLButtonElement; body: HTMLElement }>();
  private strip = el('div', 'mj-strip');
  private error = el('div', 'mj-error');
  // runs list state
  private search = el('input', 'mj-input mj-search', null, { placeholder: 'Search name / id', type: 'search' });
  private experiment = el('select', 'mj-input mj-experiment');
  private metricSelect = el('select', 'mj-input mj-metric', null, { title: 'Key metric column' });
  private compareKeys: string[] | null = null;
  private status = el('select', 'mj-input mj-status');
  private where = el('input', 'mj-input mj-where', null, { placeholder: 'Filter: params.lr>=0.01; metrics.loss<0.5' });
  private count = el('div', 'mj-count');
  private header = el('div', 'mj-row mj-head');
  private viewport = el('div', 'mj-viewport');
  private spacer = el('div', 'mj-spacer');
  private listView = el('div', 'mj-listview');
  private detailView = el('div', 'mj-detail');
  private compareButton = el('button', 'jp-mod-styled jp-mod-accept mj-compare-btn', 'Compare');
  private sort = 'start_time';
  private order: 'asc' | 'desc' = 'desc';
  private total = 0;
  private metric: string | null = null;
  private pages = new Map<number, RunRow[]>();
  private inflight = new Map<number, Promise<void>>();
  private generation = 0;
  private selected = new Map<string, string>(); // id -> name
  private detailId: string | null = null;
  private timer: number | undefined;
  private lastLoad = 0;
  private storeSignature = '';

  constructor(app: JupyterFrontEnd) {
    super();
    this.app = app;
    this.id = 'mlops-jupyter-sidebar';
    this.title.caption = 'MLOps: runs, comparison, telemetry';
    this.addClass('mj-panel');
    this.build();
  }

  // ------------------------------------------------------------------ layout
  private build(): void {
    const n = this.node;
    n.appendChild(el('div', 'mj-title', 'MLOps'));
    n.appendChild(this.strip);
    const bar = el('div', 'mj-tabs');
    const labels: [Tab, string][] = [
      ['runs', 'Runs'],
      ['compare', 'Compare'],
      ['live', 'Live'],
      ['data', 'Data']
    ];
    for (const [t, label] of labels) {
      const button = el('button', `mj-tab mj-tab-${t}`, label);
      button.onclick = () => this.showTab(t);
      bar.appendChild(button);
      const body = el('div', `mj-body mj-body-${t}`);
      this.tabs.set(t, { button, body });
    }
    n.appendChild(bar);
    n.appendChild(this.error);
    for (const { body } of this.tabs.values()) {
      n.appendChild(body);
    }
    this.buildRuns(this.tabs.get('runs')!.body);
    this.showTab('runs');
  }

  private buildRuns(body: HTMLElement): void {
    const filters = el('div', 'mj-filters');
    this.status.appendChild(el('option', '', 'any status', { value: '' }));
    for (const s of ['running', 'finished', 'failed', 'killed', 'crashed']) {
      this.status.appendChild(el('option', '', s, { value: s }));
    }
    this.experiment.appendChild(el('option', '', 'all experiments', { value: '' }));
    let debounce: number | undefined;
    const reload = () => {
      window.clearTimeout(debounce);
      debounce = window.setTimeout(() => this.reload(), 250);
    };
    this.search.oninput = reload;
    this.where.onchange = () => this.reload();
    this.where.onkeydown = e => {
      if (e.key === 'Enter') {
        this.reload();
      }
    };
    this.status.onchange = () => this.reload();
    this.experiment.onchange = () => this.reload();
    const refresh = el('button', 'jp-mod-styled mj-refresh', '↻', { title: 'Refresh' });
    refresh.onclick = () => this.reload();
    const row1 = el('div', 'mj-filter-row');
    row1.append(this.search, refresh);
    const row2 = el('div', 'mj-filter-row');
    row2.append(this.experiment, this.status, this.metricSelect);
    this.metricSelect.onchange = () => {
      this.metric = this.metricSelect.value || null;
      void this.reload(false);
    };
    filters.append(row1, row2, this.where);
    const actions = el('div', 'mj-actions');
    this.compareButton.disabled = true;
    this.compareButton.onclick = () => this.showTab('compare');
    actions.append(this.count, this.compareButton);
    this.viewport.appendChild(this.spacer);
    this.viewport.onscroll = () => this.renderRows();
    this.listView.append(filters, actions, this.header, this.viewport);
    this.detailView.style.display = 'none';
    body.append(this.listView, this.detailView);
    this.renderHeader();
  }

  private showTab(t: Tab): void {
    this.tab = t;
    for (const [k, { button, body }] of this.tabs) {
      button.classList.toggle('mj-active', k === t);
      body.style.display = k === t ? '' : 'none';
    }
    this.tabs.get('compare')!.button.textContent = this.selected.size ? `Compare (${this.selected.size})` : 'Compare';
    // nothing is fetched before the panel is first shown (onAfterShow loads it)
    if (this.isVisible) {
      void this.refreshTab(true);
    }
  }

  private setError(e: unknown): void {
    if (e === null) {
      this.error.textContent = '';
      this.error.style.display = 'none';
      return;
    }
    const msg = e instanceof ApiError ? `${e.status}: ${e.message}` : String(e);
    this.error.textContent = msg;
    this.error.style.display = '';
  }

  // ---------------------------------------------------------------- lifecycle
  protected onAfterShow(): void {
    void this.refreshTab(true);
    window.clearInterval(this.timer);
    this.timer = window.setInterval(() => void this.poll(), POLL_MS);
  }

  protected onAfterHide(): void {
    window.clearInterval(this.timer);
  }

  protected onResize(): void {
    this.renderRows();
  }

  private async poll(): Promise<void> {
    if (!this.isVisible) {
      return;
    }
    await this.refreshTab(false);
  }

  private async refreshTab(force: boolean): Promise<void> {
    void this.refreshStrip();
    if (this.tab === 'runs') {
      if (this.detailId) {
        if (force || this.detailIsRunning) {
          await this.openDetail(this.detailId, false);
        }
      } else if (force ? Date.now() - this.lastLoad > 500 : this.anyRunningVisible() || (await this.storeChanged())) {
        await this.reload(false);
      }
    } else if (this.tab === 'compare') {
      if (force) {
        await this.renderCompare();
      }
    } else if (this.tab === 'live') {
      await this.renderLive();
    } else if (this.tab === 'data' && force) {
      await this.renderData();
    }
  }

  // ---------------------------------------------------------------- runs list
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
      this.setError(null);
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
      this.setError(e);
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
  private async storeChanged(): Promise<boolean> {
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
      .catch(e => this.setError(e))
      .finally(() => this.inflight.delete(p));
    this.inflight.set(p, job);
  }

  private anyRunningVisible(): boolean {
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
          if (this.sort === key) {
            this.order = this.order === 'desc' ? 'asc' : 'desc';
          } else {
            this.sort = key;
            this.order = key === 'name' || key === 'metric' ? 'asc' : 'desc';
          }
          void this.reload(false);
        };
      }
      this.header.appendChild(c);
    }
  }

  /** Virtualised rendering: only the rows in (and near) the viewport exist in the DOM. */
  private renderRows(): void {
    this.spacer.style.height = `${this.total * ROW_H}px`;
    const top = this.viewport.scrollTop;
    const height = this.viewport.clientHeight || 600;
    const start = Math.max(0, Math.floor(top / ROW_H) - 10);
    const end = Math.min(this.total, Math.ceil((top + height) / ROW_H) + 10);
    const frag = document.createDocumentFragment();
    for (let i = start; i < end; i++) {
      const p = Math.floor(i / PAGE);
      const rows = this.pages.get(p);
      if (!rows) {
        this.fetchPage(p);
        continue;
      }
      const r = rows[i - p * PAGE];
      if (r) {
        frag.appendChild(this.rowNode(r, i));
      }
    }
    for (const old of Array.from(this.viewport.querySelectorAll('.mj-run'))) {
      old.remove();
    }
    this.viewport.appendChild(frag);
  }

  private rowNode(r: RunRow, i: number): HTMLElement {
    const row = el('div', 'mj-row mj-run', null, { 'data-run-id': r.id });
    row.style.top = `${i * ROW_H}px`;
    row.classList.toggle('mj-selected', this.selected.has(r.id));
    const check = el('input', 'mj-cell mj-c-check', null, { type: 'checkbox', title: 'Select for comparison' });
    check.checked = this.selected.has(r.id);
    check.onclick = e => {
      e.stopPropagation();
      if (check.checked) {
        this.selected.set(r.id, r.name);
      } else {
        this.selected.delete(r.id);
      }
      row.classList.toggle('mj-selected', check.checked);
      this.compareButton.disabled = this.selected.size < 1;
      this.compareButton.textContent = this.selected.size ? `Compare ${this.selected.size}` : 'Compare';
      this.tabs.get('compare')!.button.textContent = this.selected.size ? `Compare (${this.selected.size})` : 'Compare';
    };
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
    row.onclick = () => void this.openDetail(r.id, true);
    return row;
  }

  // ---------------------------------------------------------------- run detail
  private detailIsRunning = false;

  private async openDetail(id: string, scrollTop: boolean): Promise<void> {
    let d: any;
    try {
      d = await api<any>(`runs/${encodeURIComponent(id)}`);
    } catch (e) {
      this.setError(e);
      return;
    }
    this.setError(null);
    this.detailId = id;
    this.detailIsRunning = d.status === 'running';
    const v = this.detailView;
    const scroll = v.scrollTop;
    destroyCharts(v);
    v.replaceChildren();
    const top = el('div', 'mj-detail-top');
    const back = el('button', 'jp-mod-styled mj-back', '← Runs');
    back.onclick = () => {
      this.detailId = null;
      this.detailView.style.display = 'none';
      this.listView.style.display = '';
      this.renderRows();
    };
    top.append(back);
    if (d.notebook_relpath) {
      const open = el('button', 'jp-mod-styled mj-open-nb', 'Open notebook', { title: d.notebook_path });
      open.onclick = () => void this.app.commands.execute('docmanager:open', { path: d.notebook_relpath });
      top.append(open);
    } else if (d.notebook_path) {
      top.append(el('span', 'mj-muted', `notebook outside the server root: ${d.notebook_path}`));
    }
    v.append(top);
    const h = el('div', 'mj-detail-title');
    h.append(badge(d.status), el('span', 'mj-detail-name', d.name));
    v.append(h);
    v.append(
      el(
        'div',
        'mj-muted',
        `${d.experiment} · ${d.id} · started ${fmtTime(d.start_time)} · ${fmtDuration(d.duration_s)}` +
          (d.attempt > 1 ? ` · attempt ${d.attempt}` : '') +
          (d.parent_id ? ` · child of ${d.parent_id}` : '')
      )
    );
    const kv = (o: Record<string, unknown>) =>
      Object.keys(o).length ? table(['key', 'value'], Object.entries(o).map(([k, x]) => [k, fmtValue(x)])) : null;
    v.append(section('Parameters', kv(d.params)));
    const metrics = (d.metrics as any[]).filter(m => !m.key.startsWith('sys/'));
    v.append(
      section(
        'Metrics',
        metrics.length
          ? table(
              ['key', 'last', 'min', 'max', 'n'],
              metrics.map(m => [m.key, fmtNum(m.last), fmtNum(m.min), fmtNum(m.max), String(m.count)])
            )
          : null
      )
    );
    if (metrics.length) {
      const keys = metrics.slice(0, 4).map(m => m.key);
      const charts = el('div', 'mj-charts');
      v.append(charts);
      void Promise.all(keys.map(k => api<any>(`runs/${encodeURIComponent(id)}/metrics/${encodeURIComponent(k)}`, { max_points: '500' }))).then(
        series => {
          for (const s of series) {
            charts.appendChild(curveChart(s.key, [{ ...s, name: d.name }], this.chartWidth()));
          }
        }
      );
    }
    const sysm = (d.metrics as any[]).filter(m => m.key.startsWith('sys/'));
    if (sysm.length) {
      v.append(section('System', table(['key', 'last', 'min', 'max'], sysm.map(m => [m.key, fmtNum(m.last), fmtNum(m.min), fmtNum(m.max)]))));
    }
    v.append(
      section(
        'Alerts',
        d.alerts.length ? table(['time', 'level', 'message'], d.alerts.map((a: any) => [fmtTime(a.start_time), a.level, a.message])) : null
      )
    );
    const thermal = (d.events as any[]).filter(e => e.kind === 'throttle' || e.kind === 'thermal');
    if (thermal.length) {
      v.append(
        section(
          'Thermal',
          table(
            ['start', 'end', 'message'],
            thermal.map(e => [fmtTime(e.start_time), e.end_time ? fmtTime(e.end_time) : 'ongoing', e.message])
          )
        )
      );
    }
    v.append(
      section(
        'Cells executed',
        d.cells.length
          ? table(
              ['#', 'source'],
              d.cells.map((c: any, i: number) => {
                const pre = el('pre', 'mj-code', String(c.source ?? c.code ?? '').slice(0, 400));
                if (c.status && c.status !== 'ok') {
                  pre.appendChild(el('div', 'mj-cell-error', `${c.status}${c.error ? ': ' + c.error : ''}`));
                }
                return [String(c.execution_count ?? c.seq ?? i + 1), pre];
              })
            )
          : null
      )
    );
    v.append(section('Data versions', d.data_versions.length ? versionsTable(d.data_versions) : null));
    v.append(
      section(
        'Artifacts',
        d.artifacts.length
          ? table(['name', 'size', 'digest'], d.artifacts.map((a: any) => [a.name, `${a.size} B`, String(a.digest).slice(0, 12)]))
          : null
      )
    );
    // tags last: the env.* tags make a long list
    v.append(section('Tags', kv(d.tags)));
    this.listView.style.display = 'none';
    v.style.display = '';
    v.scrollTop = scrollTop ? 0 : scroll;
  }

  private chartWidth(): number {
    return Math.max(220, this.node.clientWidth - 30);
  }

  // ---------------------------------------------------------------- compare
  private async renderCompare(): Promise<void> {
    const body = this.tabs.get('compare')!.body;
    if (this.selected.size < 1) {
      destroyCharts(body);
      body.replaceChildren(el('div', 'mj-empty', 'Select runs with the checkboxes in the Runs tab to compare them.'));
      return;
    }
    let c: Compare;
    try {
      c = await api<Compare>('compare', {
        ids: Array.from(this.selected.keys()).join(','),
        keys: this.compareKeys?.join(','),
        max_points: '1000'
      });
    } catch (e) {
      this.setError(e);
      return;
    }
    this.setError(null);
    destroyCharts(body);
    body.replaceChildren();
    const names = c.runs.map(r => r.name);
    const charts = el('div', 'mj-charts');
    // chips choose the curves drawn (default: up to 4 metrics the runs share)
    const shown = Object.keys(c.curves);
    const chips = el('div', 'mj-key-chips');
    for (const k of c.metric_keys) {
      const chip = el('button', shown.includes(k) ? 'mj-key-chip mj-on' : 'mj-key-chip', k);
      chip.onclick = () => {
        const next = shown.includes(k) ? shown.filter(x => x !== k) : [...shown, k];
        this.compareKeys = next;
        void this.renderCompare();
      };
      chips.appendChild(chip);
    }
    const curves = el('div');
    curves.append(chips, charts);
    body.append(section('Metric curves', curves));
    if (!Object.keys(c.curves).length) {
      charts.appendChild(el('div', 'mj-empty', 'no metrics logged'));
    }
    for (const [key, curves] of Object.entries(c.curves)) {
      if (curves.length) {
        charts.appendChild(curveChart(key, curves, this.chartWidth()));
      }
    }
    const ptable = table(
      ['param', ...names],
      c.param_keys.map(k => [k, ...c.runs.map(r => fmtValue(r.params[k]))]),
      'mj-table mj-params'
    );
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
      section(
        'Runs',
        table(
          ['run', 'status', 'experiment', 'duration'],
          c.runs.map(r => [r.name, r.status, r.experiment, fmtDuration(r.duration_s)])
        )
      )
    );
  }

  // ---------------------------------------------------------------- live
  private async refreshStrip(): Promise<void> {
    let tel: any[];
    try {
      tel = await api<any[]>('telemetry');
    } catch {
      return;
    }
    this.strip.replaceChildren();
    for (const t of tel.slice(0, 3)) {
      const item = el('div', 'mj-strip-item');
      item.appendChild(el('span', 'mj-strip-name', t.name));
      for (const [label, value] of summarize(t.samples)) {
        item.appendChild(el('span', 'mj-chip', `${label} ${value}`));
      }
      if (t.throttling) {
        item.appendChild(el('span', 'mj-chip mj-hot', 'throttling'));
      }
      this.strip.appendChild(item);
    }
    this.strip.style.display = tel.length ? '' : 'none';
  }

  private async renderLive(): Promise<void> {
    const body = this.tabs.get('live')!.body;
    let tel: any[];
    let alerts: any[];
    try {
      [tel, alerts] = await Promise.all([api<any[]>('telemetry'), api<any[]>('alerts', { limit: '50' })]);
    } catch (e) {
      this.setError(e);
      return;
    }
    body.replaceChildren();
    const cards = el('div', 'mj-cards');
    for (const t of tel) {
      const card = el('div', 'mj-card');
      const h = el('div', 'mj-card-title');
      h.append(badge(t.status), el('span', '', t.name));
      card.appendChild(h);
      const rows = Object.entries(t.samples as Record<string, any>)
        .filter(([k]) => !/\/core\d+\//.test(k))
        .map(([k, s]) => [k.replace(/^sys\//, ''), fmtNum(s.value), fmtNum(s.max)]);
      card.appendChild(rows.length ? table(['sample', 'now', 'max'], rows) : el('div', 'mj-empty', 'no telemetry yet'));
      const thermal = t.thermal as any[];
      card.appendChild(
        el(
          'div',
          t.throttling ? 'mj-thermal mj-hot' : 'mj-thermal',
          t.throttling ? `thermal: throttling (${thermal[0]?.message ?? ''})` : thermal.length ? `thermal: ok (last: ${thermal[0].message})` : 'thermal: ok'
        )
      );
      cards.appendChild(card);
    }
    body.append(section('Active runs', tel.length ? cards : null, 'no run is running'));
    body.append(
      section(
        'Alerts',
        alerts.length
          ? table(['time', 'run', 'level', 'message'], alerts.map(a => [fmtTime(a.start_time), a.run_name, a.level, a.message]))
          : null
      )
    );
  }

  // ---------------------------------------------------------------- data
  private async renderData(): Promise<void> {
    const body = this.tabs.get('data')!.body;
    let drift: any[];
    try {
      drift = await api<any[]>('drift', { limit: '50' });
    } catch (e) {
      this.setError(e);
      return;
    }
    body.replaceChildren(
      section('Drift reports', drift.length ? driftTable(drift) : null, 'no drift report stored'),
      el('div', 'mj-muted', 'Data versions of a run are listed in its detail view.')
    );
  }
}

const THERMAL = ['nominal', 'fair', 'serious', 'critical'];

/** The few samples worth a chip in the compact strip: CPU, memory, GPU, hottest sensor,
 * thermal state. Accepts `sys/cpu/percent` and `sys/cpu_percent` spellings. */
export function summarize(samples: Record<string, { value: number | null }>): [string, string][] {
  const out: [string, string][] = [];
  const get = (...keys: string[]) => {
    for (const k of keys) {
      const v = samples[k]?.value;
      if (typeof v === 'number') {
        return v;
      }
    }
    return null;
  };
  const pct = (v: number | null) => (v === null ? null : `${Math.round(v)}%`);
  const cpu = pct(get('sys/cpu/percent', 'sys/cpu_percent'));
  const mem = pct(get('sys/mem/percent', 'sys/mem_percent'));
  if (cpu) {
    out.push(['CPU', cpu]);
  }
  if (mem) {
    out.push(['MEM', mem]);
  }
  for (const k of Object.keys(samples).filter(k => /^sys\/gpu\d+\/util_percent$/.test(k))) {
    const v = pct(get(k));
    if (v) {
      out.push([k.split('/')[1].toUpperCase(), v]);
    }
  }
  const temps = Object.keys(samples)
    .filter(k => /temp(_c)?$|\/temp\//.test(k))
    .map(k => get(k))
    .filter((x): x is number => x !== null);
  if (temps.length) {
    out.push(['max', `${Math.round(Math.max(...temps))}°C`]);
  }
  const state = get('sys/thermal_state');
  if (state !== null) {
    out.push(['thermal', THERMAL[Math.max(0, Math.min(3, Math.round(state)))]]);
  }
  return out;
}

function versionsTable(rows: any[]): HTMLElement {
  return table(
    ['role', 'name', 'rows × cols', 'fingerprint'],
    rows.map(r => [
      String(r.role ?? ''),
      String(r.name ?? r.source ?? ''),
      `${fmtValue(r.n_rows ?? '?')} × ${fmtValue(r.n_cols ?? '?')}`,
      String(r.id ?? r.fingerprint ?? '').slice(0, 16)
    ])
  );
}

function driftTable(rows: any[]): HTMLElement {
  const t = table(
    ['time', 'reference → current', 'drifted', 'verdict', 'drifted columns'],
    rows.map(r => [
      fmtTime(r.created),
      `${r.reference?.name ?? r.reference?.id ?? '?'} → ${r.current?.name ?? r.current?.id ?? '?'}`,
      `${fmtValue(r.n_drifted ?? '?')}/${fmtValue(r.n_columns ?? '?')}`,
      r.dataset_drift ? 'drift' : 'no drift',
      (Array.isArray(r.columns) ? r.columns : [])
        .filter((c: any) => c && c.drifted)
        .map((c: any) => String(c.column))
        .join(', ')
    ])
  );
  rows.forEach((r, i) => {
    if (r.dataset_drift) {
      t.tBodies[0].rows[i].classList.add('mj-differ');
    }
  });
  return t;
}
