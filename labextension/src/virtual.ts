// Shared pieces of the two virtualised run tables (the sidebar's runs list and the
// dashboard's table): only the rows near the viewport exist in the DOM, pages of rows are
// fetched on demand, and checkboxes select runs.
import { el } from './util';

export interface VirtualRows<R> {
  viewport: HTMLElement;
  spacer: HTMLElement;
  /** CSS selector of the row nodes, so the previous paint can be removed. */
  rowSelector: string;
  total: number;
  rowH: number;
  pageSize: number;
  /** Extra rows painted above and below the viewport. */
  margin: number;
  pages: Map<number, R[]>;
  fetchPage: (p: number) => void;
  rowNode: (r: R, i: number) => HTMLElement;
}

/** Paint the rows in (and `margin` rows around) the viewport; ask for pages not loaded yet. */
export function renderVisible<R>(v: VirtualRows<R>): void {
  v.spacer.style.height = `${v.total * v.rowH}px`;
  const top = v.viewport.scrollTop;
  const height = v.viewport.clientHeight || 600;
  const start = Math.max(0, Math.floor(top / v.rowH) - v.margin);
  const end = Math.min(v.total, Math.ceil((top + height) / v.rowH) + v.margin);
  const frag = document.createDocumentFragment();
  for (let i = start; i < end; i++) {
    const p = Math.floor(i / v.pageSize);
    const rows = v.pages.get(p);
    if (!rows) {
      v.fetchPage(p);
      continue;
    }
    const r = rows[i - p * v.pageSize];
    if (r) {
      frag.appendChild(v.rowNode(r, i));
    }
  }
  for (const old of Array.from(v.viewport.querySelectorAll(v.rowSelector))) {
    old.remove();
  }
  v.viewport.appendChild(frag);
}

/**
 * A row's selection checkbox: keeps `selected` (id -> name) and the row's `mj-selected`
 * class in step, then calls `changed`. The click does not reach the row.
 */
export function selectCheckbox(
  cls: string,
  title: string,
  row: HTMLElement,
  id: string,
  name: string,
  selected: Map<string, string>,
  changed: () => void
): HTMLInputElement {
  row.classList.toggle('mj-selected', selected.has(id));
  const check = el('input', cls, null, { type: 'checkbox', title });
  check.checked = selected.has(id);
  check.onclick = e => {
    e.stopPropagation();
    if (check.checked) {
      selected.set(id, name);
    } else {
      selected.delete(id);
    }
    row.classList.toggle('mj-selected', check.checked);
    changed();
  };
  return check;
}

/** The sort after a click on column `key`: the same column flips the order, a new one starts at its default. */
export function nextSort(
  sort: string,
  order: 'asc' | 'desc',
  key: string,
  ascFirst: boolean
): { sort: string; order: 'asc' | 'desc' } {
  if (sort === key) {
    return { sort, order: order === 'desc' ? 'asc' : 'desc' };
  }
  return { sort: key, order: ascFirst ? 'asc' : 'desc' };
}
