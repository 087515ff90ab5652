import { describe, expect, it } from 'vitest';
import { createSim } from '../sim/sim.js';
import { createTraceBus } from './bus.js';
import type { TraceEvent } from './types.js';

describe('TraceBus', () => {
  it('is disabled with no sink, and emit is then a no-op', () => {
    const sim = createSim();
    expect(sim.trace.enabled).toBe(false);
    expect(() => sim.trace.emit('x.y', { a: 1 }, -5)).not.toThrow(); // not even validated: nothing listens
  });

  it('enabled follows attach and detach; detach is idempotent', () => {
    const sim = createSim();
    const got: TraceEvent[] = [];
    const sink = { event: (e: TraceEvent) => void got.push(e) };
    const other = { event: () => {} };
    const d1 = sim.trace.attach(sink);
    const d2 = sim.trace.attach(other);
    expect(sim.trace.enabled).toBe(true);
    d1();
    d1();
    expect(sim.trace.enabled).toBe(true);
    d2();
    expect(sim.trace.enabled).toBe(false);
    sim.trace.emit('x.y', {});
    expect(got).toEqual([]);
  });

  it('refuses attaching the same sink twice with EEXIST', () => {
    const sim = createSim();
    const sink = { event: () => {} };
    sim.trace.attach(sink);
    expect(() => sim.trace.attach(sink)).toThrow(expect.objectContaining({ errno: 'EEXIST' }));
  });

  it('stamps events with the current actor and its clock (ts = now - dur)', () => {
    const sim = createSim();
    const got: TraceEvent[] = [];
    sim.trace.attach({ event: (e) => void got.push(e) });
    sim.advance(50);
    sim.trace.emit('x.instant', { a: 1 });
    // eslint-disable-next-line require-yield -- a one-step actor: its work is its single step
    sim.spawn('vcpu0', function* () {
      sim.advance(30);
      sim.trace.emit('x.span', { b: 2 }, 20);
    });
    sim.runUntilIdle();
    expect(got).toEqual([
      { name: 'x.instant', ts: 50, dur: 0, actorId: 0, actor: 'vmm', fields: { a: 1 } },
      { name: 'x.span', ts: 60, dur: 20, actorId: 1, actor: 'vcpu0', fields: { b: 2 } },
    ]);
    expect(() => sim.trace.emit('x', {}, -1)).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
    expect(() => sim.trace.emit('x', {}, NaN)).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
  });

  it('delivers to every sink, and tolerates a sink detaching itself mid-dispatch', () => {
    const bus = createTraceBus({ current: { id: 7, name: 'thread', now: 3 } });
    const seen: string[] = [];
    const a = { detach: () => {} };
    a.detach = bus.attach({ event: () => (seen.push('a'), a.detach()) });
    bus.attach({ event: () => void seen.push('b') });
    bus.emit('e', {});
    bus.emit('e', {});
    expect(seen).toEqual(['a', 'b', 'b']);
  });
});
