import { describe, expect, it } from 'vitest';
import { uapi } from '@cocokit/sdk';
import { GiB, HUGETLB_2M, MiB, fakeArch, setup } from './test-env.js';

const PAGE = 4096;
const HUGETLB_1G = uapi.GUEST_MEMFD_FLAG_HUGETLB | (30 << uapi.GUEST_MEMFD_HUGE_SHIFT);

describe('huge-page level decisions', () => {
  it('2M folios map 2M while the 2M range is uniform, 4K once it is mixed', () => {
    const env = setup({ proposals: { hugetlb: true } });
    env.gmemSlot(0, 0, 4 * MiB, HUGETLB_2M);
    env.setPrivate(0, 4 * MiB);
    expect(env.mmu.fault({ gpa: 5 * PAGE, access: 'write' })).toMatchObject({ kind: 'mapped', level: 1, private: true });
    // One page of the second 2M becomes shared: that huge page is mixed.
    env.setPrivate(2 * MiB + 7 * PAGE, PAGE, false);
    expect(env.memslots.isMixed(env.memslots.slot(0, 0)!, 512, 1)).toBe(true);
    expect(env.mmu.fault({ gpa: 2 * MiB, access: 'write' })).toMatchObject({ kind: 'mapped', level: 0 });
    expect(env.mmu.lookup(5)?.level).toBe(1);
    // Converting a page under a 2M leaf zaps the leaf whole.
    env.setPrivate(9 * PAGE, PAGE, false);
    expect(env.mmu.lookup(5)).toBeUndefined();
    expect(env.mmu.fault({ gpa: 5 * PAGE, access: 'write' })).toMatchObject({ level: 0 });
    env.check();
  });

  it('a slot misaligned with its backing, or not covering the huge page, maps 4K', () => {
    const env = setup({ proposals: { hugetlb: true } });
    env.gmemSlot(0, 0, MiB + 2 * MiB, 0); // 4K folios
    env.setPrivate(0, 3 * MiB);
    expect(env.mmu.fault({ gpa: 0, access: 'read' })).toMatchObject({ level: 0 });
    const e2 = setup({ proposals: { hugetlb: true } });
    const f = e2.gmem.createGuestMemfd({ size: 4 * MiB, flags: HUGETLB_2M });
    // The slot starts 1M into a 2M block of gfns: gfn and file offset disagree on alignment.
    e2.memslots.setUserMemoryRegion2({ slot: 0, flags: uapi.KVM_MEM_GUEST_MEMFD, guest_phys_addr: MiB, memory_size: 4 * MiB, userspace_addr: 0, guest_memfd: f.fd, guest_memfd_offset: 0 });
    e2.setPrivate(MiB, 4 * MiB);
    expect(e2.mmu.fault({ gpa: 2 * MiB, access: 'read' })).toMatchObject({ kind: 'mapped', level: 0 });
    e2.check();
  });

  it('1G folios map 1G; the arch private limit caps the level', () => {
    const env = setup({ proposals: { hugetlb: true }, hostBytes: 2 * GiB });
    env.gmemSlot(0, GiB, GiB, HUGETLB_1G);
    env.setPrivate(GiB, GiB);
    expect(env.mmu.fault({ gpa: GiB + 12345 * PAGE, access: 'read' })).toMatchObject({ level: 2 });
    expect(env.mmu.stats.maps).toEqual([0, 0, 1]);
    env.check();
    const { arch } = fakeArch({ maxPrivateLevel: 1, classify: false });
    const capped = setup({ proposals: { hugetlb: true }, hostBytes: 2 * GiB, arch });
    capped.gmemSlot(0, GiB, GiB, HUGETLB_1G);
    capped.setPrivate(GiB, GiB);
    expect(capped.mmu.fault({ gpa: GiB, access: 'read' })).toMatchObject({ level: 1 });
  });

  it("hugepage recovery 'on-fault' (default): the next fault in a uniform-again huge page maps it huge", () => {
    const env = setup({ proposals: { hugetlb: true } });
    env.gmemSlot(0, 0, 2 * MiB, HUGETLB_2M);
    env.setPrivate(0, 2 * MiB);
    env.setPrivate(PAGE, PAGE, false);
    env.mmu.fault({ gpa: 0, access: 'read' });
    env.mmu.fault({ gpa: 2 * PAGE, access: 'read' });
    expect(env.mmu.lookup(0)?.level).toBe(0);
    env.setPrivate(PAGE, PAGE); // uniform again
    expect(env.mmu.lookup(0)?.level).toBe(0); // nothing recovered yet
    expect(env.mmu.fault({ gpa: 9 * PAGE, access: 'read' })).toMatchObject({ level: 1 });
    expect(env.mmu.lookup(0)?.level).toBe(1); // the 4K table was replaced by the 2M leaf
    env.check();
  });

  it("hugepage recovery 'eager': the small leaves go as soon as the range is uniform", () => {
    const env = setup({ proposals: { hugetlb: true }, hugepageRecovery: 'eager' });
    env.gmemSlot(0, 0, 2 * MiB, HUGETLB_2M);
    env.setPrivate(0, 2 * MiB);
    env.setPrivate(PAGE, PAGE, false);
    env.mmu.fault({ gpa: 0, access: 'read' });
    env.setPrivate(PAGE, PAGE);
    expect(env.mmu.mappedLeaves).toBe(0);
    expect(env.mmu.fault({ gpa: 0, access: 'read' })).toMatchObject({ level: 1 });
    env.check();
  });
});
