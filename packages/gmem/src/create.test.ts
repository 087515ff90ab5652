import { describe, expect, it } from 'vitest';
import { errnoOf } from '@cocokit/sdk/testing';
import { uapi } from '@cocokit/sdk';
import { setup } from './test-helpers.js';

const { GUEST_MEMFD_FLAG_HUGETLB, GUEST_MEMFD_HUGE_1GB, GUEST_MEMFD_HUGE_2MB } = uapi;

const { GUEST_MEMFD_FLAG_MMAP: MMAP, GUEST_MEMFD_FLAG_INIT_SHARED: SHARED, GUEST_MEMFD_FLAG_INIT_PRIVATE: PRIV, GUEST_MEMFD_FLAG_NO_DIRECT_MAP: NDM } = uapi;

describe('KVM_CREATE_GUEST_MEMFD', () => {
  it('supported flags per VM type: default VM MMAP|INIT_SHARED, private-memory VM MMAP only (6.18)', () => {
    expect(setup().vm.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS)).toBe(3);
    expect(setup({ privateMem: true }).vm.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS)).toBe(MMAP);
    // PROPOSED-CONV-v8 makes INIT_SHARED legal for CoCo VMs.
    expect(setup({ privateMem: true, proposals: { memoryAttributes2: true } }).vm.supportedFlags() & SHARED).toBe(SHARED);
  });

  it('test_guest_memfd_flags: each single flag succeeds iff the cap reports it, else EINVAL', () => {
    const { vm } = setup();
    const valid = vm.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS);
    for (let bit = 0; bit < 32; bit++) {
      const flag = 2 ** bit;
      const e = errnoOf(() => vm.createGuestMemfd({ size: 4096, flags: flag }).close());
      expect(e).toBe((flag & valid) !== 0 ? undefined : 'EINVAL');
    }
  });

  it('test_create_guest_memfd_invalid_sizes: every unaligned size below a page is EINVAL', () => {
    const { vm } = setup();
    for (let size = 1; size < 4096; size += 97) expect(errnoOf(() => vm.createGuestMemfd({ size, flags: 0 }))).toBe('EINVAL');
  });

  it('size <= 0 as signed 64-bit is EINVAL (0, 1<<63)', () => {
    const { vm } = setup();
    expect(errnoOf(() => vm.createGuestMemfd({ size: 0 }))).toBe('EINVAL');
    expect(errnoOf(() => vm.createGuestMemfd({ size: 1n << 63n }))).toBe('EINVAL');
  });

  it('INIT_SHARED without MMAP is accepted; INIT_PRIVATE and NO_DIRECT_MAP only with their proposal', () => {
    expect(errnoOf(() => setup().vm.createGuestMemfd({ size: 4096, flags: SHARED }))).toBeUndefined();
    expect(errnoOf(() => setup().vm.createGuestMemfd({ size: 4096, flags: PRIV }))).toBe('EINVAL');
    expect(errnoOf(() => setup().vm.createGuestMemfd({ size: 4096, flags: NDM }))).toBe('EINVAL');
    const p = setup({ proposals: { initPrivate: true, noDirectMap: true } }).vm;
    expect(p.createGuestMemfd({ size: 4096, flags: PRIV }).shareability(0)).toBe('guest');
    expect(errnoOf(() => p.createGuestMemfd({ size: 4096, flags: PRIV | SHARED }))).toBe('EINVAL');
    expect(p.createGuestMemfd({ size: 4096, flags: NDM }).noDirectMap).toBe(true);
  });

  it('default shareability: ALL with INIT_SHARED, GUEST (private) without', () => {
    const { vm } = setup();
    expect(vm.createGuestMemfd({ size: 8192, flags: MMAP | SHARED }).shareability(1)).toBe('all');
    expect(vm.createGuestMemfd({ size: 8192, flags: MMAP }).shareability(1)).toBe('guest');
  });

  it('HugeTLB (PROPOSED-CONV-v2): 2M/1G size field, size aligned to it, field without flag is EINVAL', () => {
    const { vm } = setup({ proposals: { hugetlb: true } });
    expect(vm.createGuestMemfd({ size: 4 * 2 ** 20, flags: GUEST_MEMFD_FLAG_HUGETLB + GUEST_MEMFD_HUGE_2MB }).hugeOrder).toBe(9);
    expect(vm.createGuestMemfd({ size: 2 ** 30, flags: GUEST_MEMFD_FLAG_HUGETLB + GUEST_MEMFD_HUGE_1GB }).hugeOrder).toBe(18);
    expect(errnoOf(() => vm.createGuestMemfd({ size: 4096, flags: GUEST_MEMFD_FLAG_HUGETLB + GUEST_MEMFD_HUGE_2MB }))).toBe('EINVAL');
    expect(errnoOf(() => vm.createGuestMemfd({ size: 2 ** 21, flags: GUEST_MEMFD_FLAG_HUGETLB }))).toBe('EINVAL');
    expect(errnoOf(() => vm.createGuestMemfd({ size: 2 ** 21, flags: GUEST_MEMFD_HUGE_2MB }))).toBe('EINVAL');
    expect(errnoOf(() => setup().vm.createGuestMemfd({ size: 2 ** 21, flags: GUEST_MEMFD_FLAG_HUGETLB + GUEST_MEMFD_HUGE_2MB }))).toBe('EINVAL');
  });

  it('test_create_guest_memfd_multiple: sizes kept, distinct inodes; a 1 TiB file allocates nothing', () => {
    const { vm, host } = setup();
    const a = vm.createGuestMemfd({ size: 4096 });
    const b = vm.createGuestMemfd({ size: 8192 });
    expect(a.fstat().st_size).toBe(4096);
    expect(b.fstat().st_size).toBe(8192);
    expect(a.fstat().st_ino).not.toBe(b.fstat().st_ino);
    const big = vm.createGuestMemfd({ size: 2 ** 40 });
    expect(big.allocatedPages).toBe(0);
    expect(big.modelRuns).toBe(1);
    expect(host.buddy.usedBy('guest_memfd')).toBe(0);
  });

  it('a refused creation installs no fd', () => {
    const { vm } = setup();
    expect(errnoOf(() => vm.createGuestMemfd({ size: 1 }))).toBe('EINVAL');
    const f = vm.createGuestMemfd({ size: 4096 });
    expect(f.fd).toBe(3);
  });
});
