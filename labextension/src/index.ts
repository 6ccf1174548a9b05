import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';
import { Dashboard } from './dashboard/dashboard';
import { DASHBOARD_COMMAND, MlopsPanel } from './panel';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path class="jp-icon3" fill="#616161" ' +
  'd="M3 20h18v2H3zM5 10h3v8H5zm5.5-6h3v14h-3zM16 13h3v5h-3z"/></svg>';

const icon = new LabIcon({ name: 'mlops-jupyter:icon', svgstr: ICON_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'mlops-jupyter-labextension:sidebar',
  description: 'MLOps sidebar: runs, comparison, telemetry, alerts and drift; the dashboard tab.',
  autoStart: true,
  optional: [ILabShell, ILayoutRestorer, ICommandPalette],
  activate: (app: JupyterFrontEnd, shell: ILabShell | null, restorer: ILayoutRestorer | null, palette: ICommandPalette | null) => {
    const panel = new MlopsPanel(app);
    panel.title.icon = icon;
    app.shell.add(panel, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(panel, panel.id);
    }
    app.commands.addCommand('mlops:open-sidebar', {
      label: 'MLOps: Show Runs Sidebar',
      execute: () => app.shell.activateById(panel.id)
    });
    let dashboard: MainAreaWidget<Dashboard> | null = null;
    app.commands.addCommand(DASHBOARD_COMMAND, {
      label: 'MLOps: Open as dashboard',
      execute: () => {
        if (!dashboard || dashboard.isDisposed) {
          const content = new Dashboard(app);
          dashboard = new MainAreaWidget({ content });
          dashboard.id = 'mlops-jupyter-dashboard-tab';
          dashboard.title.label = 'MLOps dashboard';
          dashboard.title.icon = icon;
          dashboard.title.closable = true;
          app.shell.add(dashboard, 'main');
        }
        app.shell.activateById(dashboard.id);
      }
    });
    if (palette) {
      palette.addItem({ command: 'mlops:open-sidebar', category: 'MLOps' });
      palette.addItem({ command: DASHBOARD_COMMAND, category: 'MLOps' });
    }
  }
};

export default plugin;
