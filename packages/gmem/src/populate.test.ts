/**
 * kvm_gmem_populate against the VM's memory attributes: on the attributes path each gfn must be
 * PRIVATE in `kvm->mem_attr_array` (kvm_range_has_memory_attributes(..., PRIVATE, PRIVATE), else
 * -EINVAL), whatever the file says; with in-place conversion the file's shareability decides.
 */
import { describe, expect, it } from 'vitest';
import { uapi } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import type { GmemMemoryAttributes } from './context.js';
import { setup, slotAt } from './test-helpers.js';

const P = 4096;
const PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;

/** A stand-in for the VM's attributes: the gfns in `priv` are PRIVATE; counts the queries. */
function attributes(priv: Iterable<number>): GmemMemoryAttributes & { priv: Set<number>; queries: number } {
  const a = {
    priv: new Set(priv),
    queries: 0,
    rangeHasAttributes(start: number, end: number, attrs: number, mask = -1): boolean {
      a.queries++;
      for (let g = start; g < end; g++) if (((a.priv.has(g) ? PRIVATE : 0) & mask) !== attrs) return false;
      return true;
    },
  };
  return a;
}

describe('populate and the VM memory attributes', () => {
  it('refuses a gfn that is shared in the attributes with EINVAL, allocating and calling nothing', () => {
    const attrs = attributes([0x80, 0x81, 0x83]);
    const calls: number[] = [];
    const { vm, host } = setup({ privateMem: true, memoryAttributes: attrs, arch: { populate: (g) => void calls.push(g) } });
    const f = vm.createGuestMemfd({ size: 8 * P });
    const slot = slotAt(0x80, 8);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, slot);
    const used = host.buddy.usedBy('guest_memfd');
    expect(errnoOf(() => vm.populate({ slot, gfn: 0x82, npages: 2 }))).toBe('EINVAL');
    expect([f.allocatedPages, host.buddy.usedBy('guest_memfd'), calls]).toEqual([0, used, []]);
    // Partial progress stops at the shared gfn, as the kernel's loop does.
    expect(vm.populate({ slot, gfn: 0x80, npages: 4 })).toBe(2);
    expect(calls).toEqual([0x80, 0x81]);
    expect(f.allocatedPages).toBe(2);
    attrs.priv.add(0x82);
    expect(vm.populate({ slot, gfn: 0x82, npages: 2 })).toBe(2);
    expect(calls).toEqual([0x80, 0x81, 0x82, 0x83]);
    vm.checkInvariants();
  });

  it('a prepared page is EEXIST before its attributes are looked at (6.18 order)', () => {
    const attrs = attributes([0x80]);
    const { vm } = setup({ privateMem: true, memoryAttributes: attrs, arch: { populate: () => {} } });
    const f = vm.createGuestMemfd({ size: 2 * P });
    const slot = slotAt(0x80, 2);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 2 }, slot);
    expect(vm.populate({ slot, gfn: 0x80, npages: 1 })).toBe(1);
    attrs.priv.delete(0x80);
    expect(errnoOf(() => vm.populate({ slot, gfn: 0x80, npages: 1 }))).toBe('EEXIST');
    expect(errnoOf(() => vm.populate({ slot, gfn: 0x81, npages: 1 }))).toBe('EINVAL');
  });

  it('with in-place conversion the file is the truth: the VM attributes are not asked', () => {
    const attrs = attributes([]);
    const calls: number[] = [];
    const { vm } = setup({ privateMem: true, proposals: { memoryAttributes2: true }, memoryAttributes: attrs, arch: { populate: (g) => void calls.push(g) } });
    const f = vm.createGuestMemfd({ size: 4 * P, flags: uapi.GUEST_MEMFD_FLAG_MMAP });
    const slot = slotAt(0x80, 4);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 4 }, slot);
    f.setMemoryAttributes2({ offset: P, size: P, attributes: 0 });
    expect(vm.populate({ slot, gfn: 0x80, npages: 4 })).toBe(1);
    expect(errnoOf(() => vm.populate({ slot, gfn: 0x81, npages: 1 }))).toBe('EINVAL');
    expect(vm.populate({ slot, gfn: 0x82, npages: 2 })).toBe(2);
    expect([calls, attrs.queries]).toEqual([[0x80, 0x82, 0x83], 0]);
  });
});
