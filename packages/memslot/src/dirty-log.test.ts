/**
 * Dirty logging: KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG shapes and refusals
 * (kvm_get_dirty_log_protect, kvm_clear_dirty_log_protect, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2), and
 * marking from the MMU's write faults. Every errno here was probed on Linux 6.18.
 */
import { describe, expect, it } from 'vitest';
import { gfn, uapi } from '@cocokit/sdk';
import type { FrameRange, Gfn } from '@cocokit/sdk';
const { KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 } = uapi;
import { MiB, PAGE, defaultVm, expectRefused, region, swProtectedVm } from '../test/helpers.js';

const LOG = uapi.KVM_MEM_LOG_DIRTY_PAGES;

const logged = (npages = 128) => {
  const vm = defaultVm();
  vm.ms.setUserMemoryRegion2({ ...region(0, 0, npages * PAGE), flags: LOG });
  vm.ms.setUserMemoryRegion2(region(1, 64 * MiB, 100 * PAGE));
  return vm;
};
const ones = (n: number) => new Uint8Array(n).fill(0xff);

describe('KVM_GET_DIRTY_LOG', () => {
  it('returns the bitmap in the kernel\'s shape (unsigned longs, little endian, bit i ↔ gfn base+i) and, without manual protect, clears it', () => {
    const { ms } = logged(130);
    const s = ms.slot(0, 0)!;
    for (const g of [0, 9, 64, 129]) expect(ms.markDirty(s, gfn(g))).toBe(true);
    const bm = ms.getDirtyLog({ slot: 0 });
    expect(bm.length).toBe(24); // ALIGN(130, 64) / 8
    expect([...bm.slice(0, 2)]).toEqual([0x01, 0x02]);
    expect(bm[8]).toBe(0x01);
    expect(bm[16]).toBe(0x02);
    expect([...ms.getDirtyLog({ slot: 0 })].every((b) => b === 0)).toBe(true);
    ms.checkInvariants();
  });
  it('harvested pages are handed to dirtyLogProtect to be write-protected again', () => {
    const { ms } = logged();
    const got: FrameRange<Gfn>[][] = [];
    ms.subscribe({ dirtyLogProtect: (_s, r) => void got.push([...r]) });
    ms.markPageDirty(gfn(3));
    ms.markPageDirty(gfn(4));
    ms.markPageDirty(gfn(70));
    ms.getDirtyLog({ slot: 0 });
    expect(got).toEqual([[{ start: 3, end: 5 }, { start: 70, end: 71 }]]);
  });
  it('a slot without dirty logging, a missing slot and every guest_memfd slot are ENOENT', () => {
    const { ms, gmem } = logged();
    expectRefused(ms, 'ENOENT', () => ms.getDirtyLog({ slot: 1 }));
    expectRefused(ms, 'ENOENT', () => ms.getDirtyLog({ slot: 7 }));
    const p = swProtectedVm();
    const fd = p.gmem.create(p.ms, 64);
    p.ms.setUserMemoryRegion2({ ...region(11, 0, 16 * PAGE), flags: uapi.KVM_MEM_GUEST_MEMFD, guest_memfd: fd });
    expectRefused(p.ms, 'ENOENT', () => p.ms.getDirtyLog({ slot: 11 }));
    void gmem;
  });
  it('slot id >= 32764 and an address space the VM lacks are EINVAL', () => {
    const { ms } = logged();
    expectRefused(ms, 'EINVAL', () => ms.getDirtyLog({ slot: 32764 }));
    expectRefused(ms, 'EINVAL', () => ms.getDirtyLog({ slot: 1 << 16 }));
  });
  it('a user buffer too small is EFAULT', () => {
    const { ms } = logged();
    expectRefused(ms, 'EFAULT', () => ms.getDirtyLog({ slot: 0, dirty_bitmap: new Uint8Array(8) }));
  });
  it('writes into the caller\'s buffer when given one', () => {
    const { ms } = logged();
    ms.markPageDirty(gfn(127));
    const buf = ones(16);
    expect(ms.getDirtyLog({ slot: 0, dirty_bitmap: buf })).toBe(buf);
    expect([...buf]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]);
  });
  it('a 2^31-1 page slot costs nothing until pages are dirtied', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2({ ...region(0, 0, (2 ** 31 - 1) * PAGE, { userspace_addr: 0 }), flags: LOG });
    const s = ms.slot(0, 0)!;
    ms.markDirty(s, gfn(2 ** 31 - 2));
    expect(ms.dirtyRanges(s)).toEqual([{ start: 2 ** 31 - 2, end: 2 ** 31 - 1 }]);
    ms.checkInvariants();
  });
});

