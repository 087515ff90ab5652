import { describe, expect, it } from 'vitest';
import { errnoOf } from '@cocokit/sdk/testing';
import { isKvmError, uapi } from '@cocokit/sdk';
import type { KvmGmemConvert, KvmMemoryAttributes2 } from '@cocokit/sdk';
import { MAP, PROT } from '@cocokit/host';
import { recorder, setup, slotAt } from './test-helpers.js';

const { GUEST_MEMFD_FLAG_HUGETLB, GUEST_MEMFD_HUGE_2MB } = uapi;

const { GUEST_MEMFD_FLAG_MMAP: MMAP, GUEST_MEMFD_FLAG_INIT_SHARED: SHARED, FALLOC_FL_KEEP_SIZE: KEEP, FALLOC_FL_PUNCH_HOLE: PUNCH } = uapi;
const PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;
const P = 4096;

const v8 = () => setup({ privateMem: true, proposals: { memoryAttributes2: true, gmemConvert: true } });

describe('KVM_SET_MEMORY_ATTRIBUTES2 (PROPOSED-CONV-v8)', () => {
  it('ENOTTY when in-place conversion is off', () => {
    const f = setup({ privateMem: true }).vm.createGuestMemfd({ size: 4 * P });
    expect(errnoOf(() => f.setMemoryAttributes2({ offset: 0, size: P, attributes: PRIVATE }))).toBe('ENOTTY');
    expect(errnoOf(() => f.convertShared({ offset: 0, size: P }))).toBe('ENOTTY');
  });

  it('validation in order: flags, reserved, VM without private memory, attributes, size 0, unaligned, outside', () => {
    const f = v8().vm.createGuestMemfd({ size: 4 * P, flags: MMAP | SHARED });
    const ok: KvmMemoryAttributes2 = { offset: 0, size: P, attributes: PRIVATE };
    expect(errnoOf(() => f.setMemoryAttributes2({ ...ok, flags: 1 }))).toBe('EINVAL');
    expect(errnoOf(() => f.setMemoryAttributes2({ ...ok, reserved: [0, 1] }))).toBe('EINVAL');
    expect(errnoOf(() => f.setMemoryAttributes2({ ...ok, attributes: 1 }))).toBe('EINVAL');
    expect(errnoOf(() => f.setMemoryAttributes2({ ...ok, size: 0 }))).toBe('EINVAL');
    expect(errnoOf(() => f.setMemoryAttributes2({ ...ok, offset: 1 }))).toBe('EINVAL');
    expect(errnoOf(() => f.setMemoryAttributes2({ ...ok, offset: 4 * P }))).toBe('EINVAL');
    expect(errnoOf(() => f.setMemoryAttributes2({ ...ok, size: 5 * P }))).toBe('EINVAL');
    const d = setup({ proposals: { memoryAttributes2: true } }).vm.createGuestMemfd({ size: 4 * P });
    expect(errnoOf(() => d.setMemoryAttributes2(ok))).toBe('EINVAL');
    expect(f.shareability(0)).toBe('all');
  });

  it('to private zaps host mappings, then faults SIGBUS; back to shared maps again', () => {
    const { vm, vmm } = v8();
    const f = vm.createGuestMemfd({ size: 4 * P, flags: MMAP | SHARED });
    const a = vmm.mmap({ length: 4 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    vmm.write(a, new Uint8Array(4 * P).fill(7));
    f.setMemoryAttributes2({ offset: P, size: P, attributes: PRIVATE });
    expect(vmm.read(a + P, 1)).toMatchObject({ ok: false, signal: 'SIGBUS' });
    expect(vmm.read(a, 1)).toMatchObject({ ok: true });
    vm.checkInvariants();
    f.setMemoryAttributes2({ offset: P, size: P, attributes: 0 });
    // KVM does not touch contents on conversion.
    expect(vmm.read(a + P, 1)).toMatchObject({ ok: true, data: new Uint8Array([7]) });
  });

  it('EAGAIN with error_offset of the first pinned folio; nothing changes', () => {
    const { vm, vmm } = v8();
    const f = vm.createGuestMemfd({ size: 8 * P, flags: MMAP | SHARED });
    const a = vmm.mmap({ length: 8 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    const pins = vmm.gup(a + 5 * P, 1, { longterm: true });
    const req: KvmMemoryAttributes2 = { offset: 2 * P, size: 6 * P, attributes: PRIVATE };
    let err: unknown;
    try {
      f.setMemoryAttributes2(req);
    } catch (e) {
      err = e;
    }
    expect(isKvmError(err, 'EAGAIN')).toBe(true);
    expect((err as { data: { error_offset: number } }).data.error_offset).toBe(5 * P);
    expect(req.error_offset).toBe(5 * P);
    expect(f.shareabilityRuns()).toEqual([{ start: 0, end: 8, value: 'all' }]);
    vmm.unpin(pins, { longterm: true });
    f.setMemoryAttributes2({ offset: 2 * P, size: 6 * P, attributes: PRIVATE });
    expect(f.shareability(5)).toBe('guest');
    vm.checkInvariants();
  });

  it('checkConvert: every refusal of convert, validate-only; mappings of the file do not block, other references do', () => {
    const { vm, vmm, sim } = v8();
    const f = vm.createGuestMemfd({ size: 8 * P, flags: MMAP | SHARED });
    const a = vmm.mmap({ length: 8 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    vmm.write(a, new Uint8Array(8 * P).fill(3));
    const stats = f.stats();
    // Range: EINVAL (empty, reversed, beyond the file, not an integer).
    for (const [s0, e0] of [[2, 2], [3, 2], [7, 9], [-1, 1], [0.5, 2]] as const) expect(errnoOf(() => f.checkConvert(s0, e0, true)), `[${s0}, ${e0})`).toBe('EINVAL');
    // Already shared: nothing to do; to private: something to do, though every page is mapped.
    expect(f.checkConvert(0, 8, false)).toBe(false);
    expect(f.checkConvert(0, 8, true)).toBe(true);
    // A pin is a reference the unmap does not drop: EAGAIN at the pinned folio.
    const pins = vmm.gup(a + 5 * P, 1, { longterm: true });
    let err: unknown;
    try {
      f.checkConvert(2, 8, true);
    } catch (e) {
      err = e;
    }
    expect(isKvmError(err, 'EAGAIN')).toBe(true);
    expect((err as { data: { error_offset: number } }).data.error_offset).toBe(5 * P);
    expect(f.checkConvert(2, 5, true)).toBe(true);
    // To shared has no refcount check.
    expect(f.checkConvert(2, 8, false)).toBe(false);
    // Validate-only: the mappings, shareability, counters and virtual time are as they were.
    expect(f.shareabilityRuns()).toEqual([{ start: 0, end: 8, value: 'all' }]);
    expect(vmm.pfnAt(a + 2 * P)).toBeDefined();
    expect(f.stats()).toEqual(stats);
    const now = sim.now;
    f.checkMemoryAttributes2({ offset: 0, size: 2 * P, attributes: PRIVATE });
    f.checkConvert(0, 5, true);
    expect(sim.now).toBe(now);
    // The conversion itself agrees with the check.
    expect(errnoOf(() => f.setMemoryAttributes2({ offset: 2 * P, size: 6 * P, attributes: PRIVATE }))).toBe('EAGAIN');
    vmm.unpin(pins, { longterm: true });
    expect(f.checkConvert(2, 8, true)).toBe(true);
    f.setMemoryAttributes2({ offset: 2 * P, size: 6 * P, attributes: PRIVATE });
    expect(f.checkConvert(2, 8, true)).toBe(false);
    vm.checkInvariants();
  });

  it('checkMemoryAttributes2 refuses what setMemoryAttributes2 refuses, with the same errno', () => {
    const f = v8().vm.createGuestMemfd({ size: 4 * P, flags: MMAP | SHARED });
    const ok: KvmMemoryAttributes2 = { offset: 0, size: P, attributes: PRIVATE };
    for (const bad of [{ flags: 1 }, { reserved: [0, 1] }, { attributes: 1 }, { size: 0 }, { offset: 1 }, { offset: 4 * P }, { size: 5 * P }]) {
      const req = { ...ok, ...bad };
      expect(errnoOf(() => f.checkMemoryAttributes2(req)), JSON.stringify(bad)).toBe(errnoOf(() => f.setMemoryAttributes2(req)));
    }
    expect(f.checkMemoryAttributes2(ok)).toBe(true);
    expect(f.checkMemoryAttributes2({ ...ok, attributes: 0 })).toBe(false);
  });

  it('invalidates bound slots with the filter from the current values; to-shared calls the arch invalidate hook', () => {
    const inval: Array<[number, number]> = [];
    const { vm } = setup({ privateMem: true, proposals: { memoryAttributes2: true }, arch: { gmemInvalidate: (s, e) => void inval.push([s, e]) } });
    const rec = recorder();
    vm.subscribe(rec);
    const f = vm.createGuestMemfd({ size: 8 * P, flags: MMAP });
    const slot = slotAt(0x40, 8);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, slot);
    const pfn = vm.getPfn(slot, 0x42).pfn;
    f.setMemoryAttributes2({ offset: 0, size: 4 * P, attributes: 0 });
    expect(rec.begins.at(-1)).toMatchObject({ start: 0x40, end: 0x44, filter: 'private', reason: 'convert' });
    expect(inval).toEqual([[pfn, pfn + 1]]);
    f.setMemoryAttributes2({ offset: 0, size: 8 * P, attributes: PRIVATE });
    expect(rec.begins.at(-1)).toMatchObject({ start: 0x40, end: 0x48, filter: 'both' });
    // the page must be prepared again
    expect(vm.getPfn(slot, 0x42).prepared).toBe(false);
  });

  it('already at the value: no invalidation; conversions recorded on holes apply when allocated', () => {
    const { vm, vmm } = v8();
    const rec = recorder();
    vm.subscribe(rec);
    const f = vm.createGuestMemfd({ size: 4 * P, flags: MMAP });
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 4 }, slotAt(0, 4));
    f.setMemoryAttributes2({ offset: 0, size: 4 * P, attributes: PRIVATE });
    expect(rec.begins).toHaveLength(0);
    f.setMemoryAttributes2({ offset: 0, size: P, attributes: 0 });
    const a = vmm.mmap({ length: 4 * P, prot: PROT.READ, flags: MAP.SHARED, file: f });
    expect(vmm.read(a, 1).ok).toBe(true);
    expect(vmm.read(a + P, 1).ok).toBe(false);
  });

  it('truncate stage: punch keeps attributes, refault reads zero', () => {
    const { vm, vmm } = v8();
    const f = vm.createGuestMemfd({ size: 2 * P, flags: MMAP | SHARED });
    const a = vmm.mmap({ length: 2 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    vmm.write(a, new Uint8Array([9]));
    f.setMemoryAttributes2({ offset: P, size: P, attributes: PRIVATE });
    f.fallocate(KEEP | PUNCH, 0, 2 * P);
    expect(f.shareability(1)).toBe('guest');
    expect(vmm.read(a, 1)).toMatchObject({ ok: true, data: new Uint8Array([0]) });
  });
});

describe('KVM_GMEM_CONVERT_SHARED/PRIVATE (PROPOSED-CONV-v2)', () => {
  it('error_offset must be 0 on input; size 0 returns 0; outside EINVAL; EAGAIN copies error_offset back', () => {
    const { vm, vmm } = v8();
    const f = vm.createGuestMemfd({ size: 4 * P, flags: MMAP | SHARED });
    expect(errnoOf(() => f.convertPrivate({ offset: 0, size: P, error_offset: 8 }))).toBe('EINVAL');
    expect(f.convertPrivate({ offset: 0, size: 0 })).toBe(0);
    expect(errnoOf(() => f.convertPrivate({ offset: 0, size: 5 * P }))).toBe('EINVAL');
    const a = vmm.mmap({ length: 4 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    const pins = vmm.gup(a + 3 * P, 1);
    const req: KvmGmemConvert = { offset: 0, size: 4 * P };
    expect(errnoOf(() => f.convertPrivate(req))).toBe('EAGAIN');
    expect(req.error_offset).toBe(3 * P);
    vmm.unpin(pins);
    expect(f.convertPrivate({ offset: 0, size: 4 * P })).toBe(0);
    expect(f.convertShared({ offset: P, size: P })).toBe(0);
    expect(f.shareabilityRuns().map((r) => r.value)).toEqual(['guest', 'all', 'guest']);
  });
});

describe('huge folios', () => {
  const huge = (policy: 'split-eager' | 'split-on-fault') =>
    setup({ privateMem: true, hugePolicy: policy, proposals: { memoryAttributes2: true, hugetlb: true } });
  const M2 = 512 * P;

  it('split-eager: a mixed 2M range is split at conversion, merged when uniform again', () => {
    const { vm, host } = huge('split-eager');
    const f = vm.createGuestMemfd({ size: 2 * M2, flags: MMAP | GUEST_MEMFD_FLAG_HUGETLB + GUEST_MEMFD_HUGE_2MB });
    f.fallocate(KEEP, 0, 2 * M2);
    expect(f.folioAt(0)?.order).toBe(9);
    expect(errnoOf(() => f.fallocate(KEEP | PUNCH, 0, P))).toBe('EINVAL');
    f.setMemoryAttributes2({ offset: P, size: P, attributes: 0 });
    expect(f.folioAt(0)?.order).toBe(0);
    expect(f.folioAt(512)?.order).toBe(9);
    expect(f.stats().splits).toBe(1);
    expect(f.mixedRanges(9)).toEqual([{ start: 0, end: 512 }]);
    expect(f.maxMappingOrder(0)).toBe(0);
    f.setMemoryAttributes2({ offset: P, size: P, attributes: PRIVATE });
    expect(f.folioAt(0)?.order).toBe(9);
    expect(f.stats().merges).toBe(1);
    expect(f.maxMappingOrder(0)).toBe(9);
    vm.checkInvariants();
    host.checkInvariants();
  });

  it('split-on-fault: the folio stays huge with the block recorded mixed until a host fault splits it', () => {
    const { vm, vmm } = huge('split-on-fault');
    const f = vm.createGuestMemfd({ size: M2, flags: MMAP | GUEST_MEMFD_FLAG_HUGETLB + GUEST_MEMFD_HUGE_2MB });
    f.fallocate(KEEP, 0, M2);
    f.setMemoryAttributes2({ offset: P, size: P, attributes: 0 });
    expect(f.folioAt(0)?.order).toBe(9);
    expect(f.mixedRanges(9)).toEqual([{ start: 0, end: 512 }]);
    expect(f.maxMappingOrder(5)).toBe(0);
    vm.checkInvariants();
    const a = vmm.mmap({ length: M2, prot: PROT.READ, flags: MAP.SHARED, file: f });
    expect(vmm.read(a + P, 1).ok).toBe(true);
    expect(f.folioAt(0)?.order).toBe(0);
    expect(f.stats().splits).toBe(1);
    vmm.munmap(a, M2);
    f.setMemoryAttributes2({ offset: P, size: P, attributes: PRIVATE });
    expect(f.folioAt(0)?.order).toBe(9);
    vm.checkInvariants();
  });

  it('get_pfn reports the folio order as max order only when the gfn and index are congruent and the slot covers the block', () => {
    const { vm } = huge('split-eager');
    const f = vm.createGuestMemfd({ size: 2 * M2, flags: GUEST_MEMFD_FLAG_HUGETLB + GUEST_MEMFD_HUGE_2MB });
    const good = slotAt(0x200, 512);
    const bad = slotAt(0x1001, 512);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 512 }, good);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 512, npages: 512 }, bad);
    expect(vm.getPfn(good, 0x210).maxOrder).toBe(9);
    expect(vm.getPfn(bad, 0x1010).maxOrder).toBe(0);
  });
});

describe('direct-map removal (seed 002) and populate', () => {
  it('NO_DIRECT_MAP folios leave the direct map; kernel access remaps temporarily; pfn caches are invalidated by conversion and punch', () => {
    const { vm, host } = setup({ privateMem: true, proposals: { noDirectMap: true, memoryAttributes2: true } });
    const f = vm.createGuestMemfd({ size: 4 * P, flags: MMAP | uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP });
    f.kernelWrite(0, { kind: 'bytes', bytes: new Uint8Array([1, 2, 3]) });
    const p = f.folioAt(0)!.pfn;
    expect(host.isDirectMapped(p)).toBe(false);
    expect(f.kernelRead(0, 0, 3)).toEqual(new Uint8Array([1, 2, 3]));
    expect(host.isDirectMapped(p)).toBe(false);
    const cache = f.pfnCache(0);
    expect(host.isDirectMapped(p)).toBe(true);
    f.setMemoryAttributes2({ offset: 0, size: P, attributes: 0 });
    expect(cache.valid).toBe(false);
    expect(host.isDirectMapped(p)).toBe(false);
    const c2 = f.pfnCache(0);
    f.fallocate(KEEP | PUNCH, 0, P);
    expect(c2.valid).toBe(false);
    expect(host.isInUse(p)).toBe(false);
    expect(f.stats().remaps).toBeGreaterThan(0);
    vm.checkInvariants();
    host.checkInvariants();
  });

  it('a NO_DIRECT_MAP folio is zeroed through the direct map and leaves it only then: no temporary remap, none for fallocate', () => {
    // Zero, then remove (no remap → zero → unmap): seed 002's RFC v2 clears the folio in
    // kvm_gmem_get_folio before kvm_gmem_folio_set_private; the later GUEST_MEMFD_FLAG_NO_DIRECT_MAP
    // series calls kvm_gmem_folio_zap_direct_map after kvm_gmem_prepare_folio (get_pfn) and after
    // folio_mark_uptodate (host fault), and fallocate zaps nothing.
    const { vm, host, vmm } = setup({ privateMem: true, proposals: { noDirectMap: true, memoryAttributes2: true } });
    const f = vm.createGuestMemfd({ size: 4 * P, flags: MMAP | SHARED | uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP });
    const slot = slotAt(0, 4);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 4 }, slot);
    f.fallocate(KEEP, 0, 2 * P);
    const p1 = f.folioAt(1)!.pfn;
    expect(f.folioAt(1)?.uptodate).toBe(false);
    expect(host.isDirectMapped(p1)).toBe(true);
    vm.checkInvariants();
    const p0 = vm.getPfn(slot, 0).pfn;
    const a = vmm.mmap({ length: 4 * P, prot: PROT.READ, flags: MAP.SHARED, file: f });
    expect(vmm.read(a + P, 1)).toMatchObject({ ok: true, data: new Uint8Array([0]) });
    expect(vmm.read(a + 2 * P, 1).ok).toBe(true);
    for (const p of [p0, p1, f.folioAt(2)!.pfn]) expect(host.isDirectMapped(p)).toBe(false);
    expect(host.directMapStats()).toMatchObject({ pagesRemoved: 3, tempMaps: 0, tempRemaps: 0, bytesExposed: 0 });
    expect(f.stats().remaps).toBe(0);
    vm.checkInvariants();
    host.checkInvariants();
  });

  it('remaps counts the pages KVM really put back in the direct map, as the host does: not accesses to a page a pfn cache keeps mapped', () => {
    const { vm, host } = setup({ privateMem: true, proposals: { noDirectMap: true } });
    const f = vm.createGuestMemfd({ size: 4 * P, flags: uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP });
    f.kernelWrite(0, { kind: 'bytes', bytes: new Uint8Array([7]) });
    expect(f.stats().remaps).toBe(1);
    const cache = f.pfnCache(0);
    expect(f.stats().remaps).toBe(2);
    // The cache keeps the page mapped: these accesses remap nothing.
    f.kernelWrite(0, { kind: 'bytes', bytes: new Uint8Array([8]) });
    expect(f.kernelRead(0, 0, 1)).toEqual(new Uint8Array([8]));
    expect(f.stats().remaps).toBe(2);
    cache.release();
    expect(f.kernelRead(0, 0, 1)).toEqual(new Uint8Array([8]));
    expect(f.stats().remaps).toBe(3);
    expect(host.directMapStats()).toMatchObject({ tempMaps: 5, tempRemaps: f.stats().remaps });
    vm.checkInvariants();
    host.checkInvariants();
  });

  it('GUP of a NO_DIRECT_MAP file is refused (EFAULT)', () => {
    const { vm, vmm } = setup({ proposals: { noDirectMap: true } });
    const f = vm.createGuestMemfd({ size: P, flags: MMAP | SHARED | uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP });
    const a = vmm.mmap({ length: P, prot: PROT.READ, flags: MAP.SHARED, file: f });
    expect(errnoOf(() => vmm.gup(a, 1))).toBe('EFAULT');
  });

  it('populate: arch hook per page, EEXIST when prepared, EINVAL when shared, partial count, clipped to slot', () => {
    const calls: Array<[number, string]> = [];
    const { vm } = setup({ privateMem: true, proposals: { memoryAttributes2: true }, arch: { populate: (g, _p, _s, kind) => void calls.push([g, kind]) } });
    const f = vm.createGuestMemfd({ size: 8 * P, flags: MMAP });
    const slot = slotAt(0x80, 8);
    expect(errnoOf(() => vm.populate({ slot, gfn: 0x80, npages: 1 }))).toBe('EINVAL');
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, slot);
    f.setMemoryAttributes2({ offset: 2 * P, size: P, attributes: 0 });
    expect(vm.populate({ slot, gfn: 0x80, npages: 4, kind: 'measured' })).toBe(2);
    expect(calls).toEqual([[0x80, 'measured'], [0x81, 'measured']]);
    expect(errnoOf(() => vm.populate({ slot, gfn: 0x80, npages: 1 }))).toBe('EEXIST');
    expect(errnoOf(() => vm.populate({ slot, gfn: 0x82, npages: 1 }))).toBe('EINVAL');
    expect(vm.populate({ slot, gfn: 0x86, npages: 100 })).toBe(2);
    expect(vm.getPfn(slot, 0x80).prepared).toBe(true);
  });
});
