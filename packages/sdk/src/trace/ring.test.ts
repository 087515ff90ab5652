import { describe, expect, it } from 'vitest';
import { createRingBuffer } from './ring.js';
import type { TraceEvent } from './types.js';

const ev = (name: string, ts: number): TraceEvent => ({ name, ts, dur: 0, actorId: 0, actor: 'vmm', fields: {} });

describe('createRingBuffer', () => {
  it('keeps events in order until full', () => {
    const r = createRingBuffer(3);
    r.event(ev('a', 1));
    r.event(ev('b', 2));
    expect(r.events().map((e) => e.ts)).toEqual([1, 2]);
    expect([r.size, r.dropped, r.capacity]).toEqual([2, 0, 3]);
  });

  it('keeps the last N, oldest first, counting the dropped', () => {
    const r = createRingBuffer(3);
    for (let i = 1; i <= 7; i++) r.event(ev(i % 2 ? 'odd' : 'even', i));
    expect(r.events().map((e) => e.ts)).toEqual([5, 6, 7]);
    expect(r.filter('odd').map((e) => e.ts)).toEqual([5, 7]);
    expect(r.filter('none')).toEqual([]);
    expect([r.size, r.dropped]).toEqual([3, 4]);
    r.clear();
    expect([r.size, r.dropped, r.events()]).toEqual([0, 0, []]);
    r.event(ev('a', 9));
    expect(r.events().map((e) => e.ts)).toEqual([9]);
  });

  it('refuses a capacity that is not a positive integer with EINVAL', () => {
    for (const c of [0, -1, 1.5, NaN, Infinity]) {
      expect(() => createRingBuffer(c)).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
    }
  });
});
