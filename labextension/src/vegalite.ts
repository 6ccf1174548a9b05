// Renders Vega-Lite v6 outputs (application/vnd.vegalite.v6+json, what altair 6 writes) in
// JupyterLab and Notebook 7, offline: vega, vega-lite and vega-embed are bundled here.
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import type { VisualizationSpec } from 'vega-embed';

export const VEGALITE6_MIME = 'application/vnd.vegalite.v6+json';

class VegaLite6 extends Widget implements IRenderMime.IRenderer {
  private finalize: (() => void) | null = null;

  constructor() {
    super();
    this.addClass('mj-vegalite6');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const spec = model.data[VEGALITE6_MIME] as unknown as VisualizationSpec;
    const { default: embed } = await import('vega-embed');
    this.finalize?.();
    const host = document.createElement('div');
    this.node.replaceChildren(host);
    const result = await embed(host, spec, { actions: { export: true, source: false, compiled: false, editor: false }, renderer: 'svg' });
    this.finalize = () => result.finalize();
  }

  dispose(): void {
    this.finalize?.();
    super.dispose();
  }
}

const extension: IRenderMime.IExtension = {
  id: 'mlops-jupyter-labextension:vegalite6',
  description: 'Vega-Lite v6 renderer (altair 6 charts), offline.',
  rendererFactory: {
    safe: true,
    mimeTypes: [VEGALITE6_MIME],
    createRenderer: () => new VegaLite6()
  },
  rank: 57,
  dataType: 'json'
};

export default extension;
