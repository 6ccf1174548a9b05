// Loop: registered models with their production and staging versions, pending approvals
// and newest gate verdict (GET loop); one model's approvals a watcher waits for, with
// Approve / Reject and a reason (POST loop/{model}/approve|reject, recorded as
// `mlops-jupyter approve` records it), each version's newest gate verdict per rule with its
// evidence, the watcher's signals, the approve/reject decisions and the lineage picture
// (GET loop/{model}). Every name, reason and evidence value is stored text: textContent only.
import { ServerConnection } from '@jupyterlab/services';
import { api, ApiError, apiUrl } from '../api';
import { el, fmtTime, fmtValue, section, table } from '../util';
import { drawLineage, Lineage } from './loopLineage';

const POLL_MS = 5000; // the panel polls every 3 s; a model's detail is heavier than a list

export interface GateBrief {
  id: number;
  version: number;
  passed: boolean;
  baseline_version: number | null;
  time: number;
}

export interface RuleVerdict {
  rule: string;
  status: string;
  detail: string;
  evidence: { [key: string]: unknown };
}

export interface GateVerdict extends GateBrief {
  data_id: string | null;
  user: string | null;
  n: number | null;
  results: RuleVerdict[];
  extra: { [key: string]: unknown };
}

export interface Approval {
  decision: string;
  reason: string | null;
  user: string;
  time: number;
}

export interface LoopModelSummary {
  name: string;
  versions: number;
  latest: number | null;
  production: number | null;
  staging: number[];
  last_gate: GateBrief | null;
  pending: number;
  signals: { [state: string]: number };
  policy: { require_gate?: boolean };
}

export interface LoopVersion {
  version: number;
  stage: string;
  aliases: string[];
  run_id: string | null;
  created: number;
  created_by: string | null;
  gate: GateVerdict | null;
  gates: number;
  approval: Approval | null;
}

export interface PendingApproval {
  version: number;
  rule: string;
  signal: string;
  since: number | null;
  gate: number | null;
}

export interface LoopSignal {
  model: string;
  rule: string;
  signal: string;
  state: string;
  waiting_for: string | null;
  version: number | null;
  step: number | null;
  gate: number | null;
  reason: string | null;
  asked: number | null;
  owner: string;
  created: number;
  updated: number;
}

export interface Decision {
  time: number;
  version: number | null;
  action: string;
  reason: string | null;
  user: string | null;
}

/** GET loop/{model}: the list's fields plus the model's versions, approvals, signals. */
export interface LoopModelDetail extends Omit<LoopModelSummary, 'versions' | 'pending' | 'signals'> {
  versions: LoopVersion[];
  pending: PendingApproval[];
  signals: LoopSignal[];
  decisions: Decision[];
  lineage: Lineage;
}

export interface DecisionAnswer extends Approval {
  model: string;
  version: number;
}

/** POST a JSON body to a route; ServerConnection adds the token and the XSRF header. */
async function post<T>(path: string, body: unknown): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const response = await ServerConnection.makeRequest(apiUrl(path), { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } }, settings);
  const answer = (await response.json().catch(() => ({}))) as { error?: string };
  if (!response.ok) {
    throw new ApiError(response.status, answer.error ?? response.statusText);
  }
  return answer as T;
}

function gateText(g: GateBrief | null): string {
  if (!g) {
    return 'no gate';
  }
  const against = g.baseline_version === null ? 'no production' : `v${g.baseline_version}`;
  return `v${g.version} ${g.passed ? 'passed' : 'failed'} vs ${against}`;
}

function verdictBadge(status: string): HTMLElement {
  return el('span', `mj-loop-verdict mj-loop-${status.replace(/[^a-z]/g, '')}`, status);
}

function ruleCell(r: RuleVerdict): HTMLElement {
  const cell = el('div', '');
  cell.append(el('div', 'mj-loop-rule-name', r.rule), el('div', 'mj-muted mj-loop-rule-detail', r.detail || null));
  return cell;
}

