// Features: registered feature views with their freshness (GET features; stale ones, whose
// newest feature is older than the TTL, are marked), and one view's versions, per-feature
// drift between consecutive offline materializations and the training sets, runs and
// models that used it (GET features/{name}). Every name is stored text: textContent only.
import { api } from '../api';
import { el, fmtDuration, fmtNum, fmtTime, section, table } from '../util';

export interface OnlineWrite {
  view: string;
  version: number;
  backend: string;
  start: number | null;
  end: number | null;
  rows: number;
  created: number;
}

export interface FeatureViewSummary {
  name: string;
  version: number;
  versions: number;
  entities: string[];
  timestamp: string;
  ttl_s: number | null;
  features: string[];
  rows: number | null;
  newest: number | null;
  age_s: number | null;
  stale: boolean;
  online: OnlineWrite | null;
  created: number;
  owner: string | null;
  description: string | null;
  data_version: string | null;
}

export interface Materialization {
  data_version: string;
  n_rows: number;
  oldest: number | null;
  newest: number | null;
  created: number;
}

export interface FeatureViewVersion {
  version: number;
  features: string[];
  ttl_s: number | null;
  code_hash: string | null;
  owner: string | null;
  created: number;
  current: boolean;
  materializations: Materialization[];
  online: OnlineWrite[];
}

export interface FeatureDrift {
  method: string | null;
  statistic: number | null;
  threshold: number | null;
  drifted: boolean | null;
  note?: string;
}

export interface DriftEnd {
  version: number;
  data_version: string;
  created: number;
}

export interface DriftPair {
  from: DriftEnd;
  to: DriftEnd;
  columns: { [feature: string]: FeatureDrift };
  note: string | null;
  n_drifted: number;
}

export interface FeatureUsage {
  version: number;
  training_set: string;
  training_set_name: string | null;
  run: string | null;
  run_name: string | null;
  created: number;
}

export interface ModelUse {
  name: string;
  version: number;
  stage: string;
  run_id: string | null;
  created: number;
  aliases: string[];
}

/** GET features/{name}: the list's fields, with every version instead of their count. */
export interface FeatureViewDetail extends Omit<FeatureViewSummary, 'versions'> {
  versions: FeatureViewVersion[];
  drift: DriftPair[];
  usage: FeatureUsage[];
  models: ModelUse[];
}

function ttl(s: number | null): string {
  if (s === null) {
    return 'no TTL';
  }
  return s % 86400 === 0 ? `${s / 86400}d` : s % 3600 === 0 ? `${s / 3600}h` : fmtDuration(s);
}

function age(s: number | null): string {
  if (s === null) {
    return '–';
  }
  return s >= 86400 ? `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h` : fmtDuration(s);
}

export class FeaturesView {
  readonly node = el('div', 'mj-features');
  private list = el('div', 'mj-features-list');
  private detail = el('div', 'mj-features-detail');
  private picked: string | null = null;

  constructor() {
    this.detail.style.display = 'none';
    this.node.append(this.list, this.detail);
  }

  /** Reload the list, or the open view's detail. */
  async refresh(): Promise<void> {
    if (this.picked !== null) {
      await this.open(this.picked);
      return;
    }
    const { views } = await api<{ views: FeatureViewSummary[] }>('features');
    this.renderList(views);
  }

  private renderList(views: FeatureViewSummary[]): void {
    if (!views.length) {
      this.list.replaceChildren(el('div', 'mj-empty', 'no feature view registered yet (mj.register_features or @mj.feature_view)'));
      return;
    }
    // five columns: the sidebar is narrow (features, owner and creation are in the row's title)
    const t = table(
      ['view', 'entity', 'rows', 'freshness', 'online'],
      views.map(v => [
        `${v.name} v${v.version}`,
        v.entities.join(', '),
        fmtNum(v.rows),
        v.newest === null ? '–' : `${age(v.age_s)} ago (${v.ttl_s === null ? 'no TTL' : `ttl ${ttl(v.ttl_s)}`})${v.stale ? ' · stale' : ''}`,
        v.online ? `${fmtTime(v.online.created)} (${v.online.backend})` : 'never'
      ]),
      'mj-table mj-features-views'
    );
    views.forEach((v, i) => {
      const row = t.tBodies[0].rows[i];
      row.dataset.view = v.name;
      row.classList.add('mj-clickable');
      row.title = `${v.features.length} features: ${v.features.join(', ')}\nnewest feature ${fmtTime(v.newest)}\nowner ${v.owner ?? '–'}, created ${fmtTime(v.created)}${v.description ? `\n${v.description}` : ''}`;
      if (v.stale) {
        row.classList.add('mj-features-stale');
        row.cells[3].title = `newest feature is older than the TTL (${ttl(v.ttl_s)})`;
      }
      row.onclick = () => void this.open(v.name);
    });
    this.list.replaceChildren(section('Feature views', t));
  }

