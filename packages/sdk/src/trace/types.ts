/**
 * Trace events: every state change emits a typed event with its actor, virtual time and fields.
 * Packages declare their events by augmenting {@link TraceEventMap}:
 *
 * ```ts
 * declare module '@cocokit/sdk' {
 *   interface TraceEventMap { 'gmem.punch_hole': { index: number; npages: number } }
 * }
 * ```
 *
 * Emitting sites guard with `if (sim.trace.enabled)` so that, with no sink attached, a trace point
 * costs one property read and builds no object.
 */

export interface TraceEventMap {
  /** An actor waited `dur` ns for `lock` (emitted by the sim's locks, only when there was a wait). */
  'sim.lock_wait': { lock: string; mode: 'exclusive' | 'read' | 'write' };
}

/** A declared event name. */
export type TraceEventName = keyof TraceEventMap & string;
/** The fields of event `K`. */
export type TraceFields<K extends string> = K extends keyof TraceEventMap ? TraceEventMap[K] : Record<string, unknown>;

/** One event, as sinks receive it. */
export interface TraceEvent<K extends string = string> {
  readonly name: K;
  /** Virtual time at which the event starts, ns. */
  readonly ts: number;
  /** Duration, ns, for events that span time (0 for instants). */
  readonly dur: number;
  readonly actorId: number;
  readonly actor: string;
  readonly fields: TraceFields<K>;
}

/** Something that consumes events: counters, a ring buffer, an exporter. */
export interface TraceSink {
  event(e: TraceEvent): void;
}

/** The bus a {@link Sim} owns. */
export interface TraceBus {
  /** true when at least one sink is attached; check it before building an event's fields. */
  readonly enabled: boolean;
  /** Emits `name` at the current actor's clock (or spanning `dur` ns ending now). */
  emit<K extends string>(name: K, fields: TraceFields<K>, dur?: number): void;
  /** Attaches a sink; returns a function that detaches it. */
  attach(sink: TraceSink): () => void;
}
