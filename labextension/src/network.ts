/**
 * A host-list run's network (`--network HOST,...`) in the run's details: the list, the sum of
 * its connections, and each connection with its verdict and bytes, refused ones first in red.
 */

import { Child, formatBytes, h } from './dom';
import { IConnection, IRunDetail } from './tokens';

function connectionLine(c: IConnection): HTMLElement {
  const where = `${c.host.includes(':') ? `[${c.host}]` : c.host}:${c.port}`;
  const verdict = c.allowed ? 'allowed' : 'refused';
  const text = c.allowed
    ? `${where} · ${formatBytes(c.sent)} out · ${formatBytes(c.received)} in`
    : `${where} · ${c.reason}`;
  return h('li', { class: `jx-connection jx-connection-${verdict}`, title: c.reason || verdict }, `${verdict} ${text}`);
}

/** The network field of a run's details, or '' for a run without a host list. */
export function describeNetwork(run: IRunDetail): Child {
  const summary = run.details?.network as { hosts: string; connections: number; refused: number } | undefined;
  if (summary === undefined) {
    return '';
  }
  const connections = run.connections ?? [];
  return h(
    'div',
    { class: 'jx-network' },
    `${summary.hosts}: ${summary.connections} connections, ${summary.refused} refused`,
    connections.length ? h('ul', { class: 'jx-connections' }, ...connections.map(connectionLine)) : null
  );
}
