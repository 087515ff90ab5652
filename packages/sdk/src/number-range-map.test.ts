import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NumberRangeMap } from './number-range-map.js';
import { RangeMap } from './range-map.js';

const op = fc.record({
  kind: fc.constantFrom('set', 'set', 'clear', 'update'),
  start: fc.integer({ min: 0, max: 600 }),
  len: fc.integer({ min: 1, max: 40 }),
  value: fc.integer({ min: -3, max: 3 }),
});

describe('NumberRangeMap', () => {
  it('agrees with RangeMap<number> on every query after any sequence of changes', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const a = new NumberRangeMap();
        const b = new RangeMap<number>();
        for (const o of ops) {
          const end = o.start + o.len;
          if (o.kind === 'set') {
            a.set(o.start, end, o.value);
            b.set(o.start, end, o.value);
          } else if (o.kind === 'clear') {
            a.clear(o.start, end);
            b.clear(o.start, end);
          } else {
            const f = (v: number | undefined): number | undefined => (v === undefined ? (o.value > 0 ? o.value : undefined) : v === 2 ? undefined : v + 1);
            a.update(o.start, end, f);
            b.update(o.start, end, f);
          }
          a.checkInvariants();
          expect(a.runCount).toBe(b.runCount);
        }
        expect([...a.runs()]).toEqual([...b.runs()].map((r) => ({ start: r.start, end: r.end, value: r.value })));
        for (let x = 0; x < 660; x += 7) {
          expect(a.get(x)).toBe(b.get(x));
          expect(a.runAt(x)).toEqual(b.runAt(x) === undefined ? undefined : { ...b.runAt(x) });
          for (const len of [1, 5, 50]) {
            expect(a.isUniform(x, x + len, undefined)).toBe(b.isUniform(x, x + len, undefined));
            expect(a.isUniform(x, x + len, 1)).toBe(b.isUniform(x, x + len, 1));
            expect(a.count(x, x + len, (v) => v > 0)).toBe(b.count(x, x + len, (v) => v > 0));
            expect(a.firstWithout(x, x + len)).toBe(b.firstWithout(x, x + len));
          }
        }
        expect(a.lastRun()).toEqual(b.lastRun() === undefined ? undefined : { ...b.lastRun() });
      }),
      { numRuns: 300 },
    );
  });

  it('stays consistent across many chunks (random single-frame sets, then clears)', () => {
    const a = new NumberRangeMap();
    const b = new RangeMap<number>();
    let x = 7;
    for (let i = 0; i < 20000; i++) {
      x = (x * 48271) % 2147483647;
      const s = x % 50000;
      const v = i < 12000 ? x % 3 : -1;
      if (v < 0) {
        a.clear(s, s + 3);
        b.clear(s, s + 3);
      } else {
        a.set(s, s + 1, v);
        b.set(s, s + 1, v);
      }
    }
    a.checkInvariants();
    expect(a.runCount).toBe(b.runCount);
    expect([...a.runs(1000, 40000)]).toEqual([...b.runs(1000, 40000)].map((r) => ({ start: r.start, end: r.end, value: r.value })));
    a.set(0, 60000, 1);
    b.set(0, 60000, 1);
    a.checkInvariants();
    expect(a.runCount).toBe(1);
    a.clearAll();
    expect(a.runCount).toBe(0);
  });
});

describe('NumberRangeMap edges', () => {
  it('refuses a malformed range with EINVAL and changes nothing, as RangeMap does', () => {
    const m = new NumberRangeMap();
    m.set(10, 20, 1);
    for (const [s, e] of [
      [-1, 0],
      [5, 4],
      [0.5, 2],
      [0, Number.POSITIVE_INFINITY],
    ] as const) {
      expect(() => m.set(s, e, 2)).toThrow(expect.objectContaining({ errno: 'EINVAL', op: 'NumberRangeMap.set' }));
    }
    expect([...m.runs()]).toEqual([{ start: 10, end: 20, value: 1 }]);
    m.set(7, 7, 3); // empty: a no-op
    expect(m.runCount).toBe(1);
  });

  it('empties and refills any number of times (a free list of one order)', () => {
    const m = new NumberRangeMap();
    for (let i = 0; i < 1000; i++) {
      m.set(i * 512, i * 512 + 512, 1);
      expect(m.get(i * 512 + 3)).toBe(1);
      m.clear(i * 512, i * 512 + 512);
      expect(m.runCount).toBe(0);
      expect(m.get(i * 512 + 3)).toBeUndefined();
      expect(m.lastRun()).toBeUndefined();
      m.checkInvariants();
    }
    m.set(0, 4, 9);
    m.set(8, 12, 9);
    expect([...m.runs()].map((r) => [r.start, r.end])).toEqual([
      [0, 4],
      [8, 12],
    ]);
  });
});
