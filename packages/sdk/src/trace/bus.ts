/**
 * The trace bus a sim owns (DESIGN.md, "Trace"). With no sink attached, `enabled` is a plain false
 * field: an emitting site guarded by `if (sim.trace.enabled)` pays one property load and builds no
 * event, which is what lets trace points stay in the hot paths.
 */
import { KvmError } from '../errors.js';
import type { TraceBus, TraceEvent, TraceFields, TraceSink } from './types.js';

/** Where the bus reads the emitting actor and its clock: the sim's current actor. */
export interface TraceClock {
  readonly current: { readonly id: number; readonly name: string; readonly now: number };
}

class Bus implements TraceBus {
  enabled = false;
  // Replaced, never mutated, so a sink that detaches (or attaches) during dispatch does not
  // disturb the loop in progress.
  private sinks: readonly TraceSink[] = [];

  private readonly clock: TraceClock;

  constructor(clock: TraceClock) {
    this.clock = clock;
  }

  emit<K extends string>(name: K, fields: TraceFields<K>, dur = 0): void {
    if (!this.enabled) return;
    if (!(dur >= 0) || dur === Infinity) throw new KvmError('EINVAL', 'trace.emit', `${name}: duration ${dur} ns is not a finite number >= 0`);
    const a = this.clock.current;
    const e: TraceEvent = { name, ts: a.now - dur, dur, actorId: a.id, actor: a.name, fields };
    const sinks = this.sinks;
    for (let i = 0; i < sinks.length; i++) (sinks[i] as TraceSink).event(e);
  }

  attach(sink: TraceSink): () => void {
    if (this.sinks.includes(sink)) throw new KvmError('EEXIST', 'trace.attach', 'this sink is already attached');
    this.sinks = [...this.sinks, sink];
    this.enabled = true;
    let attached = true;
    return () => {
      if (!attached) return;
      attached = false;
      this.sinks = this.sinks.filter((s) => s !== sink);
      this.enabled = this.sinks.length > 0;
    };
  }
}

/**
 * A trace bus stamping events with `clock.current` (every sim has one as `sim.trace`; this is for
 * using sinks outside a sim). Attaching the same sink twice is EEXIST; a detach function is
 * idempotent.
 */
export function createTraceBus(clock: TraceClock): TraceBus {
  return new Bus(clock);
}
