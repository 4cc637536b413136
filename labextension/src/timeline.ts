/**
 * A run's timeline in its details: a thin bar of its phases, each as wide as its share of
 * the time (its label on hover), above the server's one-line breakdown.
 */

import { h } from './dom';
import { IRunDetail } from './tokens';

const COLOUR = /^#[0-9a-f]{6}$/i;

/** The timeline of a finished run, or '' for a run without one (still going, or recorded before timelines). */
export function describeTimeline(run: Pick<IRunDetail, 'timeline_line' | 'timeline_phases'>): HTMLElement | '' {
  if (!run.timeline_line) {
    return '';
  }
  const total = run.timeline_phases.reduce((sum, phase) => sum + phase.seconds, 0) || 1;
  const bar = h(
    'div',
    { class: 'jx-timeline-bar' },
    ...run.timeline_phases.map(phase =>
      h('span', {
        class: 'jx-timeline-part',
        title: phase.label,
        'data-phase': phase.phase,
        style: `width: ${((100 * phase.seconds) / total).toFixed(2)}%;` +
          (COLOUR.test(phase.colour) ? ` background: ${phase.colour};` : '')
      })
    )
  );
  return h('div', { class: 'jx-timeline' }, bar, h('div', { class: 'jx-timeline-line' }, run.timeline_line));
}
