/**
 * The runs tab: the newest runs with their status, and the chosen run's details, code
 * and live log, with Cancel while it is unfinished.
 */
import { badge, Child, formatBytes, formatSeconds, formatTime, h, table } from './dom';
import { ApiError, requestAPI } from './handler';
import { LogTail } from './log';
import { describeNetwork } from './network';
import { describeTimeline } from './timeline';
import { IRunDetail, IRunList, IRunSummary, isFinal } from './tokens';
import { PollingView } from './view';

const LIMIT = 100; // runs listed

const FILTERS: [string, string][] = [
  ['', 'all runs'],
  ['queued,running', 'unfinished'],
  ['failed,timeout,oom,cancelled', 'did not succeed'],
  ['succeeded', 'succeeded'],
  ['cached', 'served from the cache']
];

/** How long a run took, or has been going (by the server's clock). */
function elapsed(run: Pick<IRunSummary, 'duration' | 'status' | 'started' | 'created'>, now: number): number | null {
  if (run.duration !== null) {
    return run.duration;
  }
  return isFinal(run.status) ? null : now - (run.started ?? run.created);
}

/** A map's items, as "1000 items: 999 ok · 1 failed · 600 from the cache" ('' for a cell). */
function describeItems(details: { [key: string]: unknown } | null): string {
  if (details?.items === undefined) {
    return '';
  }
  const counts = [
    ['succeeded', 'ok'],
    ['failed', 'failed'],
    ['cached', 'from the cache']
  ]
    .filter(([key]) => Number(details[key] ?? 0) > 0)
    .map(([key, word]) => `${details[key]} ${word}`);
  return `${details.items} items` + (counts.length ? `: ${counts.join(' · ')}` : '');
}

/** The limits a run was given, as "memory 2.0 GiB · timeout 10m 00s · …". */
function describeLimits(limits: { [key: string]: unknown } | undefined): string {
  const shown: string[] = [];
  for (const [name, value] of Object.entries(limits ?? {})) {
    if (value === null || value === false) {
      continue;
    }
    const number = Number(value);
    const text = ['memory', 'fsize', 'shm'].includes(name)
      ? formatBytes(number)
      : ['timeout', 'cpu_time'].includes(name)
        ? formatSeconds(number)
        : String(value);
    shown.push(`${name} ${text}`);
  }
  return shown.join(' · ');
}

export class RunsView extends PollingView {
  private readonly filter = h('select', { class: 'jx-filter', 'aria-label': 'Which runs' });
  private readonly count = h('span', { class: 'jx-count' });
  // status, name and time first: what a narrow panel keeps (index.css drops the others)
  private readonly rows = table(['status', 'name', 'time', '#', 'backend', 'created', 'peak mem']);
  private readonly info = h('div', { class: 'jx-info' });
  private readonly code = h('pre');
  private readonly log = new LogTail();
  private readonly detail = h(
    'div',
    { class: 'jx-detail', hidden: '' },
    this.info,
    h('details', { class: 'jx-code' }, h('summary', null, 'code'), this.code),
    h('div', { class: 'jx-section' }, 'log'),
    this.log.node
  );
  private selected: number | null = null;
  private shown: IRunDetail | null = null;

  constructor() {
    super('runs', 'Runs');
    this.addClass('jx-RunsView');
    for (const [value, label] of FILTERS) {
      this.filter.append(h('option', { value }, label));
    }
    this.filter.onchange = () => this.refreshSoon();
    this.node.append(
      h('div', { class: 'jx-toolbar' }, this.filter, this.count),
      h('div', { class: 'jx-list' }, this.rows.table),
      this.detail
    );
  }

  /** Show run `runId` (from a click here or in the trees tab). */
  select(runId: number): void {
    this.selected = runId;
    this.shown = null;
    this.log.follow(runId);
    this.info.replaceChildren(h('div', { class: 'jx-muted' }, `loading run ${runId}…`));
    this.code.replaceChildren();
    this.detail.hidden = false;
    this.refreshSoon();
  }

