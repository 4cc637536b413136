/**
 * The envs tab: the runtime-env cache (what is built, for which target, how big, how used).
 */
import { badge, formatBytes, formatTime, h, table } from './dom';
import { requestAPI } from './handler';
import { IEnv } from './tokens';
import { PollingView } from './view';

/** What an env holds, in one line: its pip requirements, working dir and modules. */
function summary(spec: { [key: string]: unknown }): string {
  const parts: string[] = [];
  for (const [field, value] of Object.entries(spec)) {
    if (Array.isArray(value) ? value.length : value && typeof value !== 'object') {
      parts.push(`${field}: ${Array.isArray(value) ? value.join(', ') : String(value)}`);
    }
  }
  return parts.join('; ');
}

export class EnvsView extends PollingView {
  private readonly rows = table(['env', 'status', 'target', 'size', 'uses', 'last used', 'holds']);
  private drawn = '';

  constructor() {
    super('envs', 'Envs');
    this.addClass('jx-EnvsView');
    this.node.append(h('div', { class: 'jx-list' }, this.rows.table));
  }

  protected async refresh(): Promise<void> {
    const { envs } = await requestAPI<{ envs: IEnv[] }>('envs');
    const key = JSON.stringify(envs);
    if (key === this.drawn) {
      return;
    }
    this.drawn = key;
    this.rows.body.replaceChildren(
      ...envs.map(env =>
        h(
          'tr',
          { class: 'jx-row', title: env.error ?? JSON.stringify(env.spec, null, 1) },
          h('td', { class: 'jx-mono' }, env.hash.slice(0, 12)),
          h('td', null, badge(env.status)),
          h('td', null, env.target),
          h('td', null, formatBytes(env.size)),
          h('td', null, env.uses),
          h('td', null, formatTime(env.last_used)),
          h('td', { class: 'jx-name' }, summary(env.spec))
        )
      )
    );
    if (envs.length === 0) {
      this.rows.body.append(
        h('tr', null, h('td', { colspan: '7', class: 'jx-muted' }, 'no envs yet: runs with --pip, --working-dir, … build them'))
      );
    }
  }
}
