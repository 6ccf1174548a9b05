// "Open as dashboard": a main-area tab with the runs table (column picker remembered per
// experiment, sort, filter, group by, CSV export) and charts of the runs: overlaid curves of
// the selected runs, scatter, parallel coordinates (brushing filters the table), histogram,
// media. Clicking a run's name opens its detail in the tab. Two or more selected runs with an
// LLM evaluation are compared per score and per example below the charts.
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Widget } from '@lumino/widgets';
import { api, ApiError, apiRaw, Query } from '../api';
import { destroyCharts } from '../charts';
import { Columns, Experiment, GroupRow, RunDetail, TableAnswer } from '../types';
import { el, fmtNum, section, table } from '../util';
import { CompareView } from '../views/compare';
import { renderDetail } from '../views/detail';
import { hasLlmEval, LlmView } from '../views/llm';
import { MediaView } from '../views/media';
import { Brushes, histogram, ParallelCoords, scatter } from './plots';
import { RunsTable } from './table';

type Chart = 'curves' | 'scatter' | 'parallel' | 'histogram' | 'media';
const CHART_RUNS = 5000; // runs fetched for scatter / parallel coordinates / histogram
const POLL_MS = 3000;

function signature(exps: Experiment[]): string {
  return exps.map(e => `${e.name}:${e.runs}:${e.running}:${e.last_start}`).join('|');
}

function storageKey(experiment: string): string {
  return `mlops-jupyter:dashboard-columns:${experiment || '*'}`;
}

export class Dashboard extends Widget {
  private experiment = el('select', 'mj-input mj-dash-experiment');
  private where = el('input', 'mj-input mj-dash-where', null, { placeholder: 'Filter: params.lr>=0.01; metrics.loss<0.5' });
  private count = el('span', 'mj-dash-count');
  private error = el('div', 'mj-error');
  private picker = el('div', 'mj-colpick');
  private groupBy = el('select', 'mj-input mj-dash-group');
  private groups = el('div', 'mj-dash-groups');
  private chartTabs = el('div', 'mj-dash-chart-tabs');
  private chartBody = el('div', 'mj-dash-chart');
  private detail = el('div', 'mj-dash-detail mj-detail');
  private main = el('div', 'mj-dash-main');
  private llm = el('div', 'mj-dash-llm'); // evaluation runs among the selected ones
  private llmGeneration = 0;
  private table: RunsTable;
  private compare: CompareView;
  private cols: Columns = { params: [], metrics: [], tags: [], has_user: false, has_host: false };
  private chart: Chart = 'curves';
  private brushes: Brushes = new Map();
  private parcoords: ParallelCoords | null = null;
  private timer: number | undefined;
  private opened = performance.now();
  private firstPaint = true;

  constructor(private app: JupyterFrontEnd) {
    super();
    this.id = 'mlops-jupyter-dashboard';
    this.title.label = 'MLOps dashboard';
    this.title.closable = true;
    this.addClass('mj-dash');
    this.table = new RunsTable({
      open: id => void this.openDetail(id),
      selectionChanged: () => {
        void this.renderChart();
        void this.renderLlm();
      },
      error: e => this.setError(e),
      painted: () => {
        if (this.firstPaint) {
          this.firstPaint = false;
          this.node.dataset.firstPaintMs = (performance.now() - this.opened).toFixed(1);
        }
        this.count.textContent = `${this.table.total} run${this.table.total === 1 ? '' : 's'}`;
      }
    });
    this.table.query = () => this.filters(true);
    const chartHost = el('div', 'mj-dash-charts');
    this.compare = new CompareView(
      this.chartBody,
      () => this.chartRuns().map(r => r[0]),
      () => Math.max(300, this.chartBody.clientWidth - 20),
      e => this.setError(e)
    );
    this.build(chartHost);
  }

