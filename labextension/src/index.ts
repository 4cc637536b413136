/**
 * The jupyter-exec side panel plugin: the panel in the left area, restored with the
 * layout, and "jupyter-exec: Show runs" in the command palette.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';

import { jxIcon, JupyterExecPanel } from './panel';

const SHOW_RUNS = 'jupyter-exec:show-runs';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-exec:side-panel',
  description: 'Runs, live logs, cancel, runtime envs and experiment trees of jupyter-exec.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null, restorer: ILayoutRestorer | null) => {
    const panel = new JupyterExecPanel();
    app.shell.add(panel, 'left', { rank: 750 });
    restorer?.add(panel, panel.id);
    app.commands.addCommand(SHOW_RUNS, {
      label: 'jupyter-exec: Show runs',
      caption: 'Open the jupyter-exec side panel on its runs',
      icon: jxIcon,
      execute: () => {
        panel.currentWidget = panel.runs;
        app.shell.activateById(panel.id);
      }
    });
    palette?.addItem({ command: SHOW_RUNS, category: 'jupyter-exec' });
  }
};

export default plugin;
