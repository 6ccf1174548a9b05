// The "MLOps" left-sidebar panel: tabs over the views (runs + detail, compare, live, data, serving,
// features, loop), each in its own file under views/. "Open as dashboard" opens the full-width tab.
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Widget } from '@lumino/widgets';
import { ApiError } from './api';
import { destroyCharts } from './charts';
import { el } from './util';
import { CompareView } from './views/compare';
import { renderData } from './views/data';
import { renderDetail } from './views/detail';
import { FeaturesView } from './views/features';
import { LoopView } from './views/loop';
import { refreshStrip, renderLive } from './views/live';
import { RunsView } from './views/runs';
import { ServingView } from './views/serving';

export { summarize } from './views/live';

const POLL_MS = 3000;
type Tab = 'runs' | 'compare' | 'live' | 'data' | 'serving' | 'features' | 'loop';
export const DASHBOARD_COMMAND = 'mlops:open-dashboard';

export class MlopsPanel extends Widget {
  private tab: Tab = 'runs';
  private tabs = new Map<Tab, { button: HTMLButtonElement; body: HTMLElement }>();
  private strip = el('div', 'mj-strip');
  private error = el('div', 'mj-error');
  private runs: RunsView;
  private compare: CompareView;
  private serving = new ServingView(() => this.chartWidth());
  private features = new FeaturesView();
  private loop = new LoopView(e => this.setError(e));
  private detailView = el('div', 'mj-detail');
  private detailId: string | null = null;
  private detailIsRunning = false;
  private timer: number | undefined;

  constructor(private app: JupyterFrontEnd) {
    super();
    this.id = 'mlops-jupyter-sidebar';
    this.title.caption = 'MLOps: runs, comparison, telemetry';
    this.addClass('mj-panel');
    this.runs = new RunsView({
      open: id => void this.openDetail(id, true),
      selectionChanged: () => this.updateCompareLabel(),
      error: e => this.setError(e)
    });
    this.runs.compareButton.onclick = () => this.showTab('compare');
    this.build();
    this.compare = new CompareView(
      this.tabs.get('compare')!.body,
      () => Array.from(this.runs.selected.keys()),
      () => this.chartWidth(),
      e => this.setError(e)
    );
  }

  private build(): void {
    const n = this.node;
    const title = el('div', 'mj-title', 'MLOps');
    const dash = el('button', 'jp-mod-styled mj-open-dashboard', 'Open as dashboard', { title: 'Runs table and plots in a main-area tab' });
    dash.onclick = () => void this.app.commands.execute(DASHBOARD_COMMAND);
    title.appendChild(dash);
    n.appendChild(title);
    n.appendChild(this.strip);
    const bar = el('div', 'mj-tabs');
    const labels: [Tab, string][] = [
      ['runs', 'Runs'],
      ['compare', 'Compare'],
      ['live', 'Live'],
      ['data', 'Data'],
      ['serving', 'Serving'],
      ['features', 'Features'],
      ['loop', 'Loop']
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
    this.detailView.style.display = 'none';
    this.tabs.get('runs')!.body.append(this.runs.node, this.detailView);
    this.tabs.get('serving')!.body.append(this.serving.node);
    this.tabs.get('features')!.body.append(this.features.node);
    this.tabs.get('loop')!.body.append(this.loop.node);
    this.showTab('runs');
  }

  private updateCompareLabel(): void {
    const k = this.runs.selected.size;
    this.tabs.get('compare')!.button.textContent = k ? `Compare (${k})` : 'Compare';
  }

  private showTab(t: Tab): void {
    this.tab = t;
    for (const [k, { button, body }] of this.tabs) {
      button.classList.toggle('mj-active', k === t);
      body.style.display = k === t ? '' : 'none';
    }
    this.updateCompareLabel();
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
    this.error.textContent = e instanceof ApiError ? `${e.status}: ${e.message}` : String(e);
    this.error.style.display = '';
  }

  protected onAfterShow(): void {
    void this.refreshTab(true);
    window.clearInterval(this.timer);
    this.timer = window.setInterval(() => void this.poll(), POLL_MS);
  }

  protected onAfterHide(): void {
    window.clearInterval(this.timer);
  }

  protected onResize(): void {
    this.runs.renderRows();
  }

  private async poll(): Promise<void> {
    if (this.isVisible) {
      await this.refreshTab(false);
    }
  }

  private async refreshTab(force: boolean): Promise<void> {
    void refreshStrip(this.strip);
    try {
      if (this.tab === 'runs') {
        if (this.detailId) {
          if (force || this.detailIsRunning) {
            await this.openDetail(this.detailId, false);
          }
        } else if (force ? Date.now() - this.runs.lastLoad > 500 : this.runs.anyRunningVisible() || (await this.runs.storeChanged())) {
          await this.runs.reload(false);
        }
      } else if (this.tab === 'compare') {
        await (force ? this.compare.render() : this.compare.poll());
      } else if (this.tab === 'live') {
        await renderLive(this.tabs.get('live')!.body);
      } else if (this.tab === 'data' && force) {
        await renderData(this.tabs.get('data')!.body);
      } else if (this.tab === 'serving') {
        await this.serving.refresh(force);
      } else if (this.tab === 'features' && force) {
        await this.features.refresh();
      } else if (this.tab === 'loop') {
        await this.loop.refresh(force);
      }
    } catch (e) {
      this.setError(e);
    }
  }

  private async openDetail(id: string, scrollTop: boolean): Promise<void> {
    try {
      const d = await renderDetail(
        this.detailView,
        id,
        {
          app: this.app,
          width: () => this.chartWidth(),
          back: {
            label: '← Runs',
            onClick: () => {
              this.detailId = null;
              destroyCharts(this.detailView);
              this.detailView.style.display = 'none';
              this.runs.node.style.display = '';
              this.runs.renderRows();
            }
          }
        },
        scrollTop
      );
      this.setError(null);
      this.detailId = id;
      this.detailIsRunning = d.status === 'running';
      this.runs.node.style.display = 'none';
      this.detailView.style.display = '';
    } catch (e) {
      this.setError(e);
    }
  }

  private chartWidth(): number {
    return Math.max(220, this.node.clientWidth - 30);
  }
}
