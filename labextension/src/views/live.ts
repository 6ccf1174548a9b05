// Live: the compact telemetry strip, active runs' latest samples and recent alerts.
import { api } from '../api';
import { AlertRow, Sample, Telemetry } from '../types';
import { badge, el, fmtNum, fmtTime, section, table } from '../util';

const THERMAL = ['nominal', 'fair', 'serious', 'critical'];

/** The few samples worth a chip in the compact strip: CPU, memory, GPU, hottest sensor,
 * thermal state. Accepts `sys/cpu/percent` and `sys/cpu_percent` spellings. */
export function summarize(samples: Record<string, Pick<Sample, 'value'>>): [string, string][] {
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

/** Fill the telemetry strip (hidden when no run is running). */
export async function refreshStrip(strip: HTMLElement): Promise<void> {
  let tel: Telemetry[];
  try {
    tel = await api<Telemetry[]>('telemetry');
  } catch {
    return;
  }
  strip.replaceChildren();
  for (const t of tel.slice(0, 3)) {
    const item = el('div', 'mj-strip-item');
    item.appendChild(el('span', 'mj-strip-name', t.name));
    for (const [label, value] of summarize(t.samples)) {
      item.appendChild(el('span', 'mj-chip', `${label} ${value}`));
    }
    if (t.throttling) {
      item.appendChild(el('span', 'mj-chip mj-hot', 'throttling'));
    }
    strip.appendChild(item);
  }
  strip.style.display = tel.length ? '' : 'none';
}

export async function renderLive(body: HTMLElement): Promise<void> {
  const [tel, alerts] = await Promise.all([api<Telemetry[]>('telemetry'), api<AlertRow[]>('alerts', { limit: '50' })]);
  body.replaceChildren();
  const cards = el('div', 'mj-cards');
  for (const t of tel) {
    const card = el('div', 'mj-card');
    const h = el('div', 'mj-card-title');
    h.append(badge(t.status), el('span', '', t.name));
    card.appendChild(h);
    const rows = Object.entries(t.samples)
      .filter(([k]) => !/\/core\d+\//.test(k))
      .map(([k, s]) => [k.replace(/^sys\//, ''), fmtNum(s.value), fmtNum(s.max)]);
    card.appendChild(rows.length ? table(['sample', 'now', 'max'], rows) : el('div', 'mj-empty', 'no telemetry yet'));
    const thermal = t.thermal;
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
      alerts.length ? table(['time', 'run', 'level', 'message'], alerts.map(a => [fmtTime(a.start_time), a.run_name, a.level, a.message])) : null
    )
  );
}
