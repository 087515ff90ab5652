/**
 * Property: random sequences of region, attribute and dirty-log calls give the same result and the
 * same errno at every step as a deliberately naive reference model (arrays, one entry per gfn, a
 * linear scan for everything), and the model's invariants hold after every step.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { gfn, isKvmError, uapi } from '@cocokit/sdk';
import type { Errno } from '@cocokit/sdk';
import { Memslots } from './index.js';
import { FakeGuestMemfds } from '../test/fake-binder.js';

const { KVM_MEM_LOG_DIRTY_PAGES: LOG, KVM_MEM_READONLY: RO, KVM_MEM_GUEST_MEMFD: GMEM } = uapi;
const PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;
const PAGE = 4096;
/** The gfn space the test plays in: 4096 gfns = 8 huge 2M pages. */
const N = 4096;
const LIMIT = 2 ** 47 - PAGE;

type Op =
  | { op: 'region'; slot: number; flags: number; gpa: number; size: number; uaddr: number; fd: number; off: number }
  | { op: 'attrs'; address: number; size: number; attributes: number; flags: number }
  | { op: 'dirty'; as: number; gfn: number }
  | { op: 'get'; slot: number }
  | { op: 'clear'; slot: number; first: number; num: number; bits: number[] };

interface RefSlot {
  as: number;
  id: number;
  base: number;
  npages: number;
  flags: number;
  uaddr: number;
  gmem: { file: number; off: number } | undefined;
  dirty: Set<number> | undefined;
}

interface RefFile {
  vm: 'this' | 'other';
  npages: number;
}

/** The naive reference: every rule written as the digest states it, on plain arrays. */
class Reference {
  slots: RefSlot[] = [];
  gen: number[];
  attrs = new Uint8Array(N);
  readonly nrAs: number;
  readonly readonly: boolean;
  readonly supported: number;
  readonly files: Map<number, RefFile | 'other'>;
  constructor(nrAs: number, readonly: boolean, supported: number, files: Map<number, RefFile | 'other'>) {
    this.nrAs = nrAs;
    this.readonly = readonly;
    this.supported = supported;
    this.files = files;
    this.gen = Array.from({ length: nrAs }, (_, i) => i);
  }

  region(o: Extract<Op, { op: 'region' }>): Errno | undefined {
    const as = Math.floor(o.slot / 65536);
    const id = o.slot % 65536;
    if (id >= 32764) return 'EINVAL';
    const g = (o.flags & GMEM) !== 0;
    let valid = LOG | GMEM;
    if (g) valid &= ~LOG;
    if (this.readonly && !g) valid |= RO;
    if ((o.flags & ~valid) !== 0) return 'EINVAL';
    if (o.size % PAGE || o.gpa % PAGE || o.uaddr % PAGE || o.uaddr + o.size > LIMIT) return 'EINVAL';
    if (g && o.off % PAGE) return 'EINVAL';
    if (as >= this.nrAs) return 'EINVAL';
    const npages = o.size / PAGE;
    const base = o.gpa / PAGE;
    const old = this.slots.find((s) => s.as === as && s.id === id);
    if (npages === 0) {
      if (!old) return 'EINVAL';
      this.slots = this.slots.filter((s) => s !== old);
      this.gen[as]! += 2 * this.nrAs;
      return undefined;
    }
    let kind: 'create' | 'move' | 'flags';
    if (!old) kind = 'create';
    else {
      if (g) return 'EINVAL';
      if (o.uaddr !== old.uaddr || npages !== old.npages || ((o.flags ^ old.flags) & RO) !== 0) return 'EINVAL';
      if (old.gmem && !g) return 'EINVAL';
      if (base !== old.base) kind = 'move';
      else if (o.flags !== old.flags) kind = 'flags';
      else return undefined;
    }
    if (kind !== 'flags') {
      for (const s of this.slots) {
        if (s.as === as && s.id !== id && s.base < base + npages && base < s.base + s.npages) return 'EEXIST';
      }
    }
    let gmem: RefSlot['gmem'];
    if (kind === 'create' && g) {
      const f = this.files.get(o.fd);
      if (f === undefined) return 'EBADF';
      if (f === 'other' || f.vm !== 'this') return 'EINVAL';
      const off = o.off / PAGE;
      if (off + npages > f.npages) return 'EINVAL';
      for (const s of this.slots) {
        if (s.gmem && s.gmem.file === o.fd && s.gmem.off < off + npages && off < s.gmem.off + s.npages) return 'EINVAL';
      }
      gmem = { file: o.fd, off };
    }
    const log = (o.flags & LOG) !== 0;
    if (kind === 'create') {
      this.slots.push({ as, id, base, npages, flags: o.flags, uaddr: o.uaddr, gmem, dirty: log ? new Set() : undefined });
      this.gen[as]! += this.nrAs;
    } else {
      const s = old!;
      s.dirty = log ? (s.dirty ?? new Set()) : undefined;
      s.flags = o.flags;
      if (kind === 'move') {
        s.base = base;
        this.gen[as]! += 2 * this.nrAs;
      } else this.gen[as]! += this.nrAs;
    }
    return undefined;
  }