function evidenceText(ev: { [key: string]: unknown }): string {
  return Object.entries(ev)
    .map(([k, v]) => `${k}: ${typeof v === 'object' && v !== null ? JSON.stringify(v) : fmtValue(v)}`)
    .join('\n');
}

export class LoopView {
  readonly node = el('div', 'mj-loop');
  private list = el('div', 'mj-loop-list');
  private detail = el('div', 'mj-loop-detail');
  private picked: string | null = null;
  private notice = ''; // the last decision made here, shown over the re-rendered detail
  private shown = ''; // the answer on screen: a poll that gets the same one redraws nothing
  private lastLoad = 0;

  constructor(private onError: (e: unknown) => void = () => undefined) {
    this.detail.style.display = 'none';
    this.node.append(this.list, this.detail);
  }

  /** Reload the list, or the open model's detail: always when `force` (the tab is shown),
   * else (the panel's poll) every POLL_MS at most, redrawn only when the answer changed and
   * never while a reason is being typed; unfolded verdicts stay unfolded. */
  async refresh(force = true): Promise<void> {
    if (!force && Date.now() - this.lastLoad < POLL_MS) {
      return;
    }
    this.lastLoad = Date.now();
    if (this.picked !== null) {
      const typing = this.detail.contains(document.activeElement) && document.activeElement instanceof HTMLTextAreaElement;
      if (!typing) {
        await this.open(this.picked, force);
      }
      return;
    }
    const answer = await api<{ models: LoopModelSummary[] }>('loop');
    const json = JSON.stringify(answer);
    if (force || json !== this.shown) {
      this.shown = json;
      this.renderList(answer.models);
    }
  }

  private renderList(models: LoopModelSummary[]): void {
    if (!models.length) {
      this.list.replaceChildren(el('div', 'mj-empty', 'no registered model yet (mj.register_model)'));
      return;
    }
    // three columns: the sidebar is narrow
    const t = table(
      ['model', 'stages', 'newest gate'],
      models.map(m => {
        const name = el('div', '');
        name.appendChild(el('div', 'mj-loop-model-name', m.name));
        if (m.pending) {
          name.appendChild(el('div', 'mj-loop-pending-count', `${m.pending} pending approval${m.pending > 1 ? 's' : ''}`));
        }
        const stages = `production ${m.production === null ? '–' : `v${m.production}`}${m.staging.length ? `, staging ${m.staging.map(v => `v${v}`).join(', ')}` : ''}`;
        return [name, stages, gateText(m.last_gate)];
      }),
      'mj-table mj-loop-models'
    );
    models.forEach((m, i) => {
      const row = t.tBodies[0].rows[i];
      row.dataset.model = m.name;
      row.classList.add('mj-clickable');
      const states = Object.entries(m.signals).map(([s, n]) => `${n} ${s}`);
      row.title = `${m.versions} versions (newest v${m.latest ?? '–'})${m.policy.require_gate ? '\nproduction requires a passing gate' : ''}${states.length ? `\nsignals: ${states.join(', ')}` : ''}`;
      if (m.pending) {
        row.classList.add('mj-loop-has-pending');
      }
      if (m.last_gate && !m.last_gate.passed) {
        row.classList.add('mj-loop-gate-failed');
      }
      row.onclick = () => void this.open(m.name).catch(e => this.onError(e));
    });
    this.list.replaceChildren(section('Models', t));
  }

  private async open(name: string, force = true): Promise<void> {
    const d = await api<LoopModelDetail>(`loop/${encodeURIComponent(name)}`);
    const json = JSON.stringify(d);
    const same = this.picked === name;
    if (!same) {
      this.notice = '';
    } else if (!force && json === this.shown) {
      return;
    }
    this.picked = name;
    this.shown = json;
    const unfolded = new Set(same ? Array.from(this.detail.querySelectorAll<HTMLDetailsElement>('details[open]')).map(x => x.dataset.key) : []);
    this.renderDetail(d);
    for (const x of Array.from(this.detail.querySelectorAll<HTMLDetailsElement>('details'))) {
      x.open = unfolded.has(x.dataset.key);
    }
    this.list.style.display = 'none';
    this.detail.style.display = '';
  }