  private build(chartHost: HTMLElement): void {
    const bar = el('div', 'mj-dash-toolbar');
    this.experiment.appendChild(el('option', '', 'all experiments', { value: '' }));
    this.experiment.onchange = () => void this.loadColumns();
    this.where.onkeydown = e => {
      if (e.key === 'Enter') {
        void this.reload();
      }
    };
    this.where.onchange = () => void this.reload();
    const pick = el('button', 'jp-mod-styled mj-dash-columns', 'Columns');
    pick.onclick = () => {
      this.picker.style.display = this.picker.style.display === 'none' ? '' : 'none';
    };
    this.picker.style.display = 'none';
    this.groupBy.onchange = () => void this.renderGroups();
    const csv = el('button', 'jp-mod-styled mj-dash-export', 'Export CSV');
    csv.onclick = () => void this.exportCsv();
    bar.append(this.experiment, this.where, pick, el('span', 'mj-muted', 'group by'), this.groupBy, csv, this.count);
    const charts: [Chart, string][] = [
      ['curves', 'Curves'],
      ['scatter', 'Scatter'],
      ['parallel', 'Parallel coordinates'],
      ['histogram', 'Histogram'],
      ['media', 'Media']
    ];
    for (const [c, label] of charts) {
      const b = el('button', `mj-tab mj-dash-tab-${c}`, label);
      b.onclick = () => {
        this.chart = c;
        void this.renderChart();
      };
      this.chartTabs.appendChild(b);
    }
    chartHost.append(this.chartTabs, this.chartBody);
    this.detail.style.display = 'none';
    this.llm.style.gridColumn = '1 / span 2'; // full width, below the table and charts
    this.main.append(this.picker, this.groups, this.table.node, chartHost, this.llm);
    this.node.append(bar, this.error, this.main, this.detail);
  }

  private setError(e: unknown): void {
    this.error.textContent = e === null ? '' : e instanceof ApiError ? `${e.status}: ${e.message}` : String(e);
    this.error.style.display = e === null ? 'none' : '';
  }

  /** The filters of the table; with the parallel-coordinates brushes as conditions. */
  private filters(withBrushes: boolean): Query {
    const where = this.where.value
      .split(';')
      .map(s => s.trim())
      .filter(s => s);
    if (withBrushes) {
      for (const [axis, [lo, hi]] of this.brushes) {
        where.push(`${axis}>=${lo}`, `${axis}<=${hi}`);
      }
    }
    return { experiment: this.experiment.value, where };
  }

  protected onAfterAttach(): void {
    void this.start();
    this.timer = window.setInterval(() => void this.poll(), POLL_MS);
  }

  protected onBeforeDetach(): void {
    window.clearInterval(this.timer);
  }

  protected onCloseRequest(msg: Parameters<Widget['onCloseRequest']>[0]): void {
    destroyCharts(this.node);
    super.onCloseRequest(msg);
    this.dispose();
  }

  private async start(): Promise<void> {
    try {
      const exps = await api<Experiment[]>('experiments');
      this.signature = signature(exps);
      for (const e of exps) {
        this.experiment.appendChild(el('option', '', `${e.name} (${e.runs})`, { value: e.name }));
      }
    } catch (e) {
      this.setError(e);
    }
    await this.loadColumns();
  }

  private signature = '';

  private async poll(): Promise<void> {
    if (!this.isVisible) {
      return;
    }
    // runs that start, end or appear: the table is reloaded (its scroll position kept)
    try {
      const exps = await api<Experiment[]>('experiments');
      const sig = signature(exps);
      if (sig !== this.signature) {
        void this.table.reload();
      }
      this.signature = sig;
    } catch {
      // the next poll tries again
    }
    if (this.chart === 'curves') {
      await this.compare.poll().catch(() => 0);
    }
  }

  /** Columns of the experiment; the picker remembers the choice per experiment. */
  private async loadColumns(): Promise<void> {
    try {
      this.cols = await api<Columns>('columns', { experiment: this.experiment.value });
    } catch (e) {
      this.setError(e);
      return;
    }
    const all = [
      ...this.cols.params.map(k => `params.${k}`),
      ...this.cols.metrics.map(k => `metrics.${k}`),
      ...this.cols.tags.map(k => `tags.${k}`)
    ];
    let chosen: string[];
    try {
      chosen = JSON.parse(localStorage.getItem(storageKey(this.experiment.value)) ?? 'null') as string[];
    } catch {
      chosen = [];
    }
    if (!Array.isArray(chosen)) {
      chosen = [...this.cols.params.slice(0, 10).map(k => `params.${k}`), ...this.cols.metrics.slice(0, 10).map(k => `metrics.${k}`)];
    }
    this.table.columns = chosen.filter(c => all.includes(c));
    this.table.showUserHost = this.cols.has_host || this.cols.has_user;
    this.picker.replaceChildren();
    for (const c of all) {
      const label = el('label', 'mj-colpick-item');
      const box = el('input', '', null, { type: 'checkbox', 'data-col': c });
      box.checked = this.table.columns.includes(c);
      box.onchange = () => {
        this.table.columns = all.filter(x => (x === c ? box.checked : this.table.columns.includes(x)));
        localStorage.setItem(storageKey(this.experiment.value), JSON.stringify(this.table.columns));
        void this.table.reload();
      };
      label.append(box, document.createTextNode(c));
      this.picker.appendChild(label);
    }
    this.groupBy.replaceChildren(el('option', '', '–', { value: '' }));
    for (const c of [...this.cols.params.map(k => `params.${k}`), ...this.cols.tags.map(k => `tags.${k}`)]) {
      this.groupBy.appendChild(el('option', '', c, { value: c }));
    }
    this.brushes.clear();
    this.table.selected.clear();
    void this.renderLlm();
    await this.reload();
  }

