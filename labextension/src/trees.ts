/**
 * The trees tab: the experiment traces, and one trace as an indented tree with each
 * node's status and metric, the best node starred. Clicking a node shows its run.
 */
import { badge, h } from './dom';
import { requestAPI } from './handler';
import { ITrace, ITraceNode, ITraceSummary } from './tokens';
import { PollingView } from './view';

const MAX_ROWS = 2000; // nodes drawn; a bigger trace says how many more it has

/** The nodes in tree order (each parent before its children), with their depth. */
function treeOrder(nodes: ITraceNode[]): ITraceNode[] {
  const ids = new Set(nodes.map(node => node.id));
  const children = new Map<number | null, ITraceNode[]>();
  for (const node of nodes) {
    const parent = node.parent !== null && ids.has(node.parent) ? node.parent : null;
    const siblings = children.get(parent);
    if (siblings) {
      siblings.push(node);
    } else {
      children.set(parent, [node]);
    }
  }
  const ordered: ITraceNode[] = [];
  const stack = [...(children.get(null) ?? [])].reverse();
  while (stack.length && ordered.length < MAX_ROWS) {
    const node = stack.pop()!;
    ordered.push(node);
    stack.push(...[...(children.get(node.id) ?? [])].reverse());
  }
  return ordered;
}

function describe(value: unknown): string {
  return typeof value === 'number' ? value.toPrecision(6).replace(/\.?0+$/, '') : JSON.stringify(value);
}

export class TreesView extends PollingView {
  private readonly choice = h('select', { class: 'jx-filter', 'aria-label': 'Trace' });
  private readonly heading = h('span', { class: 'jx-count' });
  private readonly tree = h('div', { class: 'jx-trace-tree jx-list' });
  private drawn = '';

  /** `openRun(runId)` shows a node's run (in the runs tab). */
  constructor(private readonly openRun: (runId: number) => void) {
    super('trees', 'Trees');
    this.addClass('jx-TreesView');
    this.choice.onchange = () => this.refreshSoon();
    this.node.append(h('div', { class: 'jx-toolbar' }, this.choice, this.heading), this.tree);
  }

  protected async refresh(): Promise<void> {
    const { traces } = await requestAPI<{ traces: ITraceSummary[] }>('traces');
    this.drawChoices(traces);
    const name = this.choice.value;
    if (!name) {
      this.tree.replaceChildren(h('div', { class: 'jx-muted' }, 'no traces yet: %%sandbox --trace NAME, or explore()'));
      this.heading.textContent = '';
      this.drawn = '';
      return;
    }
    const trace = await requestAPI<ITrace>(`traces/${encodeURIComponent(name)}`);
    const key = JSON.stringify(trace);
    if (key !== this.drawn && name === this.choice.value) {
      this.drawn = key;
      this.drawTree(trace);
    }
  }

  private drawChoices(traces: ITraceSummary[]): void {
    const current = this.choice.value;
    const names = traces.map(t => t.name);
    if (names.join('\n') === Array.from(this.choice.options, o => o.value).join('\n')) {
      return;
    }
    this.choice.replaceChildren(
      ...traces.map(t => h('option', { value: t.name }, `${t.name} (${t.nodes} nodes${t.running ? `, ${t.running} running` : ''})`))
    );
    this.choice.value = names.includes(current) ? current : (names[0] ?? '');
  }

  private drawTree(trace: ITrace): void {
    const best = trace.nodes.find(n => n.id === trace.sota);
    const metric = best?.metrics[trace.metric];
    this.heading.textContent =
      `${trace.maximize ? 'maximise' : 'minimise'} ${trace.metric}` +
      (best ? ` · best #${best.id} = ${describe(metric)}` : ' · no success yet');
    const ordered = treeOrder(trace.nodes);
    this.tree.replaceChildren(
      ...ordered.map(node => {
        const value = node.metrics[trace.metric];
        const params = Object.entries(node.params).map(([k, v]) => `${k}=${describe(v)}`).join(' ');
        const row = h(
          'div',
          {
            class: `jx-node${node.id === trace.sota ? ' jx-sota' : ''}${node.run_id !== null ? ' jx-clickable' : ''}`,
            'data-node': String(node.id),
            style: `padding-left: ${0.4 + node.depth * 1.1}em`,
            title: node.error ?? (node.run_id !== null ? `run ${node.run_id}: click for its details and log` : '')
          },
          h('span', { class: 'jx-node-id' }, `#${node.id}`),
          badge(node.status),
          value !== undefined && h('span', { class: 'jx-metric' }, `${trace.metric}=${describe(value)}`),
          params && h('span', { class: 'jx-muted' }, params),
          node.id === trace.sota && h('span', { class: 'jx-star', title: 'best so far' }, '★')
        );
        if (node.run_id !== null) {
          const runId = node.run_id;
          row.onclick = () => this.openRun(runId);
        }
        return row;
      })
    );
    if (trace.nodes.length > ordered.length) {
      this.tree.append(h('div', { class: 'jx-muted' }, `… ${trace.nodes.length - ordered.length} more nodes (trace.to_dataframe() has them all)`));
    }
  }
}