  setAttrs(o: Extract<Op, { op: 'attrs' }>): Errno | undefined {
    if (o.flags !== 0) return 'EINVAL';
    if ((o.attributes & ~this.supported) !== 0) return 'EINVAL';
    if (o.size === 0) return 'EINVAL';
    if (o.address % PAGE || o.size % PAGE) return 'EINVAL';
    this.attrs.fill(o.attributes, o.address / PAGE, (o.address + o.size) / PAGE);
    return undefined;
  }

  find(as: number, g: number): RefSlot | undefined {
    return this.slots.find((s) => s.as === as && g >= s.base && g < s.base + s.npages);
  }

  logSlot(slot: number): RefSlot | Errno {
    const as = Math.floor(slot / 65536);
    const id = slot % 65536;
    if (as >= this.nrAs || id >= 32764) return 'EINVAL';
    return this.slots.find((s) => s.as === as && s.id === id) ?? 'ENOENT';
  }

  get(slot: number): Errno | number[] {
    const s = this.logSlot(slot);
    if (typeof s === 'string') return s;
    if (!s.dirty) return 'ENOENT';
    const bytes = new Array<number>(Math.ceil(s.npages / 64) * 8).fill(0);
    for (const i of s.dirty) bytes[Math.floor(i / 8)]! |= 1 << (i % 8);
    s.dirty.clear();
    return bytes;
  }

  clear(o: Extract<Op, { op: 'clear' }>): Errno | undefined {
    const as = Math.floor(o.slot / 65536);
    const id = o.slot % 65536;
    if (as >= this.nrAs || id >= 32764) return 'EINVAL';
    if (o.first % 64) return 'EINVAL';
    const s = this.slots.find((x) => x.as === as && x.id === id);
    if (!s || !s.dirty) return 'ENOENT';
    if (o.first > s.npages || o.num > s.npages - o.first || (o.num < s.npages - o.first && o.num % 64)) return 'EINVAL';
    if (o.bits.length < Math.ceil(o.num / 64) * 8) return 'EFAULT';
    for (let i = 0; i < Math.ceil(o.num / 64) * 64; i++) {
      if ((o.bits[Math.floor(i / 8)] ?? 0) & (1 << (i % 8))) s.dirty.delete(o.first + i);
    }
    return undefined;
  }
}

const pages = (max: number) => fc.integer({ min: 0, max }).map((p) => p * PAGE);
const maybeMisaligned = (arb: fc.Arbitrary<number>) =>
  fc.oneof({ weight: 9, arbitrary: arb }, { weight: 1, arbitrary: arb.map((v) => v + 512) });

