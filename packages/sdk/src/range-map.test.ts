import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isKvmError, isModelInvariantError } from './errors.js';
import { RangeMap } from './range-map.js';
import type { Run } from './range-map.js';

const TIB_FRAMES = 2 ** 28; // 1 TiB of 4 KiB frames
const MAX_FRAME = 2 ** 40;

/** The runs as plain tuples, for compact expectations. */
function dump<V>(m: RangeMap<V>, start?: number, end?: number): Array<[number, number, V]> {
  return [...m.runs(start, end)].map((r) => [r.start, r.end, r.value]);
}

function expectEinval(f: () => unknown, op: string): void {
  let thrown: unknown;
  try {
    f();
  } catch (e) {
    thrown = e;
  }
  expect(isKvmError(thrown, 'EINVAL'), `expected EINVAL from ${op}, got ${String(thrown)}`).toBe(true);
  expect((thrown as { op: string }).op).toBe(op);
}

describe('RangeMap: set, get, has', () => {
  it('starts empty', () => {
    const m = new RangeMap<number>();
    expect(m.runCount).toBe(0);
    expect(m.get(0)).toBeUndefined();
    expect(m.has(0)).toBe(false);
    expect(m.firstRun()).toBeUndefined();
    expect(m.lastRun()).toBeUndefined();
    expect(dump(m)).toEqual([]);
  });

  it('stores half-open ranges', () => {
    const m = new RangeMap<string>();
    m.set(10, 20, 'a');
    expect(m.get(9)).toBeUndefined();
    expect(m.get(10)).toBe('a');
    expect(m.get(19)).toBe('a');
    expect(m.get(20)).toBeUndefined();
    expect(m.has(15)).toBe(true);
    expect(m.has(20)).toBe(false);
    expect(m.runAt(15)).toEqual({ start: 10, end: 20, value: 'a' });
    expect(m.runAt(20)).toBeUndefined();
    m.checkInvariants();
  });

  it('coalesces with equal neighbours on both sides, touching or overlapping', () => {
    const m = new RangeMap<string>();
    m.set(0, 10, 'a');
    m.set(20, 30, 'a');
    expect(m.runCount).toBe(2);
    m.set(10, 20, 'a'); // bridges exactly
    expect(dump(m)).toEqual([[0, 30, 'a']]);
    m.set(25, 40, 'a'); // overlaps the right end
    m.set(-0, 5, 'a'); // inside: no change (and -0 is frame 0)
    expect(dump(m)).toEqual([[0, 40, 'a']]);
    m.checkInvariants();
  });

  it('does not coalesce unequal neighbours', () => {
    const m = new RangeMap<string>();
    m.set(0, 10, 'a');
    m.set(10, 20, 'b');
    m.set(20, 30, 'a');
    expect(dump(m)).toEqual([
      [0, 10, 'a'],
      [10, 20, 'b'],
      [20, 30, 'a'],
    ]);
    m.checkInvariants();
  });

  it('splits a run it overwrites in the middle', () => {
    const m = new RangeMap<string>();
    m.set(0, 100, 'a');
    m.set(40, 60, 'b');
    expect(dump(m)).toEqual([
      [0, 40, 'a'],
      [40, 60, 'b'],
      [60, 100, 'a'],
    ]);
    m.set(40, 60, 'a'); // heals back into one run
    expect(dump(m)).toEqual([[0, 100, 'a']]);
    m.checkInvariants();
  });

  it('overwrites many runs at once and coalesces with what straddles the edges', () => {
    const m = new RangeMap<number>();
    for (let i = 0; i < 50; i++) m.set(i * 2, i * 2 + 1, i);
    expect(m.runCount).toBe(50);
    m.set(5, 95, 7); // [4,5) holds 2 (kept), [95,96)... 95 is a gap, 96 holds 48 (kept)
    expect(dump(m, 0, 10)).toEqual([
      [0, 1, 0],
      [2, 3, 1],
      [4, 5, 2],
      [5, 10, 7],
    ]);
    expect(m.runCount).toBe(3 + 1 + 2); // 0,1,2 | 7 | 48,49
    m.set(3, 97, 2); // absorbs the run of 2 on the left, overwrites [96,97) of 48
    expect(dump(m, 2, 100)).toEqual([
      [2, 3, 1],
      [3, 97, 2],
      [98, 99, 49],
    ]);
    m.checkInvariants();
  });

  it('absorbs an equal run starting exactly at end, and keeps an unequal one', () => {
    const m = new RangeMap<string>();
    m.set(10, 20, 'a');
    m.set(0, 10, 'a');
    expect(dump(m)).toEqual([[0, 20, 'a']]);
    m.set(20, 30, 'b');
    m.set(15, 20, 'c');
    expect(dump(m)).toEqual([
      [0, 15, 'a'],
      [15, 20, 'c'],
      [20, 30, 'b'],
    ]);
    m.checkInvariants();
  });

  it('uses the equals option for coalescing and isUniform', () => {
    const m = new RangeMap<{ private: boolean }>({ equals: (a, b) => a.private === b.private });
    m.set(0, 10, { private: true });
    m.set(10, 20, { private: true });
    expect(m.runCount).toBe(1);
    expect(m.isUniform(0, 20, { private: true })).toBe(true);
    m.checkInvariants();
  });

  it('treats set(..., undefined) as clear', () => {
    const m = new RangeMap<string>();
    m.set(0, 10, 'a');
    m.set(2, 4, undefined);
    expect(dump(m)).toEqual([
      [0, 2, 'a'],
      [4, 10, 'a'],
    ]);
  });

  it('ignores empty ranges', () => {
    const m = new RangeMap<string>();
    m.set(5, 5, 'a');
    expect(m.runCount).toBe(0);
    m.set(0, 10, 'a');
    m.clear(5, 5);
    m.update(5, 5, () => 'b');
    expect(dump(m)).toEqual([[0, 10, 'a']]);
    expect(m.count(5, 5)).toBe(0);
    expect(m.firstWith(5, 5)).toBeUndefined();
    expect(m.firstWithout(5, 5)).toBeUndefined();
    expect(m.isUniform(5, 5, 'z')).toBe(true);
    expect(dump(m, 5, 5)).toEqual([]);
  });
});

