import { createRingBuffer, createSim, isKvmError, isModelInvariantError, pfn } from '@cocokit/sdk';
import type { HostMemoryView } from '@cocokit/sdk';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HOST_COSTS } from './costs.js';
import { DEFAULT_HOST_BYTES, checkInvariants, createHost } from './host.js';

const thrown = (f: () => unknown): unknown => {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
};

describe('createHost', () => {
  it('defaults to 64 GiB and a 1 TiB host costs no memory proportional to its size', () => {
    const h = createHost();
    expect(h.nrFrames).toBe(DEFAULT_HOST_BYTES / 4096);
    expect(h.stats().modelRuns).toBe(1);
    const big = createHost({ bytes: 2n ** 40n });
    expect(big.nrFrames).toBe(2 ** 28);
    expect(big.stats().freeBlocksByOrder[18]).toBe(1024);
    expect(big.stats().modelRuns).toBe(1);
    checkInvariants(big);
  });

  it('refuses bad sizes with EINVAL', () => {
    expect(isKvmError(thrown(() => createHost({ bytes: 4097 })), 'EINVAL')).toBe(true);
    expect(isKvmError(thrown(() => createHost({ frames: 0 })), 'EINVAL')).toBe(true);
    expect(isKvmError(thrown(() => createHost({ frames: 8, bytes: 4096 })), 'EINVAL')).toBe(true);
  });

  it('registers its costs with sources and charges them to the current actor', () => {
    const sim = createSim();
    const h = createHost({ frames: 2 ** 20, sim });
    createHost({ frames: 16, sim }); // a second host on the same sim is fine
    for (const name of Object.keys(HOST_COSTS)) expect(sim.costs.has(name)).toBe(true);
    expect(sim.costs.entries().find((e) => e.name === 'host.page_zero')?.owner).toBe('@cocokit/host');
    const t0 = sim.now;
    h.allocPages(9, 'guest_memfd', { zero: true });
    expect(sim.now - t0).toBe(HOST_COSTS['host.page_alloc'].ns + 512 * HOST_COSTS['host.page_zero'].ns);
  });

  it('emits typed trace events when a sink is attached', () => {
    const sim = createSim();
    const ring = createRingBuffer(100);
    sim.trace.attach(ring);
    const h = createHost({ frames: 1024, sim });
    const p = h.allocPages(0, 'kernel');
    h.freePages(p, 0);
    expect(ring.filter('host.alloc')[0]?.fields).toEqual({ pfn: 0, order: 0, purpose: 'kernel' });
    expect(ring.filter('host.free')[0]?.fields).toMatchObject({ deferred: false });
  });
});