  private async reload(): Promise<void> {
    await this.table.reload();
    void this.renderGroups();
    void this.renderChart();
  }

  private async renderGroups(): Promise<void> {
    const by = this.groupBy.value;
    if (!by) {
      this.groups.replaceChildren();
      return;
    }
    const metrics = this.table.columns.filter(c => c.startsWith('metrics.'));
    try {
      const g = await api<GroupRow[]>('groups', { ...this.filters(true), by, metrics: metrics.join(',') });
      const names = metrics.map(m => m.replace(/^metrics\./, ''));
      const rows = g.map(x => [
        x.value === null ? '(none)' : typeof x.value === 'string' ? x.value : JSON.stringify(x.value),
        String(x.n),
        ...metrics.map(m => {
          const s = x.metrics[`${m}.last`] ?? x.metrics[m];
          return s ? `${fmtNum(s.mean)} ± ${fmtNum(s.std)}` : '–';
        })
      ]);
      this.groups.replaceChildren(section(`Grouped by ${by}`, table([by, 'runs', ...names], rows, 'mj-table mj-dash-group-table')));
    } catch (e) {
      this.setError(e);
    }
  }

  /** Runs the charts show: the checked rows, else the first rows of the table. */
  private chartRuns(): [string, string][] {
    if (this.table.selected.size) {
      return Array.from(this.table.selected.entries());
    }
    return this.table.loadedRuns().slice(0, 5);
  }

  private async chartData(columns: string[]): Promise<TableAnswer> {
    // the brushes do not filter the chart's own data: brushed runs are highlighted in it
    return api<TableAnswer>('table', { ...this.filters(this.chart !== 'parallel'), columns: columns.join(','), limit: String(CHART_RUNS), sort: 'start_time' });
  }

  private async renderChart(): Promise<void> {
    for (const b of Array.from(this.chartTabs.children)) {
      b.classList.toggle('mj-active', b.classList.contains(`mj-dash-tab-${this.chart}`));
    }
    try {
      if (this.chart === 'curves') {
        await this.renderCurves();
        return;
      }
      this.compare.clear();
      this.parcoords = null;
      if (this.chart === 'media') {
        const m = new MediaView(this.chartRuns().map(([id, name]) => ({ id, name })));
        this.chartBody.replaceChildren(m.node);
        await m.load();
        if (m.node.style.display === 'none') {
          this.chartBody.appendChild(el('div', 'mj-empty', 'no media logged'));
        }
        return;
      }
      const params = this.cols.params.map(k => `params.${k}`);
      const metrics = this.cols.metrics.map(k => `metrics.${k}`);
      const xSel = el('select', 'mj-input mj-dash-x');
      const ySel = el('select', 'mj-input mj-dash-y');
      for (const c of this.chart === 'histogram' ? metrics : params) {
        xSel.appendChild(el('option', '', c, { value: c }));
      }
      for (const c of metrics) {
        ySel.appendChild(el('option', '', c, { value: c }));
      }
      const plot = el('div', 'mj-dash-plot');
      const controls = el('div', 'mj-filter-row');
      controls.append(xSel);
      if (this.chart !== 'histogram') {
        controls.append(ySel);
      }
      this.chartBody.replaceChildren(controls, plot);
      const draw = async () => {
        if (this.chart === 'parallel') {
          await this.drawParallel(plot, params.slice(0, 12), ySel.value);
          return;
        }
        const cols = this.chart === 'histogram' ? [xSel.value] : [xSel.value, ySel.value];
        const d = await this.chartData(cols);
        const col = (name: string) => {
          const i = d.fields.indexOf(name.startsWith('metrics.') && !/\.(last|min|max)$/.test(name) ? `${name}.last` : name);
          return d.rows.map(r => r[i]);
        };
        const names = d.rows.map(r => String(r[1]));
        plot.replaceChildren(
          this.chart === 'histogram' ? histogram(col(xSel.value), xSel.value) : scatter(col(xSel.value), col(ySel.value), names, xSel.value, ySel.value)
        );
      };
      xSel.onchange = () => void draw();
      ySel.onchange = () => void draw();
      await draw();
    } catch (e) {
      this.setError(e);
    }
  }

