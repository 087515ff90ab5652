import { isKvmError, isModelInvariantError } from '@cocokit/sdk';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BuddyAllocator, MAX_ORDER } from './buddy.js';

const expectKvm = (f: () => unknown, errno: Parameters<typeof isKvmError>[1]) => {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  expect(isKvmError(caught, errno), String(caught)).toBe(true);
};
const expectInvariant = (f: () => unknown, name?: string) => {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  expect(isModelInvariantError(caught), String(caught)).toBe(true);
  if (name !== undefined) expect((caught as { invariant: string }).invariant).toBe(name);
};

describe('BuddyAllocator', () => {
  it('starts with every frame free in the largest aligned blocks', () => {
    const b = new BuddyAllocator(2 ** 24); // 64 GiB
    expect(b.freeFrames).toBe(2 ** 24);
    expect(b.freeBlockCount(18)).toBe(64);
    expect(b.runCount).toBe(1);
    b.checkInvariants();
    const odd = new BuddyAllocator(2 ** 18 + 2 ** 9 + 3);
    expect(odd.stats().freeBlocksByOrder[18]).toBe(1);
    expect(odd.freeBlockCount(9)).toBe(1);
    expect(odd.freeBlockCount(1)).toBe(1);
    expect(odd.freeBlockCount(0)).toBe(1);
    odd.checkInvariants();
  });

  it('a 1 TiB host costs a handful of runs, not memory per frame', () => {
    const b = new BuddyAllocator(2 ** 28);
    expect(b.runCount).toBe(1);
    for (let i = 0; i < 1000; i++) b.alloc(0, 'anon');
    // Sequential order-0 allocations of one purpose coalesce; the split-off halves are one per order.
    expect(b.runCount).toBeLessThan(40);
    b.checkInvariants();
  });

  it('sequential order-0 allocation (a lone free block per order) answers every query as the free lists would', () => {
    const b = new BuddyAllocator(2 ** 12);
    for (let i = 0; i < 5; i++) b.alloc(0, 'guest_memfd'); // [0, 5) used; free: 5 (order 0), 6 (1), 8 (3), 16 (4), ...
    expect([...b.freeRuns(0)]).toEqual([{ start: 5, end: 6, value: 1 }]);
    expect([...b.freeRuns(1)]).toEqual([{ start: 6, end: 8, value: 1 }]);
    expect([...b.freeRuns(2)]).toEqual([]);
    expect(b.freeOrderOf(5)).toBe(0);
    expect(b.freeOrderOf(7)).toBe(1);
    expect(b.freeOrderOf(4)).toBeUndefined();
    expect(b.isFree(9)).toBe(true);
    expect(b.runCount).toBe(1 + 11); // one allocated run, one free block on each of orders 0, 1, 3..11
    b.checkInvariants();
    // A malformed frame is still EINVAL, also inside a lone block's span.
    expectKvm(() => b.freeOrderOf(5.5), 'EINVAL');
    // A second free block of an order: both in the list, merged back on free.
    const p = b.alloc(0, 'x');
    expect(p).toBe(5);
    b.free(2, 0);
    b.free(p, 0);
    expect([...b.freeRuns(0)]).toEqual([
      { start: 2, end: 3, value: 1 },
      { start: 5, end: 6, value: 1 },
    ]);
    expect(b.alloc(0, 'x')).toBe(2);
    b.checkInvariants();
    for (const q of [0, 1, 2, 3, 4]) b.free(q, 0);
    expect(b.freeBlockCount(12)).toBe(1);
    expect(b.runCount).toBe(1);
    b.checkInvariants();
  });

  it('allocates lowest address first from the smallest order, splitting', () => {
    const b = new BuddyAllocator(2 ** 20);
    expect(b.alloc(0, 'kernel')).toBe(0);
    expect(b.alloc(0, 'kernel')).toBe(1);
    expect(b.alloc(9, 'guest_memfd')).toBe(512);
    expect(b.alloc(0, 'anon')).toBe(2);
    expect(b.alloc(18, 'guest_memfd')).toBe(2 ** 18);
    expect(b.usedBy('kernel')).toBe(2);
    expect(b.usedBy('guest_memfd')).toBe(512 + 2 ** 18);
    expect(b.usedBy('anon')).toBe(1);
    b.checkInvariants();
  });

  it('merges buddies on free back to the initial state', () => {
    const b = new BuddyAllocator(2 ** 19);
    const ps = [b.alloc(0, 'a'), b.alloc(3, 'a'), b.alloc(9, 'b'), b.alloc(18, 'c'), b.alloc(0, 'a')];
    const orders = [0, 3, 9, 18, 0];
    ps.forEach((p, i) => b.free(p, orders[i]!));
    expect(b.freeBlockCount(18)).toBe(2);
    expect(b.freeFrames).toBe(2 ** 19);
    expect(b.runCount).toBe(1);
    b.checkInvariants();
  });

  it('keeps a high-water mark of used frames that frees never lower', () => {
    const b = new BuddyAllocator(2 ** 12);
    expect(b.stats().peakUsedFrames).toBe(0);
    const huge = b.alloc(9, 'guest_memfd');
    const page = b.alloc(0, 'anon');
    expect(b.peakUsedFrames).toBe(513);
    b.free(huge, 9);
    expect([b.usedFrames, b.peakUsedFrames]).toEqual([1, 513]);
    b.alloc(3, 'anon'); // 9 used: below the mark, which stays
    b.allocAt(1024, 10, 'guest_memfd'); // 1033 used: a new mark, through alloc_contig_range too
    expect(b.stats()).toMatchObject({ usedFrames: 1033, peakUsedFrames: 1033 });
    b.free(page, 0);
    expect(b.peakUsedFrames).toBe(1033);
    expect(() => b.alloc(12, 'anon')).toThrow(); // ENOMEM changes nothing, the mark included
    expect(b.peakUsedFrames).toBe(1033);
    b.checkInvariants();
  });

  it('ENOMEM when no block of the order can be formed, changing nothing', () => {
    const b = new BuddyAllocator(2 ** 10);
    b.alloc(9, 'x');
    b.alloc(0, 'x');
    const before = b.stats();
    expect(b.canAlloc(9)).toBe(false);
    expectKvm(() => b.alloc(9, 'x'), 'ENOMEM');
    expectKvm(() => b.alloc(18, 'x'), 'ENOMEM');
    expect(b.stats()).toEqual(before);
    expect(b.canAlloc(8)).toBe(true);
  });

  it('refuses malformed arguments with EINVAL and state misuse as a model invariant', () => {
    const b = new BuddyAllocator(2 ** 10);
    expectKvm(() => new BuddyAllocator(0), 'EINVAL');
    expectKvm(() => b.alloc(19, 'x'), 'EINVAL');
    expectKvm(() => b.alloc(-1, 'x'), 'EINVAL');
    expectKvm(() => b.alloc(1.5, 'x'), 'EINVAL');
    const p = b.alloc(2, 'x');
    expectKvm(() => b.free(p + 1, 2), 'EINVAL'); // unaligned
    expectKvm(() => b.free(2 ** 10, 0), 'EINVAL'); // outside the host
    expectInvariant(() => b.free(p, 1), 'host.free-wrong-order');
    expectInvariant(() => b.free(512, 0), 'host.free-not-allocated');
    b.free(p, 2);
    expectInvariant(() => b.free(p, 2), 'host.free-not-allocated');
    b.checkInvariants();
  });

  it('allocAt carves a specific block, EBUSY when in use', () => {
    const b = new BuddyAllocator(2 ** 19);
    expect(b.allocAt(2 ** 18 + 512 * 3, 9, 'guest_memfd')).toBe(2 ** 18 + 1536);
    b.checkInvariants();
    expect(b.alloc(18, 'x')).toBe(0);
    const before = b.stats();
    expectKvm(() => b.allocAt(2 ** 18 + 1536, 0, 'x'), 'EBUSY');
    expectKvm(() => b.allocAt(2 ** 18, 18, 'x'), 'EBUSY');
    expectKvm(() => b.allocAt(5, 1, 'x'), 'EINVAL');
    expectKvm(() => b.allocAt(2 ** 19, 0, 'x'), 'EINVAL');
    expect(b.stats()).toEqual(before);
    b.free(2 ** 18 + 1536, 9);
    b.free(0, 18);
    expect(b.freeBlockCount(18)).toBe(2);
    b.checkInvariants();
  });

  it('splits an allocated huge block into smaller allocated ones and merges them back', () => {
    const b = new BuddyAllocator(2 ** 19);
    const p = b.alloc(18, 'guest_memfd');
    b.splitAllocated(p, 18, 9);
    expect(b.blockOf(p + 600)).toEqual({ pfn: p + 512, order: 9, purpose: 'guest_memfd' });
    expect(b.usedBy('guest_memfd')).toBe(2 ** 18);
    b.checkInvariants();
    expectKvm(() => b.splitAllocated(p, 9, 9), 'EINVAL');
    expectInvariant(() => b.splitAllocated(p, 18, 0), 'host.free-wrong-order');
    // Free one 2M piece: merging it back must refuse while it is missing.
    b.free(p + 512, 9);
    expectKvm(() => b.mergeAllocated(p, 18), 'EINVAL');
    b.allocAt(p + 512, 9, 'guest_memfd');
    b.splitAllocated(p + 1024, 9, 0);
    b.mergeAllocated(p, 18);
    expect(b.blockOf(p + 5)).toEqual({ pfn: p, order: 18, purpose: 'guest_memfd' });
    expectKvm(() => b.mergeAllocated(p, 18), 'EINVAL'); // already order 18
    b.free(p, 18);
    expect(b.freeFrames).toBe(2 ** 19);
    b.checkInvariants();
  });

  it('mergeAllocated refuses mixed purposes', () => {
    const b = new BuddyAllocator(2 ** 10);
    b.allocAt(0, 0, 'a');
    b.allocAt(1, 0, 'b');
    expectKvm(() => b.mergeAllocated(0, 1), 'EINVAL');
    b.checkInvariants();
  });

  it('checkInvariants notices a corrupted counter', () => {
    const b = new BuddyAllocator(2 ** 10);
    (b as unknown as { freeCount: number }).freeCount = 5;
    expectInvariant(() => b.checkInvariants(), 'host.buddy-free-count');
  });
});

