/**
 * Export to the Trace Event Format's JSON Object Format (Google, "Trace Event Format", the document
 * catapult's trace viewer and Perfetto's JSON importer read), so any run opens in ui.perfetto.dev or
 * chrome://tracing. The mapping:
 *
 * - one process (`pid`, named by a `process_name` metadata event) per run, one thread per actor:
 *   `tid` is the actor id + 1 (tid 0 is the idle task to Perfetto), named by a `thread_name` and
 *   ordered by a `thread_sort_index` metadata event (phase `M`);
 * - an event with a duration is a Complete event (phase `X`, `ts` and `dur`), one without is a
 *   thread-scoped Instant event (phase `i`, `s: 't'`);
 * - `ts` and `dur` are microseconds, as the format requires, kept as fractions so nanoseconds
 *   survive; `displayTimeUnit: 'ns'` makes the viewer show them as such;
 * - `cat` is the event name's prefix before the first dot (`gmem.convert` → `gmem`), so a viewer
 *   can filter by package; `args` are the event's fields (bigints become decimal strings, which
 *   JSON cannot carry otherwise).
 */
import type { TraceEvent, TraceSink } from './types.js';

/** One entry of `traceEvents`. */
export interface ChromeTraceEvent {
  readonly name: string;
  readonly ph: 'X' | 'i' | 'M';
  /** µs. */
  readonly ts: number;
  /** µs, Complete events only. */
  readonly dur?: number;
  readonly pid: number;
  readonly tid: number;
  readonly cat?: string;
  /** Scope of an Instant event: thread. */
  readonly s?: 't';
  readonly args?: Readonly<Record<string, unknown>>;
}

/** A trace in the JSON Object Format. `JSON.stringify` it to a `.json` file. */
export interface ChromeTrace {
  readonly traceEvents: ChromeTraceEvent[];
  readonly displayTimeUnit: 'ns';
}

/** Options of {@link toChromeTraceJson}. */
export interface ChromeTraceOptions {
  /** Process id of the run. Default 1. */
  readonly pid?: number;
  /** Process name shown by the viewer. Default `'cocokit'`. */
  readonly processName?: string;
}

const category = (name: string): string => {
  const dot = name.indexOf('.');
  return dot < 0 ? name : name.slice(0, dot);
};

function toArgs(fields: unknown): Record<string, unknown> {
  if (typeof fields !== 'object' || fields === null) return {};
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) out[k] = typeof v === 'bigint' ? v.toString() : v;
  return out;
}

/**
 * Converts events to the Trace Event JSON Object Format. Events are sorted by start time (ties:
 * longer first, so an enclosing span precedes what it encloses, as the viewers want for nesting).
 */
export function toChromeTraceJson(events: Iterable<TraceEvent>, options: ChromeTraceOptions = {}): ChromeTrace {
  const pid = options.pid ?? 1;
  const threads = new Map<number, string>();
  const body: ChromeTraceEvent[] = [];
  for (const e of events) {
    const tid = e.actorId + 1;
    if (!threads.has(tid)) threads.set(tid, e.actor);
    const common = { name: e.name, cat: category(e.name), ts: e.ts / 1000, pid, tid, args: toArgs(e.fields) };
    body.push(e.dur > 0 ? { ...common, ph: 'X', dur: e.dur / 1000 } : { ...common, ph: 'i', s: 't' });
  }
  body.sort((a, b) => a.ts - b.ts || (b.dur ?? 0) - (a.dur ?? 0));
  const meta: ChromeTraceEvent[] = [
    { name: 'process_name', ph: 'M', ts: 0, pid, tid: 0, args: { name: options.processName ?? 'cocokit' } },
  ];
  for (const [tid, name] of [...threads].sort(([a], [b]) => a - b)) {
    meta.push({ name: 'thread_name', ph: 'M', ts: 0, pid, tid, args: { name } });
    meta.push({ name: 'thread_sort_index', ph: 'M', ts: 0, pid, tid, args: { sort_index: tid } });
  }
  return { traceEvents: [...meta, ...body], displayTimeUnit: 'ns' };
}

/** A sink that records every event for {@link toChromeTraceJson}. */
export interface TraceEventRecorder extends TraceSink {
  /** Events recorded so far, in emission order. */
  readonly events: readonly TraceEvent[];
  /** The recording as a Trace Event JSON object. */
  toChromeTraceJson(options?: ChromeTraceOptions): ChromeTrace;
  clear(): void;
}

/**
 * A recording sink for the Perfetto/Chrome exporter:
 *
 * ```ts
 * const rec = createTraceEventRecorder();
 * sim.trace.attach(rec);
 * sim.runUntilIdle();
 * const json = JSON.stringify(rec.toChromeTraceJson()); // open in ui.perfetto.dev
 * ```
 *
 * It keeps every event; for long runs attach it around the window of interest.
 */
export function createTraceEventRecorder(): TraceEventRecorder {
  let events: TraceEvent[] = [];
  return {
    get events() {
      return events;
    },
    event(e: TraceEvent): void {
      events.push(e);
    },
    toChromeTraceJson: (options) => toChromeTraceJson(events, options),
    clear(): void {
      events = [];
    },
  };
}
