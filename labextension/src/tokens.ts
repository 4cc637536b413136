/**
 * What the server extension answers (jupyter_exec/server/queries.py), as types.
 * Times are epoch seconds; sizes are bytes.
 */

export const FINAL_STATUSES = ['succeeded', 'failed', 'timeout', 'oom', 'cancelled', 'cached'];

export function isFinal(status: string): boolean {
  return FINAL_STATUSES.includes(status);
}

export interface IRunSummary {
  id: number;
  name: string | null;
  status: string;
  backend: string;
  isolation: string | null;
  kernel: string;
  created: number;
  started: number | null;
  ended: number | null;
  duration: number | null;
  peak_memory: number | null;
  cpu_seconds: number | null;
  exit_code: number | null;
  error: string | null;
  cancel_requested: number | null;
  label: string; // the name, else the first line of the code; a map's with its batch count
  batches: number; // a map's batches, folded under its row
}

/** One batch of a map: the run that ran some of its items. */
export interface IBatch {
  id: number;
  name: string;
  status: string;
  duration: number | null;
}

export interface IRunList {
  runs: IRunSummary[];
  now: number;
}

/** One connection of a host-list run, as its proxy saw it. */
export interface IConnection {
  host: string;
  port: number;
  allowed: boolean;
  reason: string;
  sent: number;
  received: number;
  started: number;
  seconds: number;
}

export interface IRunDetail extends Omit<IRunSummary, 'label' | 'batches'> {
  batches: IBatch[];
  code: string;
  code_hash: string;
  owner_pid: number;
  log_path: string | null;
  spec: { limits?: { [key: string]: unknown }; [key: string]: unknown } | null;
  details: { [key: string]: unknown } | null;
  connections?: IConnection[];
  timeline_line: string;
  timeline_phases: IPhase[];
  now: number;
}

/** One phase of a run's timeline, as the server gives it (timeline.segments). */
export interface IPhase {
  phase: string;
  label: string;
  seconds: number;
  colour: string;
}

export interface ILogPiece {
  run_id: number;
  status: string;
  offset: number;
  next_offset: number;
  size: number;
  text: string;
  done: boolean;
}

export interface IEnv {
  hash: string;
  target: string;
  path: string;
  spec: { [key: string]: unknown };
  status: string;
  size: number;
  created: number;
  last_used: number | null;
  uses: number;
  builds: number;
  build_log: string | null;
  error: string | null;
}

export interface ITraceSummary {
  name: string;
  metric: string;
  maximize: boolean;
  created: number;
  updated: number;
  nodes: number;
  running: number;
}

export interface ITraceNode {
  id: number;
  parent: number | null;
  status: string;
  depth: number;
  accepted: boolean;
  metrics: { [key: string]: number };
  params: { [key: string]: unknown };
  run_id: number | null;
  error: string | null;
  created: number;
  ended: number | null;
}

export interface ITrace {
  name: string;
  metric: string;
  maximize: boolean;
  sota: number | null;
  nodes: ITraceNode[];
}
