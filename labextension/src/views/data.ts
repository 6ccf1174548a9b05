// Data: stored drift reports (aggregates only).
import { api } from '../api';
import { DriftReport } from '../types';
import { el, fmtTime, fmtValue, section, table } from '../util';

export async function renderData(body: HTMLElement): Promise<void> {
  const drift = await api<DriftReport[]>('drift', { limit: '50' });
  body.replaceChildren(
    section('Drift reports', drift.length ? driftTable(drift) : null, 'no drift report stored'),
    el('div', 'mj-muted', 'Data versions of a run are listed in its detail view.')
  );
}

function driftTable(rows: DriftReport[]): HTMLElement {
  const t = table(
    ['time', 'reference → current', 'drifted', 'verdict', 'drifted columns'],
    rows.map(r => [
      fmtTime(r.created),
      `${r.reference?.name ?? r.reference?.id ?? '?'} → ${r.current?.name ?? r.current?.id ?? '?'}`,
      `${fmtValue(r.n_drifted ?? '?')}/${fmtValue(r.n_columns ?? '?')}`,
      r.dataset_drift ? 'drift' : 'no drift',
      (Array.isArray(r.columns) ? r.columns : [])
        .filter(c => c && c.drifted)
        .map(c => String(c.column))
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