describe('RangeMap: clear', () => {
  it('splits runs at both edges', () => {
    const m = new RangeMap<string>();
    m.set(0, 100, 'a');
    m.clear(10, 20);
    expect(dump(m)).toEqual([
      [0, 10, 'a'],
      [20, 100, 'a'],
    ]);
    m.clear(5, 30);
    expect(dump(m)).toEqual([
      [0, 5, 'a'],
      [30, 100, 'a'],
    ]);
    m.checkInvariants();
  });

  it('removes whole runs and tolerates gaps', () => {
    const m = new RangeMap<number>();
    for (let i = 0; i < 10; i++) m.set(i * 10, i * 10 + 5, i);
    m.clear(12, 73);
    expect(dump(m)).toEqual([
      [0, 5, 0],
      [10, 12, 1],
      [73, 75, 7],
      [80, 85, 8],
      [90, 95, 9],
    ]);
    m.clear(200, 300); // nothing there
    m.clear(5, 10); // a gap exactly
    expect(m.runCount).toBe(5);
    m.clear(0, 1000);
    expect(m.runCount).toBe(0);
    m.checkInvariants();
  });

  it('clearAll empties the map', () => {
    const m = new RangeMap<number>();
    m.set(0, 10, 1);
    m.set(20, 30, 2);
    m.clearAll();
    expect(m.runCount).toBe(0);
    expect(m.get(5)).toBeUndefined();
  });
});