describe('Host references, pins and frees', () => {
  it('an allocated page has refcount 1, get/put move it, a free page has 0', () => {
    const h = createHost({ frames: 1024 });
    const p = h.allocPages(2, 'kernel');
    expect(h.refcount(p)).toBe(1);
    h.getPages(p, 4);
    expect(h.refcount(p + 3)).toBe(2);
    expect(h.firstElevated(p, p + 4)).toBe(p);
    h.putPages(p, 4);
    expect(h.firstElevated(p, p + 4)).toBeUndefined();
    expect(h.freePages(p, 2)).toBe('freed');
    expect(h.refcount(p)).toBe(0);
    checkInvariants(h);
  });

  it('put below the allocation reference, get on a free page, double free are model invariants', () => {
    const h = createHost({ frames: 1024 });
    const p = h.allocPages(0, 'kernel');
    expect((thrown(() => h.putPages(p)) as { invariant: string }).invariant).toBe('host.refcount-underflow');
    expect((thrown(() => h.getPages(500)) as { invariant: string }).invariant).toBe('host.access-free-page');
    expect((thrown(() => h.unpinPages(p)) as { invariant: string }).invariant).toBe('host.pin-underflow');
    h.getPages(p);
    expect(h.freePages(p, 0)).toBe('deferred');
    expect((thrown(() => h.freePages(p, 0)) as { invariant: string }).invariant).toBe('host.double-free');
    h.putPages(p);
    expect(isModelInvariantError(thrown(() => h.freePages(p, 0)))).toBe(true);
    checkInvariants(h);
  });

  it('a pinned page survives its free and returns to the allocator on the last unpin', () => {
    const h = createHost({ frames: 1024 });
    const p = h.allocPages(0, 'anon');
    h.pinPages(p);
    expect(h.refcount(p)).toBe(2);
    expect(h.pinCount(p)).toBe(1);
    expect(h.freePages(p, 0)).toBe('deferred');
    expect(h.refcount(p)).toBe(1);
    expect(h.stats().pendingFreeFrames).toBe(1);
    expect(h.stats().usedByPurpose).toEqual({ anon: 1 });
    checkInvariants(h);
    h.unpinPages(p);
    expect(h.refcount(p)).toBe(0);
    expect(h.stats().usedFrames).toBe(0);
    expect(h.stats().pendingFreeFrames).toBe(0);
    checkInvariants(h);
  });

  it('freeing a page out of the direct map, or temporarily mapped, is a model invariant', () => {
    const h = createHost({ frames: 1024 });
    const p = h.allocPages(9, 'guest_memfd');
    h.removeFromDirectMap(p, p + 512);
    expect(h.isDirectMapped(p + 7)).toBe(false);
    expect((thrown(() => h.freePages(p, 9)) as { invariant: string }).invariant).toBe('host.free-not-direct-mapped');
    h.restoreDirectMap(p, p + 512);
    const t = h.tempMap(p);
    expect(isModelInvariantError(thrown(() => h.freePages(p, 9)))).toBe(true);
    t.unmap();
    expect(h.freePages(p, 9)).toBe('freed');
    // Direct-map operations on free pages are bugs too.
    expect(isModelInvariantError(thrown(() => h.removeFromDirectMap(0, 1)))).toBe(true);
    expect(isModelInvariantError(thrown(() => h.tempMap(0)))).toBe(true);
    checkInvariants(h);
  });

  it('directMapRemovedCount counts removed frames of a range, temporarily restored ones included', () => {
    const h = createHost({ frames: 1024 });
    const p = h.allocPages(9, 'guest_memfd');
    expect(h.directMapRemovedCount(p, p + 512)).toBe(0);
    h.removeFromDirectMap(p + 8, p + 16);
    const t = h.tempMap(p + 9);
    expect(h.isDirectMapped(p + 9)).toBe(true);
    expect(h.directMapRemovedCount(p, p + 512)).toBe(8);
    expect(h.directMapRemovedCount(p + 12, p + 100)).toBe(4);
    t.unmap();
    expect(isKvmError(thrown(() => h.directMapRemovedCount(5, 4)), 'EINVAL')).toBe(true);
  });

  it('direct-map removal charges updates and a shootdown, temporary maps are counted', () => {
    const sim = createSim();
    const h = createHost({ frames: 4096, sim });
    const p = h.allocPages(9, 'guest_memfd');
    const t0 = sim.now;
    h.removeFromDirectMap(p, p + 512);
    expect(sim.now - t0).toBe(512 * HOST_COSTS['host.direct_map_update'].ns + HOST_COSTS['host.tlb_shootdown'].ns);
    const handle = h.tempMap(p + 1);
    expect(h.tempMapCount(p + 1)).toBe(1);
    sim.advance(1000);
    handle.unmap();
    expect(h.directMapStats()).toMatchObject({ tempRemaps: 1, bytesExposed: 4096, removedNow: 512 });
    expect(h.directMapStats().exposureNs).toBeGreaterThanOrEqual(1000);
    checkInvariants(h);
  });

  it('split and merge folios keep the pages allocated and accounted', () => {
    const h = createHost({ frames: 2 ** 19 });
    const p = h.allocPages(18, 'guest_memfd');
    h.splitFolio(p, 18, 9);
    expect(h.freePages(p + 512, 9)).toBe('freed');
    expect(h.stats().usedByPurpose).toEqual({ guest_memfd: 2 ** 18 - 512 });
    expect(isKvmError(thrown(() => h.mergeFolio(p, 18)), 'EINVAL')).toBe(true);
    h.allocPagesAt(p + 512, 9, 'guest_memfd');
    h.mergeFolio(p, 18);
    expect(h.buddy.blockOf(p + 1000)?.order).toBe(18);
    // A piece kept only by a reference cannot be merged back.
    h.splitFolio(p, 18, 9);
    h.getPages(p);
    h.freePages(p, 9);
    expect(isKvmError(thrown(() => h.mergeFolio(p, 18)), 'EINVAL')).toBe(true);
    expect(isKvmError(thrown(() => h.splitFolio(p, 9, 0)), 'EINVAL')).toBe(true);
    h.putPages(p);
    checkInvariants(h);
  });

  it('ENOMEM from allocPages changes nothing; allocPagesAt EBUSY likewise', () => {
    const h = createHost({ frames: 512 });
    h.allocPages(9, 'kernel');
    const before = h.stats();
    expect(isKvmError(thrown(() => h.allocPages(0, 'anon')), 'ENOMEM')).toBe(true);
    expect(isKvmError(thrown(() => h.allocPagesAt(0, 0, 'anon')), 'EBUSY')).toBe(true);
    expect(h.stats()).toEqual(before);
  });
});

