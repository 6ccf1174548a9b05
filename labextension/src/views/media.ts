// A run's logged media (images, figures, tables, text, audio) per key with a step slider;
// for several runs, the same step of each side by side. The route is served by the media
// module; when it answers 404 (not installed) nothing is shown.
import { ServerConnection } from '@jupyterlab/services';
import { api, ApiError, apiUrl } from '../api';
import { MediaAnswer, MediaItem } from '../types';
import { el } from '../util';

export interface MediaRun {
  id: string;
  name: string;
}

export class MediaView {
  readonly node = el('div', 'mj-media');
  private items = new Map<string, MediaItem[]>(); // run id -> items

  constructor(private runs: MediaRun[]) {
    this.node.style.display = 'none';
  }

  async load(): Promise<void> {
    this.items.clear();
    for (const r of this.runs) {
      try {
        const a = await api<MediaAnswer>(`runs/${encodeURIComponent(r.id)}/media`);
        this.items.set(r.id, Array.isArray(a.media) ? a.media : []);
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) {
          continue; // no media route (or no such run): show nothing
        }
        throw e;
      }
    }
    this.render();
  }

  private render(): void {
    this.node.replaceChildren();
    const keys = new Set<string>();
    for (const list of this.items.values()) {
      list.forEach(m => keys.add(m.key));
    }
    if (!keys.size) {
      this.node.style.display = 'none';
      return;
    }
    this.node.style.display = '';
    this.node.appendChild(el('h3', 'mj-section-title', 'Media'));
    for (const key of Array.from(keys).sort()) {
      this.node.appendChild(this.keyBlock(key));
    }
  }

  private keyBlock(key: string): HTMLElement {
    const block = el('div', 'mj-media-key', null, { 'data-key': key });
    const steps = new Set<number>();
    for (const list of this.items.values()) {
      list.filter(m => m.key === key).forEach(m => steps.add(m.step));
    }
    const sorted = Array.from(steps).sort((a, b) => a - b);
    const head = el('div', 'mj-media-head');
    head.appendChild(el('span', 'mj-media-name', key));
    const slider = el('input', 'mj-media-step', null, { type: 'range', min: '0', max: String(sorted.length - 1), value: String(sorted.length - 1) });
    const label = el('span', 'mj-muted');
    head.append(slider, label);
    const row = el('div', 'mj-media-row');
    block.append(head, row);
    const show = () => {
      const step = sorted[Number(slider.value)] ?? 0;
      label.textContent = `step ${step}`;
      row.replaceChildren();
      for (const r of this.runs) {
        const item = (this.items.get(r.id) ?? []).filter(m => m.key === key && m.step <= step).pop();
        const cell = el('div', 'mj-media-cell');
        if (this.runs.length > 1) {
          cell.appendChild(el('div', 'mj-muted', r.name));
        }
        cell.appendChild(item ? mediaNode(item) : el('div', 'mj-empty', '–'));
        row.appendChild(cell);
      }
    };
    slider.oninput = show;
    show();
    return block;
  }
}

function itemUrl(m: MediaItem): string {
  // the url is a server path: keep it on this server (token and base URL added)
  const path = m.url.replace(/^.*?mlops\/api\/v1\//, '');
  return apiUrl(path);
}

/** One media item as DOM: images as <img>, audio as <audio>, text/tables as escaped text. */
export function mediaNode(m: MediaItem): HTMLElement {
  if (m.kind === 'image' || (m.kind === 'figure' && m.mime.startsWith('image/'))) {
    return el('img', 'mj-media-img', null, { src: itemUrl(m), alt: m.key, loading: 'lazy' });
  }
  if (m.kind === 'audio') {
    return el('audio', 'mj-media-audio', null, { src: itemUrl(m), controls: '' });
  }
  const pre = el('pre', 'mj-media-text', '…');
  void fetchText(itemUrl(m)).then(t => {
    pre.textContent = t.slice(0, 20_000); // textContent: markup in logged text stays text
  });
  return pre;
}

async function fetchText(url: string): Promise<string> {
  const settings = ServerConnection.makeSettings();
  const r = await ServerConnection.makeRequest(url, {}, settings);
  return r.ok ? r.text() : `(${r.status})`;
}