describe('RangeMap: update', () => {
  it('applies f to every run piece and gap, clipped', () => {
    const m = new RangeMap<number>();
    m.set(0, 10, 1);
    m.set(20, 30, 2);
    m.update(5, 25, (old) => (old ?? 0) + 1);
    expect(dump(m)).toEqual([
      [0, 5, 1],
      [5, 10, 2],
      [10, 20, 1],
      [20, 25, 3],
      [25, 30, 2],
    ]);
    m.checkInvariants();
  });

  it('coalesces pieces that become equal, and clears on undefined', () => {
    const m = new RangeMap<number>();
    m.set(0, 10, 1);
    m.set(10, 20, 2);
    m.update(0, 20, () => 5);
    expect(dump(m)).toEqual([[0, 20, 5]]);
    m.update(5, 15, (old) => (old === 5 ? undefined : old));
    expect(dump(m)).toEqual([
      [0, 5, 5],
      [15, 20, 5],
    ]);
    m.checkInvariants();
  });

  it('changes nothing when f throws', () => {
    const m = new RangeMap<number>();
    m.set(0, 10, 1);
    m.set(20, 30, 2);
    expect(() =>
      m.update(0, 30, (old) => {
        if (old === 2) throw new Error('boom');
        return 9;
      }),
    ).toThrow('boom');
    expect(dump(m)).toEqual([
      [0, 10, 1],
      [20, 30, 2],
    ]);
  });
});

describe('RangeMap: queries', () => {
  const m = new RangeMap<string>();
  m.set(10, 20, 'a');
  m.set(20, 30, 'b');
  m.set(40, 50, 'a');

  it('runs() clips to the range and yields in order', () => {
    expect(dump(m, 15, 45)).toEqual([
      [15, 20, 'a'],
      [20, 30, 'b'],
      [40, 45, 'a'],
    ]);
    expect(dump(m, 30, 40)).toEqual([]);
    expect(dump(m, 0, 11)).toEqual([[10, 11, 'a']]);
    expect(dump(m, 49)).toEqual([[49, 50, 'a']]);
    expect([...m].map((r: Run<string>) => r.start)).toEqual([10, 20, 40]);
    expect(m.firstRun()?.start).toBe(10);
    expect(m.lastRun()?.start).toBe(40);
  });

  it('runs() yields the stored run objects when they are not clipped', () => {
    const [a, b] = [...m.runs(0, 100)];
    expect(a).toBe(m.runAt(10));
    expect(b).toBe(m.runAt(25));
  });

  it('count() counts frames with a (matching) value', () => {
    expect(m.count(0, 100)).toBe(30);
    expect(m.count(15, 45)).toBe(5 + 10 + 5);
    expect(m.count(0, 100, (v) => v === 'a')).toBe(20);
    expect(m.count(30, 40)).toBe(0);
  });

  it('firstWith() finds the first frame with a (matching) value', () => {
    expect(m.firstWith(0, 100)).toBe(10);
    expect(m.firstWith(15, 100)).toBe(15);
    expect(m.firstWith(0, 100, (v) => v === 'b')).toBe(20);
    expect(m.firstWith(25, 100, (v) => v === 'a')).toBe(40);
    expect(m.firstWith(30, 40)).toBeUndefined();
    expect(m.firstWith(0, 10)).toBeUndefined();
  });

  it('firstWithout() finds the first frame without a (matching) value', () => {
    expect(m.firstWithout(0, 100)).toBe(0);
    expect(m.firstWithout(10, 100)).toBe(30);
    expect(m.firstWithout(10, 30)).toBeUndefined();
    expect(m.firstWithout(10, 30, (v) => v === 'a')).toBe(20);
    expect(m.firstWithout(15, 20, (v) => v === 'a')).toBeUndefined();
    expect(m.firstWithout(45, 60)).toBe(50);
  });

  it('isUniform() holds for one value or for all-empty', () => {
    expect(m.isUniform(10, 20, 'a')).toBe(true);
    expect(m.isUniform(12, 18, 'a')).toBe(true);
    expect(m.isUniform(10, 21, 'a')).toBe(false);
    expect(m.isUniform(10, 30, 'a')).toBe(false);
    expect(m.isUniform(5, 15, 'a')).toBe(false);
    expect(m.isUniform(30, 40, undefined)).toBe(true);
    expect(m.isUniform(29, 40, undefined)).toBe(false);
    expect(m.isUniform(30, 41, undefined)).toBe(false);
    expect(m.isUniform(0, 10, undefined)).toBe(true);
  });
});