  private async open(name: string): Promise<void> {
    const d = await api<FeatureViewDetail>(`features/${encodeURIComponent(name)}`);
    this.picked = name;
    this.renderDetail(d);
    this.list.style.display = 'none';
    this.detail.style.display = '';
  }

  private back(): void {
    this.picked = null;
    this.detail.style.display = 'none';
    this.list.style.display = '';
    void this.refresh();
  }

  private renderDetail(d: FeatureViewDetail): void {
    const back = el('button', 'jp-mod-styled mj-back', '← Feature views');
    back.onclick = () => this.back();
    const head = el('div', 'mj-features-head');
    head.append(
      el('div', 'mj-card-title', `${d.name} v${d.version}`),
      el('div', 'mj-muted', `entity ${d.entities.join(', ')} · timestamp ${d.timestamp} · ${ttl(d.ttl_s)} · ${fmtNum(d.rows)} rows`)
    );
    const fresh = el('div', d.stale ? 'mj-features-freshness mj-features-stale' : 'mj-features-freshness', d.newest === null ? 'no feature timestamp' : `newest feature ${fmtTime(d.newest)}, ${age(d.age_s)} ago${d.stale ? ' — stale (older than the TTL)' : ''}`);
    head.appendChild(fresh);
    this.detail.replaceChildren(
      back,
      head,
      section('Versions', this.versions(d.versions)),
      section('Drift per feature', d.drift.length ? this.drift(d.drift) : null, 'one offline materialization so far: nothing to compare'),
      section('Training sets and runs', d.usage.length ? this.usage(d.usage) : null, 'no training set built from this view yet'),
      section('Registered models', d.models.length ? this.models(d.models) : null, 'no registered model of a run that used this view')
    );
  }

  private versions(vs: FeatureViewVersion[]): HTMLElement {
    const t = table(
      ['version', 'features', 'ttl', 'materializations', 'online', 'created'],
      vs.map(v => [
        v.current ? `v${v.version} (current)` : `v${v.version}`,
        v.features.join(', '),
        ttl(v.ttl_s),
        v.materializations.map(m => `${m.data_version} (${m.n_rows} rows)`).join(', '),
        v.online.length ? `${v.online.length}× (last ${fmtTime(v.online[0].created)})` : 'never',
        fmtTime(v.created)
      ]),
      'mj-table mj-features-versions'
    );
    vs.forEach((v, i) => {
      t.tBodies[0].rows[i].dataset.version = String(v.version);
    });
    return t;
  }

  private drift(pairs: DriftPair[]): HTMLElement {
    const box = el('div', 'mj-features-drift');
    for (const p of pairs) {
      const title = `v${p.from.version} ${p.from.data_version} → v${p.to.version} ${p.to.data_version} (${fmtTime(p.to.created)})`;
      const card = el('div', 'mj-card mj-features-pair');
      card.dataset.from = p.from.data_version;
      card.dataset.to = p.to.data_version;
      card.appendChild(el('div', 'mj-card-title', `${title} · ${p.n_drifted} drifted`));
      if (p.note) {
        card.appendChild(el('div', 'mj-muted', p.note));
      }
      const names = Object.keys(p.columns);
      const t = table(
        ['feature', 'method', 'value', 'threshold', 'verdict'],
        names.map(n => {
          const c = p.columns[n];
          // ks and chisquare give a p-value (drift below the threshold), the others a distance
          const pre = c.method === 'ks' || c.method === 'chisquare' ? 'p ' : '';
          return [n, c.method ?? '–', c.statistic === null ? '–' : pre + fmtNum(c.statistic), fmtNum(c.threshold), c.drifted === null ? (c.note ?? 'not judged') : c.drifted ? 'drifted' : 'ok'];
        }),
        'mj-table mj-features-drift-table'
      );
      names.forEach((n, i) => {
        const row = t.tBodies[0].rows[i];
        row.dataset.feature = n;
        if (p.columns[n].drifted) {
          row.classList.add('mj-features-drifted');
        }
      });
      card.appendChild(t);
      box.appendChild(card);
    }
    return box;
  }

  private usage(us: FeatureUsage[]): HTMLElement {
    const t = table(
      ['training set', 'view version', 'run', 'time'],
      us.map(u => [u.training_set_name ? `${u.training_set_name} (${u.training_set})` : u.training_set, `v${u.version}`, u.run ? `${u.run_name ?? ''} (${u.run.slice(0, 8)})` : '–', fmtTime(u.created)]),
      'mj-table mj-features-usage'
    );
    us.forEach((u, i) => {
      t.tBodies[0].rows[i].dataset.run = u.run ?? '';
    });
    return t;
  }

  private models(ms: ModelUse[]): HTMLElement {
    return table(
      ['model', 'version', 'stage', 'run'],
      ms.map(m => [m.name + (m.aliases.length ? ` @${m.aliases.join(', @')}` : ''), String(m.version), m.stage, m.run_id ? m.run_id.slice(0, 8) : '–']),
      'mj-table mj-features-models'
    );
  }
}
