/**
 * Type test: events declared by augmenting `TraceEventMap` on the public entry have their fields
 * checked at every `emit`, and sinks see them typed. Undeclared names stay accepted with any
 * fields (the map is a way to get checking, not a registry every emit must be in).
 */
import { describe, expectTypeOf, it } from 'vitest';
import { createRingBuffer, createSim } from '@cocokit/sdk';
import type { TraceEvent, TraceEventName, TraceFields } from '@cocokit/sdk';

declare module '@cocokit/sdk' {
  interface TraceEventMap {
    'sdk.test.punch_hole': { index: number; npages: number };
  }
}

describe('TraceEventMap augmentation', () => {
  it('adds the declared names', () => {
    expectTypeOf<'sdk.test.punch_hole'>().toExtend<TraceEventName>();
    expectTypeOf<'sim.lock_wait'>().toExtend<TraceEventName>();
    expectTypeOf<TraceFields<'sdk.test.punch_hole'>>().toEqualTypeOf<{ index: number; npages: number }>();
    expectTypeOf<TraceFields<'not.declared'>>().toEqualTypeOf<Record<string, unknown>>();
  });

  it('checks the fields of a declared event at emit', () => {
    const { trace } = createSim();
    const ok = () => trace.emit('sdk.test.punch_hole', { index: 0, npages: 512 });
    // @ts-expect-error npages is missing
    const missing = () => trace.emit('sdk.test.punch_hole', { index: 0 });
    // @ts-expect-error npages must be a number
    const wrongType = () => trace.emit('sdk.test.punch_hole', { index: 0, npages: '512' });
    // @ts-expect-error no such field
    const extra = () => trace.emit('sdk.test.punch_hole', { index: 0, npages: 1, gfn: 3 });
    // @ts-expect-error mode is one of exclusive / read / write
    const lockWait = () => trace.emit('sim.lock_wait', { lock: 'mmu_lock', mode: 'shared' });
    const undeclared = () => trace.emit('not.declared', { anything: true });
    for (const f of [ok, missing, wrongType, extra, lockWait, undeclared]) expectTypeOf(f).returns.toBeVoid();
  });

  it('types what a ring buffer filters by name', () => {
    const ring = createRingBuffer(8);
    expectTypeOf(ring.filter('sdk.test.punch_hole')).toEqualTypeOf<TraceEvent<'sdk.test.punch_hole'>[]>();
    expectTypeOf(ring.filter('sdk.test.punch_hole')[0]!.fields.npages).toBeNumber();
    expectTypeOf(ring.events()[0]!.fields).toEqualTypeOf<Record<string, unknown>>();
  });
});