describe('RangeMap: iteration while mutating', () => {
  it('continues from the last yielded run with the current state', () => {
    const m = new RangeMap<number>();
    for (let i = 0; i < 100; i++) m.set(i * 2, i * 2 + 1, i);
    const seen: number[] = [];
    for (const r of m.runs(0, 200)) {
      seen.push(r.start);
      // Clearing runs ahead of the cursor and rewriting the current one must not confuse it.
      if (r.start === 10) m.clear(12, 30);
      m.set(r.start, r.end, -1);
    }
    expect(seen).toEqual([...Array(100).keys()].map((i) => i * 2).filter((s) => s < 12 || s >= 30));
    m.checkInvariants();
    expect(m.count(0, 200, (v) => v === -1)).toBe(100 - 9);
  });

  it('clears everything it iterates over', () => {
    const m = new RangeMap<number>();
    for (let i = 0; i < 300; i++) m.set(i * 3, i * 3 + 2, i % 2);
    let n = 0;
    for (const r of m.runs()) {
      m.clear(r.start, r.end);
      n++;
    }
    expect(n).toBe(300);
    expect(m.runCount).toBe(0);
  });
});

describe('RangeMap: clone', () => {
  it('is independent in both directions', () => {
    const m = new RangeMap<number>();
    for (let i = 0; i < 1000; i++) m.set(i * 2, i * 2 + 1, i);
    const c = m.clone();
    m.set(0, 100, 7);
    c.clear(500, 1000);
    expect(m.get(50)).toBe(7);
    expect(c.get(50)).toBe(25);
    expect(m.get(600)).toBe(300);
    expect(c.get(600)).toBeUndefined();
    m.checkInvariants();
    c.checkInvariants();
  });

  it('keeps the equals option', () => {
    const m = new RangeMap<{ n: number }>({ equals: (a, b) => a.n === b.n });
    const c = m.clone();
    c.set(0, 1, { n: 1 });
    c.set(1, 2, { n: 1 });
    expect(c.runCount).toBe(1);
  });
});

describe('RangeMap: EINVAL refusals change no state', () => {
  const bad: Array<[number, number, string]> = [
    [-1, 5, 'negative start'],
    [5, 4, 'end below start'],
    [1.5, 4, 'fractional start'],
    [0, 4.5, 'fractional end'],
    [0, Number.NaN, 'NaN'],
    [0, Number.POSITIVE_INFINITY, 'infinite end'],
    [0, 2 ** 53, 'unsafe end'],
  ];
  for (const [s, e, what] of bad) {
    it(`refuses ${what}`, () => {
      const m = new RangeMap<number>();
      m.set(0, 10, 1);
      m.set(20, 30, 2);
      const before = dump(m);
      expectEinval(() => m.set(s, e, 3), 'RangeMap.set');
      expectEinval(() => m.clear(s, e), 'RangeMap.clear');
      expectEinval(() => m.update(s, e, () => 3), 'RangeMap.update');
      expectEinval(() => m.runs(s, e), 'RangeMap.runs');
      expectEinval(() => m.count(s, e), 'RangeMap.count');
      expectEinval(() => m.firstWith(s, e), 'RangeMap.firstWith');
      expectEinval(() => m.firstWithout(s, e), 'RangeMap.firstWithout');
      expectEinval(() => m.isUniform(s, e, 1), 'RangeMap.isUniform');
      expect(dump(m)).toEqual(before);
      m.checkInvariants();
    });
  }

  it('refuses point queries on a non-frame', () => {
    const m = new RangeMap<number>();
    for (const f of [-1, 0.5, Number.NaN, 2 ** 53]) {
      expectEinval(() => m.get(f), 'RangeMap.get');
      expectEinval(() => m.has(f), 'RangeMap.has');
      expectEinval(() => m.runAt(f), 'RangeMap.runAt');
    }
  });
});

