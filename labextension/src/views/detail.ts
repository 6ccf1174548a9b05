// One run in full: params, metrics (+ curves, one request for all keys), system samples,
// alerts, thermal episodes, executed cells, data versions, artifacts, media, tags.
import { JupyterFrontEnd } from '@jupyterlab/application';
import { api, apiUrl } from '../api';
import { CurveChart, destroyCharts } from '../charts';
import { ArtifactInfo, Compare, DataVersion, Json, RunDetail } from '../types';
import { badge, el, fmtDuration, fmtNum, fmtTime, fmtValue, section, table } from '../util';
import { MediaView } from './media';
import { hasLlmEval, LlmView } from './llm';
import { isSweep, SweepView } from './sweep';

export interface DetailContext {
  app: JupyterFrontEnd;
  width: () => number;
  back?: { label: string; onClick: () => void };
}

// the charts of the run shown in a detail container, kept across refreshes of that run
const shown = new WeakMap<HTMLElement, { id: string; charts: Map<string, CurveChart> }>();

/** Render run `id` into `v` (replacing its content); returns the run. Rendering the same
 * run again (a running run's refresh) keeps its charts and appends only the new points. */
export async function renderDetail(v: HTMLElement, id: string, ctx: DetailContext, scrollTop = true): Promise<RunDetail> {
  const d = await api<RunDetail>(`runs/${encodeURIComponent(id)}`);
  const scroll = v.scrollTop;
  const prev = shown.get(v);
  const alive = prev !== undefined && Array.from(prev.charts.values()).every(c => !c.isDestroyed);
  const keep = prev && alive && prev.id === d.id && v.isConnected ? prev.charts : null;
  if (keep) {
    keep.forEach(c => c.host.remove()); // detached, not destroyed
  } else {
    destroyCharts(v);
  }
  v.replaceChildren();
  const top = el('div', 'mj-detail-top');
  if (ctx.back) {
    const back = el('button', 'jp-mod-styled mj-back', ctx.back.label);
    back.onclick = ctx.back.onClick;
    top.append(back);
  }
  if (d.notebook_relpath) {
    const open = el('button', 'jp-mod-styled mj-open-nb', 'Open notebook', { title: d.notebook_path ?? '' });
    const rel = d.notebook_relpath;
    open.onclick = () => void ctx.app.commands.execute('docmanager:open', { path: rel });
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
  const kv = (o: Record<string, Json>) =>
    Object.keys(o).length ? table(['key', 'value'], Object.entries(o).map(([k, x]) => [k, fmtValue(x)])) : null;
  v.append(section('Parameters', kv(d.params)));
  const metrics = d.metrics.filter(m => !m.key.startsWith('sys/'));
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
    const have = keep && keys.every(k => keep.has(k)) ? keep : null;
    if (have) {
      // the same charts, updated in place with the points after the last step they hold
      keys.forEach(k => charts.appendChild(have.get(k)!.host));
      const since = Math.min(...keys.map(k => have.get(k)!.data[0]?.step.slice(-1)[0] ?? -1));
      void api<Compare>('compare', { ids: d.id, keys: keys.join(','), max_points: '500', since_step: String(since) }).then(c => {
        keys.forEach(k => have.get(k)!.append(c.curves[k] ?? []));
      });
    } else {
      keep?.forEach(c => c.destroy());
      const made = new Map<string, CurveChart>();
      shown.set(v, { id: d.id, charts: made });
      // one request for every curve of the run
      void api<Compare>('compare', { ids: d.id, keys: keys.join(','), max_points: '500' }).then(c => {
        for (const k of keys) {
          const curves = c.curves[k] ?? [];
          if (curves.length) {
            const chart = new CurveChart(k, curves, ctx.width());
            made.set(k, chart);
            charts.appendChild(chart.host);
          }
        }
      });
    }
  } else {
    keep?.forEach(c => c.destroy());
    shown.delete(v);
  }
  // a sweep run: its trials across workers (counts, trials/s, best, parallel coordinates)
  if (isSweep(d)) {
    const sweep = new SweepView(d.id, ctx.width());
    v.append(sweep.node);
    void sweep.load().catch(() => undefined); // the rest of the detail stays usable
  }
  const sysm = d.metrics.filter(m => m.key.startsWith('sys/'));
  if (sysm.length) {
    v.append(section('System', table(['key', 'last', 'min', 'max'], sysm.map(m => [m.key, fmtNum(m.last), fmtNum(m.min), fmtNum(m.max)]))));
  }
  v.append(
    section('Alerts', d.alerts.length ? table(['time', 'level', 'message'], d.alerts.map(a => [fmtTime(a.start_time), a.level, a.message])) : null)
  );
  const thermal = d.events.filter(e => e.kind === 'throttle' || e.kind === 'thermal');
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
            d.cells.map((c, i) => {
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
        ? table(
            ['name', 'size', 'digest'],
            d.artifacts.map(a => [artifactLink(d.id, a), `${a.size} B`, String(a.digest).slice(0, 12)])
          )
        : null
    )
  );
  // media (images, figures, text) per key with a step slider, when the route exists
  const media = new MediaView([{ id: d.id, name: d.name }]);
  v.append(media.node);
  void media.load();
  // an LLM evaluation (llm/... scores): its scores with intervals and worst examples
  if (hasLlmEval(d.metrics)) {
    const llm = new LlmView([{ id: d.id, name: d.name }]);
    v.append(llm.node);
    void llm.load().catch(() => undefined); // the rest of the detail stays usable
  }
  // tags last: the env.* tags make a long list
  v.append(section('Tags', kv(d.tags)));
  v.scrollTop = scrollTop ? 0 : scroll;
  return d;
}

function versionsTable(rows: DataVersion[]): HTMLElement {
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

/** A download link to the server's artifact route (streamed, hash-checked; the browser's
 * Jupyter login cookie authenticates it). Each path segment of the name is encoded. */
export function artifactLink(runId: string, a: ArtifactInfo): HTMLAnchorElement {
  const name = a.name.split('/').map(encodeURIComponent).join('/');
  const href = apiUrl(`runs/${encodeURIComponent(runId)}/artifacts/${name}`);
  const base = a.name.split('/').pop() ?? a.name;
  return el('a', 'mj-artifact-link', a.name, { href, download: base, title: `download ${a.name}` });
}
