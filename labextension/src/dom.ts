/**
 * Building the panel's DOM. Text always goes in as text nodes and attributes through
 * setAttribute, never as HTML: run names, code, logs and errors come from cells and
 * are treated as hostile.
 */

export type Child = Node | string | number | null | undefined | false;

/** An element with attributes and children; strings and numbers become text. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | undefined> | null = null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value !== undefined) {
      element.setAttribute(name, value);
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) {
      element.append(typeof child === 'object' ? child : String(child));
    }
  }
  return element;
}

/** A status as a coloured badge. */
export function badge(status: string): HTMLElement {
  return h('span', { class: `jx-badge jx-badge-${status.replace(/[^a-z]/g, '')}` }, status);
}

/** A table with a header row; rows are added to its tbody. */
export function table(headers: string[]): { table: HTMLTableElement; body: HTMLTableSectionElement } {
  const body = h('tbody');
  const head = h('thead', null, h('tr', null, ...headers.map(title => h('th', null, title))));
  return { table: h('table', { class: 'jx-table' }, head, body), body };
}

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) {
    return '';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function formatSeconds(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return '';
  }
  if (seconds < 60) {
    return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  }
  const whole = Math.round(seconds);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const rest = String(whole % 60).padStart(2, '0');
  return hours ? `${hours}h ${String(minutes).padStart(2, '0')}m ${rest}s` : `${minutes}m ${rest}s`;
}

export function formatTime(epochSeconds: number | null | undefined): string {
  if (!epochSeconds) {
    return '';
  }
  const when = new Date(epochSeconds * 1000);
  const today = new Date().toDateString() === when.toDateString();
  return today ? when.toLocaleTimeString() : when.toLocaleString();
}
