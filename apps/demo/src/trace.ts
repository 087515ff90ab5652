/**
 * `--trace out.json`: one recorder per configuration an experiment runs, merged into one Trace
 * Event Format file with a process per configuration (Perfetto shows them stacked).
 */
import { createTraceEventRecorder, toChromeTraceJson, type ChromeTrace, type TraceEventRecorder, type TraceSink } from '@cocokit/sdk';

/** Collects the trace sinks handed to an experiment. */
export interface TraceCollector {
  /** `ExperimentIo.trace`: sinks for one labelled configuration (none when tracing is off). */
  sinks(label: string): TraceSink[];
  /** Labels in the order the experiment opened them. */
  readonly labels: readonly string[];
  /** Events recorded, all configurations. */
  readonly eventCount: number;
  toChromeTrace(): ChromeTrace;
}

/** A collector; `enabled: false` hands out no sinks, so untraced runs pay nothing. */
export function createTraceCollector(enabled: boolean): TraceCollector {
  const recorders = new Map<string, TraceEventRecorder>();
  return {
    sinks(label) {
      if (!enabled) return [];
      // A label opened twice (an experiment re-running a configuration) gets a distinct process.
      let key = label;
      for (let i = 2; recorders.has(key); i++) key = `${label} #${i}`;
      const r = createTraceEventRecorder();
      recorders.set(key, r);
      return [r];
    },
    get labels() {
      return [...recorders.keys()];
    },
    get eventCount() {
      let n = 0;
      for (const r of recorders.values()) n += r.events.length;
      return n;
    },
    toChromeTrace() {
      const traceEvents: ChromeTrace['traceEvents'] = [];
      let pid = 1;
      for (const [label, r] of recorders) traceEvents.push(...toChromeTraceJson(r.events, { pid: pid++, processName: label }).traceEvents);
      return { traceEvents, displayTimeUnit: 'ns' };
    },
  };
}