  private back(): void {
    this.picked = null;
    this.shown = '';
    this.detail.style.display = 'none';
    this.list.style.display = '';
    void this.refresh().catch(e => this.onError(e));
  }

  private renderDetail(d: LoopModelDetail): void {
    const back = el('button', 'jp-mod-styled mj-back', '← Models');
    back.onclick = () => this.back();
    const head = el('div', 'mj-loop-head');
    head.dataset.model = d.name;
    head.append(
      el('div', 'mj-card-title', d.name),
      el('div', 'mj-muted', `production ${d.production === null ? '–' : `v${d.production}`} · staging ${d.staging.length ? d.staging.map(v => `v${v}`).join(', ') : '–'} · ${d.versions.length} versions${d.policy.require_gate ? ' · production requires a passing gate' : ''}`)
    );
    const gates = new Map(d.versions.filter(v => v.gate).map(v => [v.version, v.gate!] as [number, GateVerdict]));
    this.detail.replaceChildren(
      back,
      head,
      el('div', 'mj-loop-notice', this.notice || null),
      section('Pending approvals', d.pending.length ? this.pending(d.name, d.pending, gates) : null, 'no version waits for an approval'),
      section('Gates', d.versions.some(v => v.gate) ? this.gates(d.versions) : null, 'no gate verdict yet (mj.gate or mlops-jupyter gate)'),
      section('Watcher signals', d.signals.length ? this.signals(d.signals) : null, 'no signal handled by mlops-jupyter watch for this model'),
      section('Decisions', d.decisions.length ? this.decisions(d.decisions) : null, 'no approval or rejection yet'),
      section('Lineage', this.lineage(d.lineage))
    );
  }

  private pending(name: string, ps: PendingApproval[], gates: Map<number, GateVerdict>): HTMLElement {
    const box = el('div', 'mj-cards mj-loop-pending');
    for (const p of ps) {
      const card = el('div', 'mj-card mj-loop-approval');
      card.dataset.version = String(p.version);
      const g = gates.get(p.version);
      card.append(
        el('div', 'mj-card-title', `v${p.version} waits for approval`),
        el('div', 'mj-muted', `rule ${p.rule} · signal ${p.signal} · since ${fmtTime(p.since)}`),
        el('div', 'mj-muted', g ? `gate #${g.id}: ${gateText(g)}` : 'no gate verdict')
      );
      const reason = el('textarea', 'mj-loop-reason', null, { rows: '2', placeholder: 'reason (kept in the audit log)', maxlength: '2000' });
      const approve = el('button', 'jp-mod-styled jp-mod-accept mj-loop-approve', 'Approve');
      const reject = el('button', 'jp-mod-styled jp-mod-warn mj-loop-reject', 'Reject');
      const status = el('div', 'mj-loop-status');
      const decide = async (action: 'approve' | 'reject'): Promise<void> => {
        approve.disabled = reject.disabled = true;
        status.textContent = action === 'approve' ? 'approving…' : 'rejecting…';
        try {
          const a = await post<DecisionAnswer>(`loop/${encodeURIComponent(name)}/${action}`, { version: p.version, reason: reason.value.trim() || null });
          this.notice = `v${a.version} ${a.decision} by ${a.user}: the watcher's next poll goes on`;
          await this.open(name);
        } catch (e) {
          status.textContent = e instanceof ApiError ? `${e.status}: ${e.message}` : String(e);
          approve.disabled = reject.disabled = false;
        }
      };
      approve.onclick = () => void decide('approve');
      reject.onclick = () => void decide('reject');
      const buttons = el('div', 'mj-loop-buttons');
      buttons.append(approve, reject);
      card.append(reason, buttons, status);
      box.appendChild(card);
    }
    return box;
  }

