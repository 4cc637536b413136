/**
 * One run's log, followed live: the end of it first, then each new piece from where the
 * last one stopped, until the run is over and everything has been read.
 */
import { h } from './dom';
import { requestAPI } from './handler';
import { ILogPiece } from './tokens';

const PIECE = 256 * 1024; // bytes asked for at a time
const SHOWN = 1024 * 1024; // characters kept on screen; older ones are dropped

export class LogTail {
  readonly node = h('pre', { class: 'jx-log' });
  private runId: number | null = null;
  private offset = 0;
  private started = false;
  private done = false;

  /** Follow another run's log (null: none), from its end. */
  follow(runId: number | null): void {
    this.runId = runId;
    this.offset = 0;
    this.started = false;
    this.done = false;
    this.node.replaceChildren();
  }

  /** Read what the run wrote since the last call (a few pieces at most). */
  async update(): Promise<void> {
    const runId = this.runId;
    for (let pieces = 0; runId !== null && !this.done && pieces < 4; pieces++) {
      const query: Record<string, number> = this.started
        ? { offset: this.offset, max_bytes: PIECE }
        : { tail: 1, max_bytes: PIECE };
      const piece = await requestAPI<ILogPiece>(`runs/${runId}/log`, query);
      if (runId !== this.runId) {
        return; // another run was chosen meanwhile
      }
      if (!this.started && piece.offset > 0) {
        this.node.append(
          h('span', { class: 'jx-log-note' }, `… first ${piece.offset} bytes not shown (%jx logs ${runId} has them)\n`)
        );
      }
      this.started = true;
      this.append(piece.text);
      this.offset = piece.next_offset;
      this.done = piece.done;
      if (piece.next_offset >= piece.size) {
        break;
      }
    }
    if (this.done && !this.node.hasChildNodes()) {
      this.node.append(h('span', { class: 'jx-log-note' }, '(no output)'));
    }
  }

  private append(text: string): void {
    if (!text) {
      return;
    }
    const atBottom = this.node.scrollHeight - this.node.scrollTop - this.node.clientHeight < 24;
    this.node.append(text);
    if ((this.node.textContent ?? '').length > SHOWN) {
      this.node.textContent = (this.node.textContent ?? '').slice(-SHOWN / 2);
    }
    if (atBottom) {
      this.node.scrollTop = this.node.scrollHeight;
    }
  }
}
