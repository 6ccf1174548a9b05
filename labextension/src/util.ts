// Small DOM helpers. Every piece of stored data goes through textContent, never innerHTML,
// so a run named `<img src=x onerror=...>` is shown as text and runs nothing.

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls = '',
  text?: string | number | null,
  attrs: Record<string, string> = {}
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (cls) {
    node.className = cls;
  }
  if (text !== undefined && text !== null) {
    node.textContent = String(text);
  }
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, v);
  }
  return node;
}

export function fmtNum(v: unknown): string {
  if (v === null || v === undefined) {
    return '–';
  }
  if (typeof v !== 'number') {
    return typeof v === 'string' ? v : JSON.stringify(v);
  }
  if (Number.isInteger(v)) {
    return String(v);
  }
  const a = Math.abs(v);
  // 4 significant digits without trailing zeros: 0.1 not 0.1000
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

export function fmtValue(v: unknown): string {
  if (v === undefined) {
    return '';
  }
  return typeof v === 'number' ? fmtNum(v) : typeof v === 'string' ? v : JSON.stringify(v);
}

export function fmtDuration(s: number | null | undefined): string {
  if (s === null || s === undefined || !isFinite(s)) {
    return '–';
  }
  if (s < 60) {
    return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  }
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function fmtTime(t: number | null | undefined): string {
  if (!t) {
    return '–';
  }
  const d = new Date(t * 1000);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
    : d.toLocaleDateString([], { month: 'short', day: 'numeric' }) +
        ' ' +
        d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function badge(status: string): HTMLElement {
  return el('span', `mj-badge mj-status-${status.replace(/[^a-z]/g, '')}`, status);
}

export function table(headers: string[], rows: (string | Node)[][], cls = 'mj-table'): HTMLTableElement {
  const t = el('table', cls);
  const head = t.createTHead().insertRow();
  for (const h of headers) {
    head.appendChild(el('th', '', h));
  }
  const body = t.createTBody();
  for (const r of rows) {
    const tr = body.insertRow();
    for (const c of r) {
      const td = tr.insertCell();
      if (typeof c === 'string') {
        td.textContent = c;
      } else {
        td.appendChild(c);
      }
    }
  }
  return t;
}

export function section(title: string, body: Node | null, empty = 'none recorded'): HTMLElement {
  const s = el('div', 'mj-section');
  s.appendChild(el('h3', 'mj-section-title', title));
  s.appendChild(body ?? el('div', 'mj-empty', empty));
  return s;
}