  private gates(vs: LoopVersion[]): HTMLElement {
    const box = el('div', 'mj-loop-gates');
    for (const v of vs) {
      const g = v.gate;
      if (!g) {
        continue;
      }
      const item = el('details', `mj-loop-gate ${g.passed ? 'mj-loop-gate-passed' : 'mj-loop-gate-failed'}`);
      item.dataset.version = String(v.version);
      item.dataset.key = `gate:${v.version}`;
      const summary = el('summary', '');
      const stage = v.stage === 'none' ? '' : ` (${v.stage})`;
      const approval = v.approval ? ` · ${v.approval.decision} by ${v.approval.user}` : '';
      summary.append(verdictBadge(g.passed ? 'pass' : 'fail'), el('span', '', ` v${v.version}${stage} · gate #${g.id} vs ${g.baseline_version === null ? 'no production' : `v${g.baseline_version}`} · ${g.n ?? '–'} examples · ${fmtTime(g.time)}${v.gates > 1 ? ` · ${v.gates} verdicts` : ''}${approval}`));
      item.appendChild(summary);
      // two columns (the sidebar is narrow): the rule with its detail under it, the verdict
      const t = table(['rule', 'verdict'], g.results.map(r => [ruleCell(r), verdictBadge(r.status)]), 'mj-table mj-loop-rules');
      const rows = Array.from(t.tBodies[0].rows); // before the evidence rows go in between
      g.results.forEach((r, i) => {
        const row = rows[i];
        row.dataset.rule = r.rule;
        row.dataset.status = r.status;
        const keys = Object.keys(r.evidence ?? {});
        if (keys.length) {
          // the evidence, folded: one more row under the rule
          const ev = t.tBodies[0].insertRow(row.sectionRowIndex + 1);
          ev.className = 'mj-loop-evidence-row';
          const cell = ev.insertCell();
          cell.colSpan = 2;
          const fold = el('details', 'mj-loop-evidence');
          fold.dataset.key = `evidence:${v.version}:${i}`;
          fold.append(el('summary', '', `evidence (${keys.join(', ')})`), el('pre', '', evidenceText(r.evidence)));
          cell.appendChild(fold);
        }
      });
      item.appendChild(t);
      const more = Object.keys(g.extra ?? {});
      if (more.length) {
        const fold = el('details', 'mj-loop-evidence');
        fold.dataset.key = `extra:${v.version}`;
        fold.append(el('summary', '', more.join(', ')), el('pre', '', evidenceText(g.extra)));
        item.appendChild(fold);
      }
      item.appendChild(el('div', 'mj-muted', `data ${g.data_id ?? '–'} · by ${g.user ?? '–'}`));
      box.appendChild(item);
    }
    return box;
  }

  private signals(ss: LoopSignal[]): HTMLElement {
    const t = table(
      ['rule', 'state', 'version', 'updated'],
      ss.map(s => [s.rule, s.state === 'waiting' && s.waiting_for ? `waiting (${s.waiting_for})` : s.state, s.version === null ? '–' : `v${s.version}`, fmtTime(s.updated)]),
      'mj-table mj-loop-signals'
    );
    ss.forEach((s, i) => {
      const row = t.tBodies[0].rows[i];
      row.dataset.state = s.state;
      row.classList.add(`mj-loop-state-${s.state.replace(/[^a-z]/g, '')}`);
      row.dataset.signal = s.signal;
      row.title = `signal ${s.signal}\nclaimed by ${s.owner} at ${fmtTime(s.created)}${s.reason ? `\n${s.reason}` : ''}`;
    });
    return t;
  }

  private decisions(ds: Decision[]): HTMLElement {
    return table(
      ['decision', 'by', 'reason'],
      ds.map(x => [`${x.action} ${x.version === null ? '' : `v${x.version}`}`.trim(), `${x.user ?? '–'}, ${fmtTime(x.time)}`, x.reason ?? '']),
      'mj-table mj-loop-decisions'
    );
  }

  private lineage(g: Lineage): HTMLElement {
    const box = el('div', 'mj-loop-lineage');
    if (!g.nodes.length) {
      box.appendChild(el('div', 'mj-empty', 'nothing recorded'));
      return box;
    }
    box.appendChild(drawLineage(g));
    box.title = 'data → features → runs → versions → stages and rollouts (scroll to see all of it)';
    return box;
  }
}