describe('RangeMap: a 1 TiB span costs runs, not frames', () => {
  it('sets and clears over [0, 2^28) in a handful of runs', () => {
    const m = new RangeMap<string>();
    m.set(0, TIB_FRAMES, 'shared');
    m.set(2 ** 20, 2 ** 27, 'private');
    m.clear(2 ** 26 + 3, 2 ** 26 + 5);
    expect(m.runCount).toBe(4);
    expect(m.count(0, TIB_FRAMES)).toBe(TIB_FRAMES - 2);
    expect(m.count(0, TIB_FRAMES, (v) => v === 'private')).toBe(2 ** 27 - 2 ** 20 - 2);
    expect(m.firstWithout(0, TIB_FRAMES)).toBe(2 ** 26 + 3);
    m.set(0, TIB_FRAMES, 'shared');
    expect(m.runCount).toBe(1);
    expect(m.isUniform(0, TIB_FRAMES, 'shared')).toBe(true);
    m.checkInvariants();
  });

  it('works near 2^40 with arithmetic, not 32-bit bitwise ops', () => {
    const m = new RangeMap<number>();
    const hi = MAX_FRAME - TIB_FRAMES;
    m.set(hi, MAX_FRAME, 1);
    // Edges that sit on 2^31 and 2^32 boundaries, where a 32-bit `|0` or `>>` would wrap.
    const a = 2 ** 31 + 2 ** 26; // far below hi: a separate run
    m.set(a, a + 2 ** 32, 3);
    m.set(hi + 2 ** 20, hi + 2 ** 27 + 1, 2);
    m.set(MAX_FRAME, MAX_FRAME + 1, 1); // coalesces past 2^40
    expect(dump(m)).toEqual([
      [a, a + 2 ** 32, 3],
      [hi, hi + 2 ** 20, 1],
      [hi + 2 ** 20, hi + 2 ** 27 + 1, 2],
      [hi + 2 ** 27 + 1, MAX_FRAME + 1, 1],
    ]);
    expect(m.get(2 ** 31)).toBeUndefined();
    expect(m.get(a + 2 ** 32 - 1)).toBe(3);
    expect(m.get(hi + 2 ** 27)).toBe(2);
    expect(m.count(0, Number.MAX_SAFE_INTEGER)).toBe(2 ** 32 + TIB_FRAMES + 1);
    m.clear(0, Number.MAX_SAFE_INTEGER);
    expect(m.runCount).toBe(0);
  });
});

describe('RangeMap: checkInvariants', () => {
  it('throws ModelInvariantError on a broken structure', () => {
    const m = new RangeMap<number>();
    m.set(0, 10, 1);
    m.set(20, 30, 1);
    m.checkInvariants();
    // Break it from the inside: two adjacent equal runs.
    const tree = (m as unknown as { tree: { set(k: number, v: Run<number>): void } }).tree;
    tree.set(10, { start: 10, end: 20, value: 1 });
    let thrown: unknown;
    try {
      m.checkInvariants();
    } catch (e) {
      thrown = e;
    }
    expect(isModelInvariantError(thrown)).toBe(true);
  });
});

// ---- property tests against a per-frame model ----

const UNIVERSE = 200;

type Op =
  | { kind: 'set'; start: number; end: number; value: number }
  | { kind: 'clear'; start: number; end: number }
  | { kind: 'update'; start: number; end: number; delta: number }
  | { kind: 'clone' };

const range = fc
  .tuple(fc.integer({ min: 0, max: UNIVERSE }), fc.integer({ min: 0, max: UNIVERSE }))
  .map(([a, b]) => (a <= b ? { start: a, end: b } : { start: b, end: a }));
const smallValue = fc.integer({ min: 0, max: 3 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ r: range, value: smallValue }).map(({ r, value }) => ({ kind: 'set' as const, ...r, value })) },
  { weight: 2, arbitrary: range.map((r) => ({ kind: 'clear' as const, ...r })) },
  {
    weight: 2,
    arbitrary: fc.record({ r: range, delta: fc.integer({ min: -1, max: 1 }) }).map(({ r, delta }) => ({ kind: 'update' as const, ...r, delta })),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'clone' as const }) },
);

/** The update function of the properties: a counter, cleared when it drops below 0. */
function bump(delta: number): (old: number | undefined) => number | undefined {
  return (old) => {
    const n = (old ?? 0) + delta;
    return n < 0 ? undefined : n % 4;
  };
}