describe('KVM_CLEAR_DIRTY_LOG alignment and refusals', () => {
  it('first_page not a multiple of 64 is EINVAL', () => {
    const { ms } = logged();
    expectRefused(ms, 'EINVAL', () => ms.clearDirtyLog({ slot: 0, first_page: 1, num_pages: 64, dirty_bitmap: ones(8) }));
  });
  it('num_pages not a multiple of 64 and not reaching the end of the slot is EINVAL', () => {
    const { ms } = logged();
    expectRefused(ms, 'EINVAL', () => ms.clearDirtyLog({ slot: 0, first_page: 0, num_pages: 1, dirty_bitmap: ones(8) }));
    const other = logged(100).ms;
    expectRefused(other, 'EINVAL', () => other.clearDirtyLog({ slot: 0, first_page: 0, num_pages: 36, dirty_bitmap: ones(8) }));
  });
  it('an unaligned num_pages that reaches the end of the slot is fine (100-page slot: first 64, num 36)', () => {
    const { ms } = logged(100);
    ms.clearDirtyLog({ slot: 0, first_page: 64, num_pages: 36, dirty_bitmap: ones(8) });
    ms.clearDirtyLog({ slot: 0, first_page: 0, num_pages: 100, dirty_bitmap: ones(16) });
  });
  it('a range past the end of the slot is EINVAL; first_page == npages with 0 pages is fine', () => {
    const { ms } = logged();
    expectRefused(ms, 'EINVAL', () => ms.clearDirtyLog({ slot: 0, first_page: 64, num_pages: 65, dirty_bitmap: ones(16) }));
    expectRefused(ms, 'EINVAL', () => ms.clearDirtyLog({ slot: 0, first_page: 192, num_pages: 0, dirty_bitmap: ones(0) }));
    ms.clearDirtyLog({ slot: 0, first_page: 128, num_pages: 0, dirty_bitmap: ones(0) });
    ms.clearDirtyLog({ slot: 0, first_page: 0, num_pages: 0, dirty_bitmap: ones(0) });
  });
  it('the first_page check comes before the slot lookup: EINVAL on a missing or unlogged slot, else ENOENT', () => {
    const { ms } = logged();
    expectRefused(ms, 'EINVAL', () => ms.clearDirtyLog({ slot: 9, first_page: 3, num_pages: 64, dirty_bitmap: ones(8) }));
    expectRefused(ms, 'EINVAL', () => ms.clearDirtyLog({ slot: 1, first_page: 1, num_pages: 64, dirty_bitmap: ones(8) }));
    expectRefused(ms, 'ENOENT', () => ms.clearDirtyLog({ slot: 1, first_page: 0, num_pages: 64, dirty_bitmap: ones(8) }));
  });
  it('a bitmap shorter than ALIGN(num_pages, 64) / 8 bytes is EFAULT', () => {
    const { ms } = logged();
    expectRefused(ms, 'EFAULT', () => ms.clearDirtyLog({ slot: 0, first_page: 0, num_pages: 128, dirty_bitmap: ones(8) }));
  });
  it('works without manual protect enabled, clearing exactly the requested bits', () => {
    const { ms } = logged();
    const s = ms.slot(0, 0)!;
    for (const g of [1, 2, 65, 66]) ms.markDirty(s, gfn(g));
    const got: FrameRange<Gfn>[][] = [];
    ms.subscribe({ dirtyLogProtect: (_s, r) => void got.push([...r]) });
    const user = new Uint8Array(8);
    user[0] = 0b110; // pages 65, 66 of first_page 64
    ms.clearDirtyLog({ slot: 0, first_page: 64, num_pages: 64, dirty_bitmap: user });
    expect(ms.dirtyRanges(s)).toEqual([{ start: 1, end: 3 }]);
    expect(got).toEqual([[{ start: 65, end: 67 }]]);
  });
});

