// Seed 003's huge-folio policies on a 1 GiB HugeTLB file: how far each splits a mixed folio, when
// it merges, and how much of a folio left whole over a mixed range get_pfn prepares.
import { describe, expect, it } from 'vitest';
import { uapi } from '@cocokit/sdk';
import { MAP, PROT } from '@cocokit/host';
import type { HugeFolioPolicy } from './guest-memfd.js';
import { errnoOf } from '@cocokit/sdk/testing';
import { MiB, setup, slotAt } from './test-helpers.js';

const { GUEST_MEMFD_FLAG_HUGETLB: HUGETLB, GUEST_MEMFD_HUGE_1GB: HUGE_1GB, GUEST_MEMFD_HUGE_2MB: HUGE_2MB, GUEST_MEMFD_FLAG_MMAP: MMAP, GUEST_MEMFD_FLAG_INIT_SHARED: SHARED, FALLOC_FL_KEEP_SIZE: KEEP } = uapi;
const PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;
const GiB = 2 ** 30;
const P = 4096;
const PAGES_1G = GiB / P;

function oneGiBFile(policy: HugeFolioPolicy, prepares?: Array<[number, number, number]>) {
  const env = setup({
    privateMem: true,
    hugePolicy: policy,
    proposals: { memoryAttributes2: true, hugetlb: true },
    ...(prepares === undefined ? {} : { arch: { gmemPrepare: (pfn: number, gfn: number, order: number) => void prepares.push([pfn, gfn, order]) } }),
  });
  const f = env.vm.createGuestMemfd({ size: GiB, flags: MMAP | SHARED | HUGETLB | HUGE_1GB });
  return { ...env, f };
}

/** Folio orders present in the file, ascending. */
const orders = (f: { folioRuns(): Array<{ order: number }> }): number[] => [...new Set(f.folioRuns().map((r) => r.order))].sort((a, b) => a - b);

describe('1 GiB HugeTLB folios (seed 003)', () => {
  it('split-eager splits a mixed 1 GiB folio straight to 4 KiB folios and merges it only once the whole block is uniform', () => {
    const { vm, host, f } = oneGiBFile('split-eager');
    f.fallocate(KEEP, 0, GiB);
    expect(f.folioAt(0)?.order).toBe(18);
    f.setMemoryAttributes2({ offset: 0, size: 4 * MiB, attributes: PRIVATE });
    // The 2M blocks are uniform, but a HugeTLB page is split to small folios, not to 2M ones.
    expect(orders(f)).toEqual([0]);
    expect(f.maxMappingOrder(0)).toBe(0);
    expect(f.stats()).toMatchObject({ splits: 1, merges: 0 });
    f.setMemoryAttributes2({ offset: 4 * MiB, size: GiB / 2, attributes: PRIVATE });
    expect(orders(f)).toEqual([0]);
    expect(f.stats().merges).toBe(0);
    f.setMemoryAttributes2({ offset: 4 * MiB + GiB / 2, size: GiB / 2 - 4 * MiB, attributes: PRIVATE });
    expect(f.folioAt(PAGES_1G - 1)).toMatchObject({ order: 18, index: 0 });
    expect(f.stats()).toMatchObject({ splits: 1, merges: 1 });
    vm.checkInvariants();
    host.checkInvariants();
  });

  it('split-on-fault keeps the folio whole over a mixed range; a host fault splits it only as far as its uniform 2M blocks', () => {
    const { vm, vmm, host, f } = oneGiBFile('split-on-fault');
    f.fallocate(KEEP, 0, GiB);
    f.setMemoryAttributes2({ offset: 0, size: 4 * MiB, attributes: PRIVATE });
    expect(f.folioAt(0)?.order).toBe(18);
    expect(f.mixedRanges(18)).toEqual([{ start: 0, end: PAGES_1G }]);
    expect(f.maxMappingOrder(0)).toBe(9);
    expect(f.stats().splits).toBe(0);
    vm.checkInvariants();
    const a = vmm.mmap({ length: GiB, prot: PROT.READ, flags: MAP.SHARED, file: f });
    expect(vmm.read(a + GiB - P, 1).ok).toBe(true);
    expect(orders(f)).toEqual([9]);
    expect(f.stats().splits).toBe(1);
    vmm.munmap(a, GiB);
    f.setMemoryAttributes2({ offset: 4 * MiB, size: GiB - 4 * MiB, attributes: PRIVATE });
    expect(f.folioAt(0)?.order).toBe(18);
    expect(f.stats().merges).toBe(1);
    vm.checkInvariants();
    host.checkInvariants();
  });

  it('get_pfn prepares only the uniform private 2M block of a whole folio over a mixed range, and the whole folio once uniform', () => {
    const prepares: Array<[number, number, number]> = [];
    const { vm, f } = oneGiBFile('split-on-fault', prepares);
    const slot = slotAt(0, PAGES_1G);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: PAGES_1G }, slot);
    f.setMemoryAttributes2({ offset: 2 * MiB, size: 2 * MiB, attributes: PRIVATE });
    const first = vm.getPfn(slot, 512 + 5);
    const head = (first.pfn as number) - (512 + 5);
    expect(first).toMatchObject({ maxOrder: 9, prepared: false, isPrivate: true });
    expect(prepares).toEqual([[head + 512, 512, 9]]);
    expect(vm.getPfn(slot, 1000).prepared).toBe(true);
    // The shared pages of the folio were not handed to the arch (an SNP RMP assignment).
    expect(vm.getPfn(slot, 0)).toMatchObject({ isPrivate: false, maxOrder: 9 });
    expect(prepares).toHaveLength(1);
    f.setMemoryAttributes2({ offset: 0, size: GiB, attributes: PRIVATE });
    expect(vm.getPfn(slot, 0)).toMatchObject({ maxOrder: 18, prepared: false });
    expect(prepares.at(-1)).toEqual([head, 0, 18]);
    vm.checkInvariants();
  });
});

