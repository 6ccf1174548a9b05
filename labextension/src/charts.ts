// Metric curves with uPlot (bundled into the extension, no CDN).
import uPlot from 'uplot';
import { Curve } from './api';

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export function color(i: number): string {
  return PALETTE[i % PALETTE.length];
}

/** Overlay the curves of one metric key for several runs; returns the chart's host node. */
export function curveChart(key: string, curves: Curve[], width: number): HTMLElement {
  const host = document.createElement('div');
  host.className = 'mj-chart';
  host.dataset.key = key;
  const tables: uPlot.AlignedData[] = curves.map(c => [c.step, c.value] as unknown as uPlot.AlignedData);
  const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
  const opts: uPlot.Options = {
    title: key,
    width: Math.max(200, width),
    height: 180,
    legend: { show: true, live: false },
    scales: { x: { time: false } },
    axes: [{ stroke: 'var(--jp-ui-font-color1)' }, { stroke: 'var(--jp-ui-font-color1)', size: 55 }],
    series: [
      { label: 'step' },
      ...curves.map((c, i) => ({ label: c.name, stroke: color(i), width: 1.5, spanGaps: true }))
    ]
  };
  // uPlot measures its host; render after it is attached to the document.
  requestAnimationFrame(() => {
    if (host.dataset.destroyed) {
      return;
    }
    plots.set(host, new uPlot(opts, data, host));
    host.dataset.drawn = 'true';
  });
  return host;
}

const plots = new Map<HTMLElement, uPlot>();

/** Destroy the charts under `root` before it is re-rendered: uPlot keeps window listeners. */
export function destroyCharts(root: HTMLElement): void {
  for (const host of Array.from(root.querySelectorAll<HTMLElement>('.mj-chart'))) {
    host.dataset.destroyed = 'true';
    plots.get(host)?.destroy();
    plots.delete(host);
  }
}