  /** With 2+ selected runs holding an LLM evaluation: them side by side, per score and per
   * example, against the first one selected. */
  private async renderLlm(): Promise<void> {
    const gen = ++this.llmGeneration;
    const picked = Array.from(this.table.selected.keys());
    if (picked.length < 2) {
      this.llm.replaceChildren();
      return;
    }
    try {
      const details = await Promise.all(picked.map(id => api<RunDetail>(`runs/${encodeURIComponent(id)}`)));
      const evals = details.filter(d => hasLlmEval(d.metrics)).map(d => ({ id: d.id, name: d.name }));
      if (gen !== this.llmGeneration) {
        return;
      }
      if (evals.length < 2) {
        this.llm.replaceChildren();
        return;
      }
      const view = new LlmView(evals.slice(0, 8));
      await view.load();
      if (gen === this.llmGeneration) {
        this.llm.replaceChildren(view.node);
      }
    } catch (e) {
      if (gen === this.llmGeneration) {
        this.setError(e);
      }
    }
  }

  private async renderCurves(): Promise<void> {
    const opts = el('div', 'mj-filter-row mj-dash-curve-opts');
    const log = el('input', 'mj-dash-log', null, { type: 'checkbox' });
    const sm = el('input', 'mj-dash-smooth', null, { type: 'range', min: '0', max: '0.99', step: '0.01', value: '0' });
    const x = el('select', 'mj-input mj-dash-xaxis');
    x.append(el('option', '', 'step', { value: 'step' }), el('option', '', 'time', { value: 'time' }));
    const apply = () => this.compare.setOptions({ log: log.checked, smooth: Number(sm.value), xTime: x.value === 'time' });
    log.onchange = apply;
    sm.oninput = apply;
    x.onchange = apply;
    const l1 = el('label', '', 'log y ');
    l1.prepend(log);
    opts.append(l1, el('span', 'mj-muted', 'smoothing'), sm, el('span', 'mj-muted', 'x'), x);
    const host = el('div', 'mj-dash-curves');
    this.compare.clear();
    this.chartBody.replaceChildren(opts, host);
    const view = new CompareView(
      host,
      () => this.chartRuns().map(r => r[0]),
      () => Math.max(300, this.chartBody.clientWidth - 20),
      e => this.setError(e)
    );
    view.options = this.compare.options;
    this.compare = view;
    await view.render();
  }

  private async drawParallel(plot: HTMLElement, params: string[], objective: string): Promise<void> {
    const d = await this.chartData([...params, objective]);
    const numeric = params.filter(p => {
      const i = d.fields.indexOf(p);
      return d.rows.some(r => typeof r[i] === 'number');
    });
    const axes = [...numeric, objective];
    const data = axes.map(a => {
      const i = d.fields.indexOf(a.startsWith('metrics.') && !/\.(last|min|max)$/.test(a) ? `${a}.last` : a);
      return d.rows.map(r => (typeof r[i] === 'number' ? (r[i] as number) : null));
    });
    const width = Math.max(360, this.chartBody.clientWidth - 10);
    this.parcoords = new ParallelCoords(
      axes,
      data,
      b => {
        this.brushes = new Map(b);
        void this.table.reload();
        void this.renderGroups();
      },
      width
    );
    for (const [k, v] of this.brushes) {
      this.parcoords.brushes.set(k, v);
    }
    this.parcoords.redraw();
    plot.replaceChildren(this.parcoords.node, el('div', 'mj-muted', 'drag on an axis to brush a range; double-click an axis to clear it'));
  }

  /** For tests and benchmarks: brush an axis of the parallel coordinates. */
  brush(axis: string, lo: number, hi: number): number {
    this.parcoords?.brush(axis, lo, hi);
    return this.parcoords?.lastRedrawMs ?? -1;
  }

  private async exportCsv(): Promise<void> {
    try {
      const r = await apiRaw('export.csv', { ...this.filters(true), columns: this.table.columns.join(','), sort: this.table.sort, order: this.table.order });
      const blob = await r.blob();
      const a = el('a', '', null, { href: URL.createObjectURL(blob), download: 'runs.csv' });
      document.body.appendChild(a);
      a.click();
      a.remove();
    } catch (e) {
      this.setError(e);
    }
  }

  private async openDetail(id: string): Promise<void> {
    try {
      await renderDetail(this.detail, id, {
        app: this.app,
        width: () => Math.max(300, this.node.clientWidth / 2 - 40),
        back: {
          label: '← Table',
          onClick: () => {
            destroyCharts(this.detail);
            this.detail.style.display = 'none';
            this.main.style.display = '';
          }
        }
      });
      this.main.style.display = 'none';
      this.detail.style.display = '';
    } catch (e) {
      this.setError(e);
    }
  }
}