describe('Host as HostMemoryView', () => {
  it('implements the sdk interface: contents, bytes, tags, zero, refcounts, direct map', () => {
    const h = createHost({ frames: 1024 });
    const view: HostMemoryView = h;
    const p = h.allocPages(0, 'guest_memfd');
    expect(view.contents(p)).toEqual({ kind: 'zero' });
    view.writeBytes(p, 8, new Uint8Array([1, 2]));
    expect(view.readBytes(p, 8, 2)).toEqual(new Uint8Array([1, 2]));
    view.writeTag(p, 77n);
    expect(view.contents(p)).toEqual({ kind: 'tag', tag: 77n });
    view.zero(p);
    expect(view.contents(p)).toEqual({ kind: 'zero' });
    expect(view.refcount(p)).toBe(1);
    expect(view.pinCount(p)).toBe(0);
    expect(view.isDirectMapped(p)).toBe(true);
    expect(view.nrFrames).toBe(1024);
    // Writing a free page is a use after free; reading one is allowed; bad pfns are EINVAL.
    expect(isModelInvariantError(thrown(() => view.writeBytes(pfn(900), 0, new Uint8Array(1))))).toBe(true);
    expect(view.readBytes(pfn(900), 0, 1)).toEqual(new Uint8Array(1));
    expect(isKvmError(thrown(() => view.readBytes(pfn(1024))), 'EINVAL')).toBe(true);
  });

  it('contents persist across free until zeroed (the kernel does not clear on free)', () => {
    const h = createHost({ frames: 16 });
    const p = h.allocPages(0, 'anon');
    h.writeTag(p, 5n);
    h.freePages(p, 0);
    const q = h.allocPages(0, 'anon');
    expect(q).toBe(p);
    expect(h.tagAt(q)).toBe(5n);
    h.freePages(q, 0);
    const r = h.allocPages(0, 'anon', { zero: true });
    expect(h.contents(r)).toEqual({ kind: 'zero' });
  });

  it('tags a 1 TiB range in one run', () => {
    const h = createHost({ bytes: 2 ** 40 });
    for (let i = 0; i < 1024; i++) h.allocPages(18, 'guest_memfd');
    h.tagSequence(0, 2 ** 28, 1n);
    expect(h.stats().contents).toEqual({ bytePages: 0, tagRuns: 1 });
    expect(h.tagAt(2 ** 28 - 1)).toBe(BigInt(2 ** 28));
    expect(h.stats().modelRuns).toBeLessThan(10);
    checkInvariants(h);
  });

  it('host access checks: installed, consulted in order, removable', () => {
    const h = createHost({ frames: 16 });
    expect(h.checkHostAccess(pfn(3), true)).toBe('ok');
    const off = h.addHostAccessCheck((p, write) => (p === 3 && write ? { signal: 'SIGBUS', kind: 'rmp', reason: 'RMP violation' } : 'ok'));
    expect(h.checkHostAccess(pfn(3), true)).toEqual({ signal: 'SIGBUS', kind: 'rmp', reason: 'RMP violation' });
    expect(h.checkHostAccess(pfn(3), false)).toBe('ok');
    off();
    expect(h.checkHostAccess(pfn(3), true)).toBe('ok');
  });
});

describe('Host properties', () => {
  type Op =
    | { k: 'alloc'; order: number }
    | { k: 'free'; i: number }
    | { k: 'get'; i: number }
    | { k: 'put'; i: number }
    | { k: 'pin'; i: number }
    | { k: 'unpin'; i: number }
    | { k: 'dm'; i: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ k: fc.constant('alloc' as const), order: fc.integer({ min: 0, max: 4 }) }),
    ...(['free', 'get', 'put', 'pin', 'unpin', 'dm'] as const).map((k) => fc.record({ k: fc.constant(k), i: fc.nat() })),
  );

  it('refcounts never go negative, deferred frees complete, accounting adds up', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const h = createHost({ frames: 256 });
        const blocks: Array<{ p: number; order: number; freed: boolean; refs: number; pins: number; removed: boolean }> = [];
        for (const o of ops) {
          if (o.k === 'alloc') {
            if (!h.buddy.canAlloc(o.order)) continue;
            blocks.push({ p: h.allocPages(o.order, 'kernel'), order: o.order, freed: false, refs: 0, pins: 0, removed: false });
          } else if (blocks.length > 0) {
            const b = blocks[o.i % blocks.length]!;
            if (o.k === 'free' && !b.freed && !b.removed) {
              h.freePages(b.p, b.order);
              b.freed = true;
            } else if (o.k === 'get' && (!b.freed || b.refs > 0)) {
              h.getPages(b.p);
              b.refs++;
            } else if (o.k === 'put' && b.refs > b.pins) {
              h.putPages(b.p);
              b.refs--;
            } else if (o.k === 'pin' && (!b.freed || b.refs > 0)) {
              h.pinPages(b.p);
              b.refs++;
              b.pins++;
            } else if (o.k === 'unpin' && b.pins > 0) {
              h.unpinPages(b.p);
              b.refs--;
              b.pins--;
            } else if (o.k === 'dm' && !b.freed) {
              if (b.removed) h.restoreDirectMap(b.p, b.p + 2 ** b.order);
              else h.removeFromDirectMap(b.p, b.p + 2 ** b.order);
              b.removed = !b.removed;
            }
            if (b.freed && b.refs === 0) blocks.splice(blocks.indexOf(b), 1);
            else expect(h.refcount(b.p)).toBe((b.freed ? 0 : 1) + b.refs);
          }
          checkInvariants(h);
        }
        const used = blocks.reduce((n, b) => n + 2 ** b.order, 0);
        expect(h.stats().usedFrames).toBe(used);
      }),
      { numRuns: 150 },
    );
  });
});