const slotArb = fc.oneof(
  { weight: 12, arbitrary: fc.integer({ min: 0, max: 3 }) },
  { weight: 1, arbitrary: fc.constantFrom(32763, 32764, 65536, 65537, 131072) },
);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('region' as const),
      slot: slotArb,
      flags: fc.oneof(
        { weight: 8, arbitrary: fc.constantFrom(0, LOG, LOG, RO, GMEM, LOG | RO) },
        { weight: 1, arbitrary: fc.constantFrom(GMEM | LOG, GMEM | RO, 1 << 3, 1 << 9) },
      ),
      gpa: maybeMisaligned(pages(N - 1)),
      size: fc.oneof(
        { weight: 1, arbitrary: fc.constant(0) },
        { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }).map((p) => p * PAGE) },
        { weight: 4, arbitrary: maybeMisaligned(pages(N / 2)) },
      ),
      uaddr: fc.oneof(
        { weight: 10, arbitrary: fc.constantFrom(0, 0x7f00_0000_0000) },
        { weight: 1, arbitrary: fc.constantFrom(8, LIMIT - 8 * PAGE) },
      ),
      fd: fc.constantFrom(10, 11, 12, 13, 0xffff_ffff),
      off: maybeMisaligned(pages(N)),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('attrs' as const),
      address: maybeMisaligned(pages(N - 1)),
      size: maybeMisaligned(pages(N / 2)),
      attributes: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0, PRIVATE) }, { weight: 1, arbitrary: fc.constant(1) }),
      flags: fc.oneof({ weight: 10, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constant(1) }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('dirty' as const), as: fc.constantFrom(0, 1), gfn: fc.integer({ min: 0, max: N - 1 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('get' as const), slot: slotArb }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('clear' as const),
      slot: slotArb,
      first: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 64, 128) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 600 }) }),
      num: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 32, 64, 96, 128) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 600 }) }),
      bits: fc.oneof(
        { weight: 5, arbitrary: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 80, maxLength: 80 }) },
        { weight: 1, arbitrary: fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 8 }) },
      ),
    }),
  },
);

function errnoOf(f: () => unknown): { errno: Errno | undefined; value: unknown } {
  try {
    return { errno: undefined, value: f() };
  } catch (e) {
    if (isKvmError(e)) return { errno: e.errno, value: undefined };
    throw e;
  }
}

function compare(ms: Memslots, ref: Reference, hasPrivateMem: boolean): void {
  for (let as = 0; as < ref.nrAs; as++) {
    expect(ms.generation(as)).toBe(ref.gen[as]);
    const want = ref.slots.filter((s) => s.as === as).sort((a, b) => a.base - b.base);
    const got = ms.slots(as);
    expect(got.map((s) => [s.id, s.baseGfn, s.npages, s.flags, s.userspaceAddr, s.gmem?.fd, s.gmem?.pgoff])).toEqual(
      want.map((s) => [s.id, s.base, s.npages, s.flags, s.uaddr, s.gmem?.file, s.gmem?.off]),
    );
    for (const s of want) {
      const view = ms.slot(as, s.id)!;
      const dirty = s.dirty ? [...s.dirty].sort((a, b) => a - b) : [];
      const gotDirty: number[] = [];
      for (const r of ms.dirtyRanges(view)) for (let g = r.start; g < r.end; g++) gotDirty.push(g - s.base);
      expect(gotDirty).toEqual(dirty);
      // Naive mixed tracking: a 2M page fully inside the slot is mixed iff its attributes differ.
      if (hasPrivateMem) {
        for (let hp = Math.ceil(s.base / 512) * 512; hp + 512 <= s.base + s.npages && hp + 512 <= N; hp += 512) {
          const first = ref.attrs[hp];
          let mixed = false;
          for (let g = hp; g < hp + 512; g++) if (ref.attrs[g] !== first) mixed = true;
          if (ms.isMixed(view, gfn(hp), 1) !== mixed) expect({ slot: s.id, hp, mixed: !mixed }).toEqual({ slot: s.id, hp, mixed });
        }
      }
    }
    // Lookup agrees with a linear scan over the reference at every gfn of the play space.
    const gotIds: Array<number | undefined> = [];
    const wantIds: Array<number | undefined> = [];
    for (let g = 0; g < N; g += 7) {
      gotIds.push(ms.lookup(gfn(g), as)?.id);
      wantIds.push(ref.find(as, g)?.id);
    }
    expect(gotIds).toEqual(wantIds);
  }
  const gotAttrs = new Uint8Array(N);
  for (let g = 0; g < N; g++) gotAttrs[g] = ms.getAttributes(gfn(g));
  const firstDiff = gotAttrs.findIndex((v, g) => v !== ref.attrs[g]);
  expect(firstDiff, `attributes differ at gfn ${firstDiff}`).toBe(-1);
}