  protected async refresh(): Promise<void> {
    const query: Record<string, string | number> = { limit: LIMIT };
    if (this.filter.value) {
      query.status = this.filter.value;
    }
    const list = await requestAPI<IRunList>('runs', query);
    this.drawList(list);
    const runId = this.selected;
    if (runId === null) {
      return;
    }
    if (!this.shown || !isFinal(this.shown.status)) {
      const detail = await requestAPI<IRunDetail>(`runs/${runId}`);
      if (runId === this.selected) {
        if (!this.shown) {
          this.code.replaceChildren(detail.code);
        }
        this.shown = detail;
        this.drawDetail(detail);
      }
    }
    await this.log.update();
  }

  private drawList(list: IRunList): void {
    this.count.textContent = list.runs.length === LIMIT ? `newest ${LIMIT}` : `${list.runs.length} runs`;
    this.rows.body.replaceChildren(
      ...list.runs.map(run => {
        const row = h(
          'tr',
          {
            class: run.id === this.selected ? 'jx-row jx-selected' : 'jx-row',
            'data-run': String(run.id),
            title: run.error ?? `kernel ${run.kernel}`
          },
          h('td', null, badge(run.status)),
          h('td', { class: 'jx-name' }, run.label),
          h('td', null, formatSeconds(elapsed(run, list.now))),
          h('td', null, run.id),
          h('td', null, run.backend),
          h('td', null, formatTime(run.created)),
          h('td', null, formatBytes(run.peak_memory))
        );
        row.onclick = () => this.select(run.id);
        return row;
      })
    );
    if (list.runs.length === 0) {
      this.rows.body.append(h('tr', null, h('td', { colspan: '7', class: 'jx-muted' }, 'no runs yet')));
    }
  }

  private drawDetail(run: IRunDetail): void {
    const fields: [string, Child][] = [
      ['backend', run.isolation && run.isolation !== run.backend ? `${run.backend} (${run.isolation})` : run.backend],
      ['kernel', `${run.kernel} (pid ${run.owner_pid})`],
      ['created', formatTime(run.created)],
      ['started', formatTime(run.started)],
      ['ended', formatTime(run.ended)],
      [isFinal(run.status) ? 'duration' : 'running for', formatSeconds(elapsed(run, run.now))],
      ['peak memory', formatBytes(run.peak_memory)],
      ['CPU time', formatSeconds(run.cpu_seconds)],
      ['exit code', run.exit_code ?? ''],
      ['limits', describeLimits(run.spec?.limits)],
      ['cancel asked', formatTime(run.cancel_requested)],
      ['cached from', run.details?.cached_from !== undefined ? `run ${run.details.cached_from}` : ''],
      ['items', describeItems(run.details)],
      ['batches', run.batches.map(b => `#${b.id} ${b.status} ${formatSeconds(b.duration)}`).join(' · ')],
      ['network', describeNetwork(run)],
      ['timeline', describeTimeline(run)],
      ['error', run.error ?? '']
    ];
    const head = h(
      'div',
      { class: 'jx-detail-head' },
      h('span', { class: 'jx-detail-title' }, `#${run.id}${run.name ? ` ${run.name}` : ''}`),
      badge(run.status)
    );
    if (!isFinal(run.status)) {
      head.append(this.cancelButton(run.id, run.cancel_requested !== null));
    }
    this.info.replaceChildren(
      head,
      h(
        'dl',
        { class: 'jx-fields' },
        ...fields.filter(([, value]) => value !== '').flatMap(([name, value]) => [h('dt', null, name), h('dd', null, value)])
      )
    );
  }

  private cancelButton(runId: number, asked: boolean): HTMLButtonElement {
    const button = h('button', { class: 'jp-Button jp-mod-styled jp-mod-warn jx-cancel', type: 'button' },
      asked ? 'Cancelling…' : 'Cancel');
    button.disabled = asked;
    button.onclick = async () => {
      button.disabled = true;
      button.textContent = 'Cancelling…';
      try {
        await requestAPI(`runs/${runId}/cancel`, {}, 'POST');
      } catch (error) {
        button.disabled = false;
        button.textContent = 'Cancel';
        button.title = error instanceof ApiError ? error.message : String(error);
      }
      this.refreshSoon();
    };
    return button;
  }
}