describe('KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2', () => {
  it('INITIALLY_SET needs MANUAL_PROTECT_ENABLE; unknown bits are EINVAL', () => {
    const { ms } = logged();
    expect(() => ms.enableCap({ cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [4] })).toThrow(/EINVAL/);
    expect(() => ms.enableCap({ cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [2] })).toThrow(/EINVAL/);
    ms.enableCap({ cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [3] });
    expect(ms.manualDirtyLogProtect).toBe(true);
  });
  it('with INITIALLY_SET a new logged slot starts all dirty (bits up to npages only); GET no longer clears, CLEAR does', () => {
    const { ms } = defaultVm();
    ms.enableCap({ cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [3] });
    const changes: boolean[] = [];
    ms.subscribe({ afterChange: (c) => void changes.push(c.dirtyLogInitiallySet) });
    ms.setUserMemoryRegion2({ ...region(20, 0, 130 * PAGE), flags: LOG });
    const bm = ms.getDirtyLog({ slot: 20 });
    expect([...bm.slice(16)]).toEqual([3, 0, 0, 0, 0, 0, 0, 0]);
    expect(bm.slice(0, 16).every((b) => b === 0xff)).toBe(true);
    ms.clearDirtyLog({ slot: 20, first_page: 0, num_pages: 128, dirty_bitmap: ones(16) });
    expect(ms.dirtyRanges(ms.slot(0, 20)!)).toEqual([{ start: 128, end: 130 }]);
    expect(changes).toEqual([true]);
    ms.checkInvariants();
  });
});

describe('dirty bitmaps across slot changes', () => {
  it('enabling logging allocates a clean bitmap, disabling frees it', () => {
    const { ms } = logged();
    ms.setUserMemoryRegion2({ ...region(1, 64 * MiB, 100 * PAGE), flags: LOG });
    expect(ms.dirtyRanges(ms.slot(0, 1)!)).toEqual([]);
    ms.markPageDirty(gfn((64 * MiB) / PAGE + 5));
    ms.setUserMemoryRegion2(region(1, 64 * MiB, 100 * PAGE));
    expect(ms.markPageDirty(gfn((64 * MiB) / PAGE + 5))).toBe(false);
    ms.setUserMemoryRegion2({ ...region(1, 64 * MiB, 100 * PAGE), flags: LOG });
    expect(ms.dirtyRanges(ms.slot(0, 1)!)).toEqual([]);
  });
  it('a move with logging on keeps the bitmap: the bits now name the moved gfns (kvm_prepare_memory_region)', () => {
    const { ms } = logged();
    ms.markPageDirty(gfn(7));
    ms.setUserMemoryRegion2({ ...region(0, 128 * MiB, 128 * PAGE), flags: LOG });
    expect(ms.dirtyRanges(ms.slot(0, 0)!)).toEqual([{ start: (128 * MiB) / PAGE + 7, end: (128 * MiB) / PAGE + 8 }]);
    ms.checkInvariants();
  });
  it('markPageDirty outside any slot, or in a slot without logging, marks nothing', () => {
    const { ms } = logged();
    expect(ms.markPageDirty(gfn(10_000_000))).toBe(false);
    expect(ms.markPageDirty(gfn((64 * MiB) / PAGE))).toBe(false);
    expect(ms.isDirty(ms.slot(0, 0)!, gfn(0))).toBe(false);
  });
});