// ---- property-based: random alloc/free/split/merge on a 2^12-frame host ----

type Op =
  | { kind: 'alloc'; order: number; purpose: string }
  | { kind: 'allocAt'; pfn: number; order: number }
  | { kind: 'free'; pick: number }
  | { kind: 'split'; pick: number; by: number }
  | { kind: 'merge'; pick: number; up: number };

const NR = 2 ** 12;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('alloc' as const), order: fc.integer({ min: 0, max: 12 }), purpose: fc.constantFrom('anon', 'guest_memfd', 'kernel') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('allocAt' as const), pfn: fc.integer({ min: 0, max: NR - 1 }), order: fc.integer({ min: 0, max: 12 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('free' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('split' as const), pick: fc.nat(), by: fc.integer({ min: 1, max: 12 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('merge' as const), pick: fc.nat(), up: fc.integer({ min: 1, max: 4 }) }) },
);

describe('BuddyAllocator properties', () => {
  it('random sequences keep every invariant, and ENOMEM happens exactly when no block exists', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 120 }), (ops) => {
        const b = new BuddyAllocator(NR);
        // Shadow model: allocated blocks (start → order, purpose).
        const live = new Map<number, { order: number; purpose: string }>();
        let peak = 0;
        const overlapFree = (start: number, order: number) => {
          for (const [s, v] of live) if (s < start + 2 ** order && start < s + 2 ** v.order) return false;
          return true;
        };
        for (const op of ops) {
          const before = b.stats();
          if (op.kind === 'alloc') {
            // A block of `order` can be formed iff some free block of order >= `order` exists.
            const possible = before.freeBlocksByOrder.some((n, o) => o >= op.order && n > 0);
            let p: number | undefined;
            try {
              p = b.alloc(op.order, op.purpose);
            } catch (e) {
              expect(isKvmError(e, 'ENOMEM')).toBe(true);
              expect(possible).toBe(false);
              expect(b.stats()).toEqual(before);
            }
            if (p !== undefined) {
              expect(possible).toBe(true);
              expect(p % 2 ** op.order).toBe(0);
              expect(overlapFree(p, op.order)).toBe(true);
              live.set(p, { order: op.order, purpose: op.purpose });
            }
          } else if (op.kind === 'allocAt') {
            const pfn = op.pfn - (op.pfn % 2 ** op.order);
            if (pfn + 2 ** op.order > NR) continue;
            const free = overlapFree(pfn, op.order);
            try {
              b.allocAt(pfn, op.order, 'kernel');
              expect(free).toBe(true);
              live.set(pfn, { order: op.order, purpose: 'kernel' });
            } catch (e) {
              expect(isKvmError(e, 'EBUSY')).toBe(true);
              expect(free).toBe(false);
              expect(b.stats()).toEqual(before);
            }
          } else if (live.size > 0) {
            const keys = [...live.keys()];
            const start = keys[op.pick % keys.length]!;
            const blk = live.get(start)!;
            if (op.kind === 'free') {
              b.free(start, blk.order);
              live.delete(start);
            } else if (op.kind === 'split') {
              if (blk.order === 0) continue;
              const newOrder = Math.max(0, blk.order - op.by);
              b.splitAllocated(start, blk.order, newOrder);
              live.delete(start);
              for (let s = start; s < start + 2 ** blk.order; s += 2 ** newOrder) live.set(s, { order: newOrder, purpose: blk.purpose });
            } else {
              const newOrder = Math.min(MAX_ORDER, blk.order + op.up);
              const base = start - (start % 2 ** newOrder);
              if (base + 2 ** newOrder > NR) continue;
              const inside = [...live.entries()].filter(([s]) => s >= base && s < base + 2 ** newOrder);
              const covered = inside.reduce((n, [, v]) => n + 2 ** v.order, 0);
              const ok =
                covered === 2 ** newOrder &&
                inside.every(([, v]) => v.order < newOrder && v.purpose === blk.purpose);
              try {
                b.mergeAllocated(base, newOrder);
                expect(ok).toBe(true);
                for (const [s] of inside) live.delete(s);
                live.set(base, { order: newOrder, purpose: blk.purpose });
              } catch (e) {
                expect(isKvmError(e, 'EINVAL')).toBe(true);
                expect(ok).toBe(false);
                expect(b.stats()).toEqual(before);
              }
            }
          }
          b.checkInvariants();
          // Accounting adds up against the shadow model.
          let used = 0;
          const byPurpose: Record<string, number> = {};
          for (const v of live.values()) {
            used += 2 ** v.order;
            byPurpose[v.purpose] = (byPurpose[v.purpose] ?? 0) + 2 ** v.order;
          }
          expect(b.usedFrames).toBe(used);
          expect(b.freeFrames + b.usedFrames).toBe(NR);
          expect(b.stats().usedByPurpose).toEqual(byPurpose);
          // The high-water mark is the largest `used` the shadow model has seen.
          peak = Math.max(peak, used);
          expect(b.peakUsedFrames).toBe(peak);
        }
        // Freeing everything restores a single order-12 block.
        for (const [s, v] of live) b.free(s, v.order);
        expect(b.freeBlockCount(12)).toBe(1);
        b.checkInvariants();
      }),
      { numRuns: 200 },
    );
  });

  it('alloc takes the lowest block of the smallest order that has one (__rmqueue_smallest)', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ free: fc.boolean(), order: fc.integer({ min: 0, max: 6 }), pick: fc.nat() }), { maxLength: 150 }), (ops) => {
        const b = new BuddyAllocator(2 ** 8 + 2 ** 3 + 1);
        const live: Array<[number, number]> = [];
        for (const op of ops) {
          if (op.free && live.length > 0) {
            const [p, o] = live.splice(op.pick % live.length, 1)[0]!;
            b.free(p, o);
            continue;
          }
          let expected: number | undefined;
          for (let o = op.order; o <= MAX_ORDER && expected === undefined; o++) expected = b.freeRuns(o).next().value?.start;
          if (expected === undefined) continue;
          expect(b.alloc(op.order, 'anon')).toBe(expected);
          live.push([expected, op.order]);
        }
        b.checkInvariants();
      }),
      { numRuns: 100 },
    );
  });
});
