/**
 * A view that polls the server while it is on screen: every couple of seconds while
 * visible (backing off on errors), not at all while hidden, at once when shown again.
 */
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { h } from './dom';

const INTERVAL = 1500; // milliseconds between refreshes while visible

export abstract class PollingView extends Widget {
  protected readonly poll: Poll;
  private readonly problem = h('div', { class: 'jx-problem' });

  constructor(name: string, label: string) {
    super();
    this.addClass('jx-View');
    this.title.label = label;
    this.node.append(this.problem);
    this.poll = new Poll({
      factory: () => this.tick(),
      frequency: { interval: INTERVAL, backoff: true, max: 15000 },
      name: `jupyter-exec:${name}`,
      standby: () => (this.isVisible ? 'when-hidden' : true)
    });
  }

  /** Fetch and draw; a thrown error is shown in the view and slows the poll down. */
  protected abstract refresh(): Promise<void>;

  /** Refresh now (after a click), rather than at the next tick. */
  refreshSoon(): void {
    void this.poll.refresh();
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  protected onAfterShow(): void {
    this.refreshSoon();
  }

  private async tick(): Promise<void> {
    try {
      await this.refresh();
      this.problem.replaceChildren();
    } catch (error) {
      this.problem.replaceChildren(String(error instanceof Error ? error.message : error));
      console.warn('jupyter-exec side panel:', error);
      throw error;
    }
  }
}
