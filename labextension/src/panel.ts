/**
 * The side panel: three tabs (runs, envs, trees), each polling only while it is shown.
 */
import { LabIcon } from '@jupyterlab/ui-components';
import { TabPanel } from '@lumino/widgets';

import { EnvsView } from './envs';
import { RunsView } from './runs';
import { TreesView } from './trees';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 4h18v16H3zm2 2v12h14V6z"/>
    <path d="M7.5 8.5 11 12l-3.5 3.5-1.4-1.4L8.2 12 6.1 9.9zM12 14.5h5.5v2H12z"/>
  </g>
</svg>`;

export const jxIcon = new LabIcon({ name: 'jupyter-exec:runs', svgstr: ICON_SVG });

export class JupyterExecPanel extends TabPanel {
  readonly runs = new RunsView();

  constructor() {
    super({ tabPlacement: 'top' });
    this.id = 'jupyter-exec-panel';
    this.addClass('jx-Panel');
    this.title.icon = jxIcon;
    this.title.caption = 'jupyter-exec: runs, envs, experiment trees';
    this.addWidget(this.runs);
    this.addWidget(new EnvsView());
    this.addWidget(
      new TreesView(runId => {
        this.currentWidget = this.runs;
        this.runs.select(runId);
      })
    );
  }
}
