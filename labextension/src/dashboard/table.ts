// The dashboard's runs table: chosen param/metric/tag columns, sorted and filtered on the
// server, virtualised (only the visible rows exist; pages of 200 are fetched on demand).
import { api, Query } from '../api';
import { Cell, TableAnswer } from '../types';
import { badge, el, fmtDuration, fmtTime, fmtValue } from '../util';
import { nextSort, renderVisible, selectCheckbox } from '../virtual';

const ROW_H = 24;
const PAGE = 200;

export interface TableCallbacks {
  open: (id: string, name: string) => void;
  selectionChanged: () => void;
  error: (e: unknown) => void;
  painted: (ms: number) => void;
}

export function fmtCell(field: string, v: Cell): string {
  if (field === 'start_time') {
    return typeof v === 'number' ? fmtTime(v) : '–';
  }
  if (field === 'duration_s') {
    return typeof v === 'number' ? fmtDuration(v) : '–';
  }
  return v === null ? '' : fmtValue(v);
}

export class RunsTable {
  readonly node = el('div', 'mj-dash-table');
  readonly selected = new Map<string, string>();
  private header = el('div', 'mj-dash-head');
  private viewport = el('div', 'mj-dash-viewport');
  private spacer = el('div', 'mj-spacer');
  private pages = new Map<number, Cell[][]>();
  private inflight = new Set<number>();
  private generation = 0;
  fields: string[] = [];
  total = 0;
  sort = 'start_time';
  order: 'asc' | 'desc' = 'desc';
  columns: string[] = [];
  showUserHost = false;
  query: () => Query = () => ({});

  constructor(private cb: TableCallbacks) {
    // the header scrolls sideways with the rows and stays on top (sticky)
    this.viewport.append(this.header, this.spacer);
    this.viewport.onscroll = () => this.renderRows();
    this.node.append(this.viewport);
  }

  private params(offset: number): Query {
    return { ...this.query(), columns: this.columns.join(','), sort: this.sort, order: this.order, limit: String(PAGE), offset: String(offset) };
  }

  async reload(): Promise<void> {
    const t0 = performance.now();
    const gen = ++this.generation;
    try {
      const first = Math.floor(this.viewport.scrollTop / ROW_H / PAGE);
      const page = await api<TableAnswer>('table', this.params(first * PAGE));
      if (gen !== this.generation) {
        return;
      }
      this.cb.error(null);
      this.pages.clear();
      this.inflight.clear();
      this.pages.set(first, page.rows);
      this.fields = page.fields;
      this.total = page.total;
      this.renderHeader();
      this.renderRows();
      requestAnimationFrame(() => this.cb.painted(performance.now() - t0));
    } catch (e) {
      this.cb.error(e);
    }
  }

  /** The columns shown: name, status, start, duration, [user, host], then the chosen ones. */
  visible(): string[] {
    const base = ['name', 'status', 'experiment', 'start_time', 'duration_s'];
    if (this.showUserHost) {
      base.push('user', 'host');
    }
    return [...base, ...this.fields.filter(f => f.includes('.'))];
  }

  private renderHeader(): void {
    this.header.replaceChildren(el('span', 'mj-dash-cell mj-dash-check'));
    for (const f of this.visible()) {
      const label = f.replace(/^metrics\.(.*)\.last$/, '$1').replace(/^params\./, '').replace(/^tags\./, '#');
      const th = el('span', 'mj-dash-cell mj-dash-th', label + (f === this.sort ? (this.order === 'desc' ? ' ▾' : ' ▴') : ''), {
        'data-col': f,
        title: f
      });
      if (f !== 'user') {
        th.onclick = () => {
          ({ sort: this.sort, order: this.order } = nextSort(this.sort, this.order, f, f === 'name' || f.startsWith('metrics.')));
          void this.reload();
        };
      }
      this.header.appendChild(th);
    }
  }

  renderRows(): void {
    const cols = this.visible().map(f => [f, this.fields.indexOf(f)] as const);
    renderVisible({
      viewport: this.viewport,
      spacer: this.spacer,
      rowSelector: '.mj-dash-row',
      total: this.total,
      rowH: ROW_H,
      pageSize: PAGE,
      margin: 5,
      pages: this.pages,
      fetchPage: p => this.fetchPage(p),
      rowNode: (r, i) => this.rowNode(r, i, cols)
    });
  }

  private fetchPage(p: number): void {
    if (this.pages.has(p) || this.inflight.has(p)) {
      return;
    }
    const gen = this.generation;
    this.inflight.add(p);
    void api<TableAnswer>('table', this.params(p * PAGE))
      .then(page => {
        if (gen === this.generation) {
          this.pages.set(p, page.rows);
          this.renderRows();
        }
      })
      .catch(e => this.cb.error(e))
      .finally(() => this.inflight.delete(p));
  }

  /** Ids (and names) of the rows loaded so far, in table order. */
  loadedRuns(): [string, string][] {
    const out: [string, string][] = [];
    for (const p of Array.from(this.pages.keys()).sort((a, b) => a - b)) {
      for (const r of this.pages.get(p)!) {
        out.push([String(r[0]), String(r[1])]);
      }
    }
    return out;
  }

  private rowNode(r: Cell[], i: number, cols: (readonly [string, number])[]): HTMLElement {
    const id = String(r[0]);
    const name = String(r[1] ?? '');
    const row = el('div', 'mj-dash-row', null, { 'data-run-id': id });
    row.style.top = `${ROW_H + i * ROW_H}px`;
    row.appendChild(
      selectCheckbox('mj-dash-cell mj-dash-check', 'Select for the charts', row, id, name, this.selected, () =>
        this.cb.selectionChanged()
      )
    );
    for (const [f, idx] of cols) {
      const v = idx >= 0 ? r[idx] : null;
      const cell = el('span', `mj-dash-cell mj-dash-c-${f === 'name' ? 'name' : 'v'}`, null, { 'data-col': f });
      if (f === 'status') {
        cell.appendChild(badge(String(v)));
      } else {
        cell.textContent = fmtCell(f, v);
        cell.title = cell.textContent;
      }
      if (f === 'name') {
        cell.onclick = () => this.cb.open(id, name);
      }
      row.appendChild(cell);
    }
    return row;
  }
}