describe('conversion to private of part of a host-mapped huge folio (seed 003)', () => {
  function twoMiBFile(policy: HugeFolioPolicy) {
    const env = setup({ privateMem: true, hugePolicy: policy, proposals: { memoryAttributes2: true, hugetlb: true } });
    const f = env.vm.createGuestMemfd({ size: 2 * MiB, flags: MMAP | SHARED | HUGETLB | HUGE_2MB });
    const a = env.vmm.mmap({ length: 2 * MiB, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    return { ...env, f, a };
  }

  // The kernel's refcount check takes whole folios (kvm_gmem_has_safe_refcount): the host's
  // mappings of the folio's other, still-shared pages go with the range's, or a whole folio would
  // either refuse the conversion for good or be left mixed, unsplit and mapped.
  it.each(['split-on-fault', 'split-eager'] as const)('%s: zaps the mappings of the whole folio, converts, and the refault splits it first', (policy) => {
    const { vm, vmm, host, f, a } = twoMiBFile(policy);
    expect(vmm.write(a + 511 * P, new Uint8Array([0x5a])).ok).toBe(true);
    expect(f.folioAt(0)?.order).toBe(9);
    f.setMemoryAttributes2({ offset: 0, size: P, attributes: PRIVATE });
    expect(f.shareability(0)).toBe('guest');
    expect(host.firstElevated(f.folioAt(511)!.pfn, (f.folioAt(511)!.pfn as number) + 1)).toBeUndefined();
    // split-on-fault keeps the folio whole until a host fault needs one of its pages.
    expect(f.folioAt(0)?.order).toBe(policy === 'split-on-fault' ? 9 : 0);
    vm.checkInvariants();
    expect(vmm.read(a + 511 * P, 1)).toMatchObject({ ok: true, data: new Uint8Array([0x5a]) });
    expect(orders(f)).toEqual([0]);
    expect(f.stats().splits).toBe(1);
    vm.checkInvariants();
    host.checkInvariants();
  });

  it('a GUP pin on another page of the folio still refuses it (EAGAIN at the folio), until unpinned', () => {
    const { vm, vmm, f, a } = twoMiBFile('split-on-fault');
    vmm.write(a + 300 * P, new Uint8Array([1]));
    const pins = vmm.gup(a + 300 * P, 1, { longterm: true });
    const req = { offset: 4 * P, size: P, attributes: PRIVATE };
    expect(errnoOf(() => f.setMemoryAttributes2(req))).toBe('EAGAIN');
    expect(req).toMatchObject({ error_offset: 4 * P });
    expect(f.shareability(4)).toBe('all');
    vm.checkInvariants();
    vmm.unpin(pins, { longterm: true });
    f.setMemoryAttributes2({ offset: 4 * P, size: P, attributes: PRIVATE });
    expect(f.shareability(4)).toBe('guest');
    vm.checkInvariants();
  });
});

describe('a huge folio merged from pieces of which only some were zeroed (seed 003)', () => {
  // fallocate leaves the 2M folio unzeroed; the conversion splits it, the host writes two of its
  // pages (each 4 KiB piece zeroed on its first fault), and the conversion back merges the pieces.
  function mergedWithData(policy: HugeFolioPolicy, noDirectMap = false) {
    const env = setup({ privateMem: true, hugePolicy: policy, proposals: { memoryAttributes2: true, hugetlb: true, noDirectMap } });
    const f = env.vm.createGuestMemfd({ size: 2 * MiB, flags: MMAP | SHARED | HUGETLB | HUGE_2MB | (noDirectMap ? uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP : 0) });
    f.fallocate(KEEP, 0, 2 * MiB);
    expect(f.folioAt(0)).toMatchObject({ order: 9, uptodate: false });
    f.setMemoryAttributes2({ offset: 0, size: P, attributes: PRIVATE });
    const a = env.vmm.mmap({ length: 2 * MiB, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    expect(env.vmm.write(a + 10 * P + 7, new Uint8Array([0xa1, 0xa2])).ok).toBe(true);
    expect(env.vmm.write(a + 300 * P, new Uint8Array([0xb1])).ok).toBe(true);
    expect(f.folioAt(10)).toMatchObject({ order: 0, uptodate: true });
    expect(f.folioAt(100)).toMatchObject({ order: 0, uptodate: false });
    env.vm.checkInvariants();
    f.setMemoryAttributes2({ offset: 0, size: P, attributes: 0 });
    expect(f.folioAt(0)?.order).toBe(9);
    expect(f.stats().merges).toBe(1);
    return { ...env, f, a };
  }

  it.each(['split-eager', 'split-on-fault'] as const)('%s: the merged folio is uptodate as a whole, its written pages keep their data and the others read zero', (policy) => {
    const { vm, vmm, host, f, a } = mergedWithData(policy);
    // The folio's uptodate flag is one flag: the pages never zeroed were zeroed at the merge.
    expect(f.folioAt(100)).toMatchObject({ order: 9, uptodate: true });
    expect(f.folioAt(10)).toMatchObject({ order: 9, uptodate: true });
    vm.checkInvariants();
    // A first access to a page never touched while split must not zero the whole folio again.
    expect(vmm.read(a + 100 * P, 4)).toMatchObject({ ok: true, data: new Uint8Array(4) });
    expect(vmm.read(a + 10 * P + 7, 2)).toMatchObject({ ok: true, data: new Uint8Array([0xa1, 0xa2]) });
    expect(vmm.read(a + 300 * P, 1)).toMatchObject({ ok: true, data: new Uint8Array([0xb1]) });
    vm.checkInvariants();
    host.checkInvariants();
  });

  it('the data survives the guest taking the merged folio private (get_pfn zeroes nothing)', () => {
    const { vm, vmm, f, a } = mergedWithData('split-eager');
    vmm.munmap(a, 2 * MiB);
    const slot = slotAt(0, 512);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 512 }, slot);
    f.setMemoryAttributes2({ offset: 0, size: 2 * MiB, attributes: PRIVATE });
    expect(vm.getPfn(slot, 100)).toMatchObject({ maxOrder: 9, isPrivate: true });
    f.setMemoryAttributes2({ offset: 0, size: 2 * MiB, attributes: 0 });
    const b = vmm.mmap({ length: 2 * MiB, prot: PROT.READ, flags: MAP.SHARED, file: f });
    expect(vmm.read(b + 10 * P + 7, 2)).toMatchObject({ ok: true, data: new Uint8Array([0xa1, 0xa2]) });
    vm.checkInvariants();
  });

  it('NO_DIRECT_MAP: the pages zeroed at the merge leave the direct map with them', () => {
    const { vm, vmm, host, f, a } = mergedWithData('split-eager', true);
    const head = f.folioAt(0)!.pfn as number;
    expect([100, 10, 300].map((i) => host.isDirectMapped(head + i))).toEqual([false, false, false]);
    vm.checkInvariants();
    expect(vmm.read(a + 10 * P + 7, 2)).toMatchObject({ ok: true, data: new Uint8Array([0xa1, 0xa2]) });
    host.checkInvariants();
  });
});