/** Outcomes seen, so the test can show it exercised successes and refusals alike. */
const outcomes = new Map<string, number>();

function run(config: { nrAs: 1 | 2; readonly: boolean; hasPrivateMem: boolean }, ops: Op[]): void {
  const gmem = new FakeGuestMemfds();
  const ms = new Memslots({
    hasPrivateMem: config.hasPrivateMem,
    readonlyMem: config.readonly,
    nrAddressSpaces: config.nrAs,
    supportedAttributes: config.hasPrivateMem ? PRIVATE : 0,
    binder: gmem,
  });
  // fds 10, 11: this VM's guest_memfds (64 and 4096 pages); 12: another VM's; 13: not a guest_memfd.
  gmem.create(ms, 64);
  gmem.create(ms, N);
  gmem.create('other vm', N);
  gmem.openOther();
  const files = new Map<number, RefFile | 'other'>([
    [10, { vm: 'this', npages: 64 }],
    [11, { vm: 'this', npages: N }],
    [12, { vm: 'other', npages: N }],
    [13, 'other'],
  ]);
  const ref = new Reference(config.nrAs, config.readonly, config.hasPrivateMem ? PRIVATE : 0, files);
  for (const o of ops) {
    let want: Errno | undefined;
    let got: Errno | undefined;
    if (o.op === 'region') {
      want = ref.region(o);
      got = errnoOf(() =>
        ms.setUserMemoryRegion2({
          slot: o.slot,
          flags: o.flags,
          guest_phys_addr: o.gpa,
          memory_size: o.size,
          userspace_addr: o.uaddr,
          guest_memfd: o.fd,
          guest_memfd_offset: o.off,
        }),
      ).errno;
    } else if (o.op === 'attrs') {
      want = ref.setAttrs(o);
      got = errnoOf(() => ms.setMemoryAttributes(o)).errno;
    } else if (o.op === 'dirty') {
      if (o.as < ref.nrAs) {
        const s = ref.find(o.as, o.gfn);
        s?.dirty?.add(o.gfn - s.base);
        ms.markPageDirty(gfn(o.gfn), o.as);
      }
    } else if (o.op === 'get') {
      const r = ref.get(o.slot);
      const m = errnoOf(() => ms.getDirtyLog({ slot: o.slot }));
      want = typeof r === 'string' ? r : undefined;
      got = m.errno;
      if (typeof r !== 'string') expect([...(m.value as Uint8Array)]).toEqual(r);
    } else {
      want = ref.clear(o);
      got = errnoOf(() =>
        ms.clearDirtyLog({ slot: o.slot, first_page: o.first, num_pages: o.num, dirty_bitmap: Uint8Array.from(o.bits) }),
      ).errno;
    }
    expect(got, JSON.stringify(o)).toBe(want);
    const key = `${o.op}:${got ?? 'ok'}`;
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    ms.checkInvariants();
    compare(ms, ref, config.hasPrivateMem);
  }
}

describe('memslots against a naive reference model', () => {
  it('a VM with private memory (sw-protected: one address space, PRIVATE, mixed tracking)', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 10, maxLength: 60, size: 'max' }), (ops) => run({ nrAs: 1, readonly: true, hasPrivateMem: true }, ops)),
      { numRuns: 150 },
    );
  }, 60_000);
  it('a default VM with SMM (two address spaces, no attributes, no read-only memory)', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 10, maxLength: 60, size: 'max' }), (ops) => run({ nrAs: 2, readonly: false, hasPrivateMem: false }, ops)),
      { numRuns: 150 },
    );
  }, 60_000);
  it('the random sequences exercised successes and every refusal kind', () => {
    for (const k of ['region:ok', 'region:EINVAL', 'region:EEXIST', 'region:EBADF', 'attrs:ok', 'attrs:EINVAL', 'get:ok', 'get:ENOENT', 'clear:ok', 'clear:EINVAL', 'clear:ENOENT']) {
      expect(outcomes.get(k) ?? 0, k).toBeGreaterThan(0);
    }
  });
});