function applyNaive(model: Array<number | undefined>, o: Op): void {
  if (o.kind === 'clone') return;
  const f = o.kind === 'update' ? bump(o.delta) : undefined;
  for (let i = o.start; i < o.end; i++) {
    if (o.kind === 'set') model[i] = o.value;
    else if (o.kind === 'clear') model[i] = undefined;
    else model[i] = f?.(model[i]);
  }
}

function applyMap(m: RangeMap<number>, o: Op): RangeMap<number> {
  switch (o.kind) {
    case 'set':
      m.set(o.start, o.end, o.value);
      return m;
    case 'clear':
      m.clear(o.start, o.end);
      return m;
    case 'update':
      m.update(o.start, o.end, bump(o.delta));
      return m;
    case 'clone':
      // Continue on the clone; scribble on the original to prove they are independent.
      {
        const c = m.clone();
        m.set(0, UNIVERSE, 99);
        return c;
      }
  }
}

/** Checks every query of `m` against the per-frame model, over the query range [qs, qe). */
function agrees(m: RangeMap<number>, model: Array<number | undefined>, qs: number, qe: number, pv: number): void {
  m.checkInvariants();
  // Point queries over the whole universe, compared in one assertion (one per frame is too slow).
  const gets: Array<number | undefined> = [];
  const hases: boolean[] = [];
  for (let i = 0; i <= UNIVERSE; i++) {
    gets.push(m.get(i));
    hases.push(m.has(i));
  }
  expect(gets).toEqual(model);
  expect(hases).toEqual(model.map((v) => v !== undefined));
  // Runs, rebuilt per frame from the naive model.
  const expected: Array<[number, number, number]> = [];
  for (let i = qs; i < qe; i++) {
    const v = model[i];
    if (v === undefined) continue;
    const lastRun = expected[expected.length - 1];
    if (lastRun !== undefined && lastRun[1] === i && lastRun[2] === v) lastRun[1] = i + 1;
    else expected.push([i, i + 1, v]);
  }
  expect(dump(m, qs, qe)).toEqual(expected);
  if (qs === 0 && qe === UNIVERSE + 1) expect(m.runCount).toBe(expected.length);

  const frames = [...Array(qe - qs).keys()].map((k) => qs + k);
  const match = (v: number | undefined) => v === pv;
  expect([
    m.count(qs, qe),
    m.count(qs, qe, match),
    m.firstWith(qs, qe),
    m.firstWith(qs, qe, match),
    m.firstWithout(qs, qe),
    m.firstWithout(qs, qe, match),
    m.isUniform(qs, qe, pv),
    m.isUniform(qs, qe, undefined),
  ]).toEqual([
    frames.filter((i) => model[i] !== undefined).length,
    frames.filter((i) => match(model[i])).length,
    frames.find((i) => model[i] !== undefined),
    frames.find((i) => match(model[i])),
    frames.find((i) => model[i] === undefined),
    frames.find((i) => !match(model[i])),
    frames.every((i) => model[i] === pv),
    frames.every((i) => model[i] === undefined),
  ]);
}

describe('RangeMap: properties against a per-frame model', () => {
  it('agrees with the model after every step, and keeps its structure', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(op, range, smallValue), { maxLength: 40 }), (steps) => {
        let m = new RangeMap<number>();
        const model: Array<number | undefined> = new Array<number | undefined>(UNIVERSE + 1).fill(undefined);
        for (const [o, q, pv] of steps) {
          m = applyMap(m, o);
          applyNaive(model, o);
          agrees(m, model, q.start, q.end, pv);
          agrees(m, model, 0, UNIVERSE + 1, pv);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('refused operations change nothing', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(range, smallValue), { maxLength: 20 }),
        fc.oneof(fc.integer({ min: -5, max: -1 }), fc.double({ min: 0.1, max: 100, noInteger: true })),
        (sets, badStart) => {
          const m = new RangeMap<number>();
          for (const [r, v] of sets) m.set(r.start, r.end, v);
          const before = dump(m);
          expect(() => m.set(badStart, 150, 1)).toThrow();
          expect(() => m.clear(badStart, 150)).toThrow();
          expect(() => m.update(badStart, 150, () => 1)).toThrow();
          expect(dump(m)).toEqual(before);
        },
      ),
      { numRuns: 100 },
    );
  });
});
