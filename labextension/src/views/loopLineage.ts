// The lineage picture of a registered model, drawn from ModelLineage.to_dict() (GET
// loop/{model} answers it) with the same layered layout and colours as
// ModelLineage.svg() in Python: a node sits one layer right of its furthest input, each
// layer ordered by the mean position of its inputs. Built with createElementNS and
// textContent only: labels are stored user text (run, data and feature names).

export interface LineageNode {
  id: string;
  kind: string;
  label: string;
  [extra: string]: unknown;
}

export interface LineageEdge {
  source: string;
  target: string;
  type: string;
}

export interface Lineage {
  model: string;
  nodes: LineageNode[];
  edges: LineageEdge[];
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const COLOURS: Record<string, string> = {
  data: '#e3f2fd',
  feature_view: '#ede7f6',
  training_set: '#e8eaf6',
  run: '#fff3e0',
  model_version: '#e8f5e9',
  stage: '#fce4ec',
  rollout: '#fffde7'
};
const W = 170;
const H = 40;
const GX = 60;
const GY = 18;

/** Layer of each node: the longest path from a node without inputs (bounded, so a cycle
 * cannot loop). */
export function layers(g: Lineage): Map<string, number> {
  const layer = new Map(g.nodes.map(n => [n.id, 0] as [string, number]));
  const edges = g.edges.filter(e => layer.has(e.source) && layer.has(e.target));
  for (let i = 0; i < g.nodes.length; i++) {
    let changed = false;
    for (const e of edges) {
      const want = layer.get(e.source)! + 1;
      if (layer.get(e.target)! < want) {
        layer.set(e.target, want);
        changed = true;
      }
    }
    if (!changed) {
      break;
    }
  }
  return layer;
}

/** Top-left corner of each node's box, and the picture's size. */
export function layout(g: Lineage): { xy: Map<string, [number, number]>; width: number; height: number } {
  const layer = layers(g);
  const cols = new Map<number, string[]>();
  for (const n of g.nodes) {
    const li = layer.get(n.id)!;
    cols.set(li, [...(cols.get(li) ?? []), n.id]);
  }
  const preds = new Map<string, string[]>();
  for (const e of g.edges) {
    preds.set(e.target, [...(preds.get(e.target) ?? []), e.source]);
  }
  const pos = new Map<string, number>();
  const order = [...cols.keys()].sort((a, b) => a - b);
  for (const li of order) {
    let ids = cols.get(li)!;
    if (li > order[0]) {
      const key = (i: string): number => {
        const ps = preds.get(i) ?? [];
        return ps.reduce((s, p) => s + (pos.get(p) ?? 0), 0) / Math.max(1, ps.length);
      };
      // a stable sort, as Python's
      ids = ids.map((id, k) => ({ id, k, v: key(id) })).sort((a, b) => a.v - b.v || a.k - b.k).map(x => x.id);
      cols.set(li, ids);
    }
    ids.forEach((id, k) => pos.set(id, k));
  }
  const xy = new Map<string, [number, number]>();
  for (const [li, ids] of cols) {
    ids.forEach((id, k) => xy.set(id, [20 + li * (W + GX), 20 + k * (H + GY)]));
  }
  const maxLayer = order.length ? order[order.length - 1] : 0;
  const tallest = Math.max(1, ...[...cols.values()].map(c => c.length));
  return { xy, width: 40 + (maxLayer + 1) * (W + GX) - GX, height: 40 + tallest * (H + GY) - GY };
}

function svgEl<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, String(v));
  }
  return node;
}

function titled<T extends SVGElement>(node: T, text: string): T {
  const t = svgEl('title', {});
  t.textContent = text;
  node.appendChild(t);
  return node;
}

/** The lineage picture as an <svg> element (boxes carry data-node = the node's id). */
export function drawLineage(g: Lineage, markerId = 'mj-loop-arrow'): SVGSVGElement {
  const { xy, width, height } = layout(g);
  const svg = svgEl('svg', { width, height, viewBox: `0 0 ${width} ${height}`, 'font-family': 'sans-serif', 'font-size': 11, class: 'mj-loop-lineage-svg' });
  const defs = svgEl('defs', {});
  const marker = svgEl('marker', { id: markerId, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto' });
  marker.appendChild(svgEl('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#666' }));
  defs.appendChild(marker);
  svg.appendChild(defs);
  for (const e of g.edges) {
    const a = xy.get(e.source);
    const b = xy.get(e.target);
    if (!a || !b) {
      continue;
    }
    const [x1, y1, x2, y2] = [a[0] + W, a[1] + H / 2, b[0], b[1] + H / 2];
    const mx = (x1 + x2) / 2;
    const path = svgEl('path', { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, fill: 'none', stroke: '#888', 'marker-end': `url(#${markerId})`, class: 'mj-loop-edge' });
    path.dataset.type = e.type;
    svg.appendChild(titled(path, e.type));
  }
  for (const n of g.nodes) {
    const [x, y] = xy.get(n.id)!;
    const box = titled(svgEl('g', { class: `mj-loop-node mj-loop-node-${n.kind.replace(/[^a-z_]/g, '')}` }), `${n.kind}: ${n.id}`);
    box.dataset.node = n.id;
    box.appendChild(svgEl('rect', { x, y, width: W, height: H, rx: 5, fill: COLOURS[n.kind] ?? '#eee', stroke: '#555' }));
    String(n.label)
      .split('\n')
      .slice(0, 2)
      .forEach((line, k) => {
        const text = svgEl('text', { x: x + 6, y: y + 16 + k * 14, fill: '#222' });
        text.textContent = line.length <= 28 ? line : line.slice(0, 27) + '…';
        box.appendChild(text);
      });
    svg.appendChild(box);
  }
  return svg;
}
