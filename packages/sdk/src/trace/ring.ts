/**
 * A sink that keeps the last N events in memory, for tests: assert what happened, in order,
 * without unbounded growth in long runs.
 */
import { KvmError } from '../errors.js';
import type { TraceEvent, TraceSink } from './types.js';

/** The last `capacity` events. */
export interface RingBuffer extends TraceSink {
  readonly capacity: number;
  /** Events held now (at most `capacity`). */
  readonly size: number;
  /** Events overwritten because the ring was full. */
  readonly dropped: number;
  /** The held events, oldest first. */
  events(): TraceEvent[];
  /** The held events called `name`, oldest first, typed by its declared fields. */
  filter<K extends string>(name: K): TraceEvent<K>[];
  clear(): void;
}

/**
 * A ring buffer sink of `capacity` events.
 *
 * @throws KvmError EINVAL unless `capacity` is a positive safe integer.
 */
export function createRingBuffer(capacity: number): RingBuffer {
  if (!Number.isSafeInteger(capacity) || capacity < 1) {
    throw new KvmError('EINVAL', 'createRingBuffer', `capacity ${capacity} is not a positive integer`);
  }
  let buf: TraceEvent[] = [];
  let head = 0; // index of the oldest event once full
  let dropped = 0;
  const ordered = (): TraceEvent[] => (buf.length < capacity ? buf.slice() : [...buf.slice(head), ...buf.slice(0, head)]);
  return {
    capacity,
    get size() {
      return buf.length;
    },
    get dropped() {
      return dropped;
    },
    event(e: TraceEvent): void {
      if (buf.length < capacity) {
        buf.push(e);
        return;
      }
      buf[head] = e;
      head = head + 1 === capacity ? 0 : head + 1;
      dropped++;
    },
    events: ordered,
    filter<K extends string>(name: K): TraceEvent<K>[] {
      return ordered().filter((e): e is TraceEvent<K> => e.name === name);
    },
    clear(): void {
      buf = [];
      head = 0;
      dropped = 0;
    },
  };
}
