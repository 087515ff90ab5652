import { describe, expect, it } from 'vitest';
import { uapi } from '@cocokit/sdk';
import { MAP, PROT } from '@cocokit/host';
import { SPTE } from './page-table.js';
import { HUGETLB_2M, MiB, setup } from './test-env.js';

const PAGE = 4096;

describe('dirty logging', () => {
  it('round trip: write-protect on enable, 4K while on, bitmap marks, re-protect on harvest, huge again on disable', () => {
    // hva memory backed by 2M folios (a guest_memfd mmap'd by the VMM), declared huge to the MMU
    // as host_pfn_mapping_level would find a THP/hugetlb mapping.
    const env = setup({ privateMem: false, proposals: { hugetlb: true }, hostMappingLevel: () => 1 });
    const f = env.gmem.createGuestMemfd({ size: 4 * MiB, flags: uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED | HUGETLB_2M });
    const hva = env.vmm.mmap({ length: 4 * MiB, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f, addr: 0x4000_0000_0000 });
    env.vmm.touch(hva, 4 * MiB, 'write'); // the host maps the whole range (its huge mappings)
    expect(hva % (2 * MiB)).toBe(0);
    const region = { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 4 * MiB, userspace_addr: hva };
    env.memslots.setUserMemoryRegion2(region);
    expect(env.mmu.fault({ gpa: 0, access: 'write' })).toMatchObject({ kind: 'mapped', level: 1 });
    env.check();

    env.memslots.setUserMemoryRegion2({ ...region, flags: uapi.KVM_MEM_LOG_DIRTY_PAGES });
    expect(env.mmu.lookup(0)!.flags & SPTE.WRITABLE).toBe(0);
    expect(env.mmu.stats.writeProtected).toBe(1);
    const slot = () => env.memslots.slot(0, 0)!;

    // A write splits the write-protected 2M leaf and maps 4K, logging the page.
    expect(env.mmu.fault({ gpa: 5 * PAGE, access: 'write' })).toMatchObject({ kind: 'mapped', level: 0, writable: true });
    expect(env.mmu.lookup(0)).toBeUndefined();
    expect(env.mmu.fault({ gpa: 6 * PAGE, access: 'read' })).toMatchObject({ level: 0, writable: false });
    expect(env.memslots.dirtyRanges(slot())).toEqual([{ start: 5, end: 6 }]);
    env.check();

    // KVM_GET_DIRTY_LOG harvests and write-protects again; the next write is logged again.
    const bm = env.memslots.getDirtyLog({ slot: 0 });
    expect(bm[0]).toBe(1 << 5);
    expect(env.mmu.lookup(5)!.flags & SPTE.WRITABLE).toBe(0);
    expect(env.memslots.dirtyRanges(slot())).toEqual([]);
    expect(env.mmu.fault({ gpa: 5 * PAGE, access: 'write' })).toMatchObject({ kind: 'mapped', level: 0, writable: true });
    expect(env.memslots.dirtyRanges(slot())).toEqual([{ start: 5, end: 6 }]);

    // Disabling recovers huge pages: the 4K leaves go, the next fault maps 2M.
    env.memslots.setUserMemoryRegion2(region);
    expect(env.mmu.mappedLeaves).toBe(0);
    expect(env.mmu.fault({ gpa: 5 * PAGE, access: 'write' })).toMatchObject({ level: 1 });
    env.check();
  });
});
