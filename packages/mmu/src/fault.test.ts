import { describe, expect, it } from 'vitest';
import { uapi } from '@cocokit/sdk';
import { PROT } from '@cocokit/host';
import { SPTE } from './page-table.js';
import { GiB, HUGETLB_2M, MiB, fakeArch, setup } from './test-env.js';

const PAGE = 4096;

describe('fault pipeline: shared memory behind userspace_addr', () => {
  it('GUPs the VMM page, maps it 4K with A/D, and drops the GUP reference', () => {
    const env = setup({ privateMem: false });
    const { hva } = env.hvaSlot(0, 0, 4 * MiB);
    const w = env.mmu.fault({ gpa: 5 * PAGE, access: 'write' });
    expect(w).toMatchObject({ kind: 'mapped', level: 0, private: false, writable: true, spurious: false });
    const pfn = env.vmm.pfnAt(hva + 5 * PAGE)!;
    expect(w.kind === 'mapped' && w.pfn).toBe(pfn);
    expect(env.host.refcount(pfn)).toBe(1); // only the process's mapping: KVM released its GUP reference
    expect(env.mmu.lookup(5)!.flags).toBe(SPTE.PRESENT | SPTE.WRITABLE | SPTE.ACCESSED | SPTE.DIRTY);
    // Read faults map read-only; a later write upgrades the same leaf.
    expect(env.mmu.fault({ gpa: 6 * PAGE, access: 'read' })).toMatchObject({ kind: 'mapped', writable: false });
    expect(env.mmu.fault({ gpa: 6 * PAGE, access: 'write' })).toMatchObject({ kind: 'mapped', writable: true });
    // The same access again is spurious.
    expect(env.mmu.fault({ gpa: 5 * PAGE, access: 'write' })).toMatchObject({ kind: 'mapped', spurious: true });
    expect(env.mmu.stats).toMatchObject({ fixed: 3, spurious: 1, faults: { shared: 4, private: 0 }, maps: [3, 0, 0] });
    expect(env.mmu.stats.tablesAllocated).toBe(4);
    expect(env.host.buddy.usedBy('page_table')).toBe(4);
    env.check();
  });

  it('fails with EFAULT (no exit) when the hva cannot be faulted in, or without a VMM process', () => {
    const env = setup({ privateMem: false });
    env.memslots.setUserMemoryRegion2({ slot: 0, flags: 0, guest_phys_addr: 0, memory_size: MiB, userspace_addr: 0x7000_0000_0000 });
    expect(env.mmu.fault({ gpa: 0, access: 'read' })).toMatchObject({ kind: 'error', errno: 'EFAULT' });
    const ro = setup({ privateMem: false });
    ro.hvaSlot(0, 0, MiB, 0, PROT.READ);
    expect(ro.mmu.fault({ gpa: 0, access: 'write' })).toMatchObject({ kind: 'error', errno: 'EFAULT' });
    expect(ro.mmu.fault({ gpa: 0, access: 'read' })).toMatchObject({ kind: 'mapped', writable: false });
    const none = setup({ privateMem: false, noProcess: true });
    none.hvaSlot(0, 0, MiB);
    expect(none.mmu.fault({ gpa: 0, access: 'read' })).toMatchObject({ kind: 'error', errno: 'EFAULT' });
    expect(none.mmu.stats.errors).toBe(1);
  });

  it('read-only slot: reads map read-only, writes exit to MMIO emulation', () => {
    const env = setup({ privateMem: false });
    env.hvaSlot(0, 0, MiB, uapi.KVM_MEM_READONLY);
    expect(env.mmu.fault({ gpa: PAGE, access: 'read' })).toMatchObject({ kind: 'mapped', writable: false });
    expect(env.mmu.fault({ gpa: PAGE, access: 'write' })).toEqual({
      kind: 'exit',
      gfn: 1,
      exit: { reason: 'MMIO', exitReason: uapi.KVM_EXIT_MMIO, phys: PAGE, isWrite: true },
    });
    env.check();
  });

  it('no memslot: an MMIO exit', () => {
    const env = setup({ privateMem: false });
    expect(env.mmu.fault({ gpa: 0x1234_5000, access: 'read' })).toMatchObject({ kind: 'exit', exit: { reason: 'MMIO', phys: 0x1234_5000, isWrite: false } });
    expect(env.mmu.stats.exits.mmio).toBe(1);
  });
});

describe('fault pipeline: guest_memfd', () => {
  it('private faults map the guest_memfd pfn, flagged private', () => {
    const env = setup();
    const { file } = env.gmemSlot(0, GiB, 4 * MiB);
    env.setPrivate(GiB, 4 * MiB);
    const r = env.mmu.fault({ gpa: GiB + 3 * PAGE, access: 'write' });
    expect(r).toMatchObject({ kind: 'mapped', private: true, level: 0, writable: true });
    expect(r.kind === 'mapped' && r.pfn).toBe(file.folioAt(3)!.pfn);
    expect(env.mmu.lookup(GiB / PAGE + 3)!.flags & SPTE.PRIVATE).toBe(SPTE.PRIVATE);
    expect(env.mmu.stats.faults.private).toBe(1);
    env.check();
  });

  it('shared faults in a GMEM_ONLY slot are served from guest_memfd too', () => {
    const env = setup({ privateMem: false });
    const { file, slot } = env.gmemSlot(0, 0, 2 * MiB, uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED);
    expect(slot.gmem?.gmemOnly).toBe(true);
    const r = env.mmu.fault({ gpa: 7 * PAGE, access: 'read' });
    expect(r).toMatchObject({ kind: 'mapped', private: false });
    expect(r.kind === 'mapped' && r.pfn).toBe(file.folioAt(7)!.pfn);
    env.check();
  });

  it('a private fault where the slot has no guest_memfd is a memory-fault exit (EFAULT)', () => {
    const env = setup();
    env.hvaSlot(0, 0, MiB);
    env.setPrivate(0, MiB);
    expect(env.mmu.fault({ gpa: PAGE, access: 'read' })).toEqual({
      kind: 'exit',
      gfn: 1,
      exit: { reason: 'MEMORY_FAULT', exitReason: uapi.KVM_EXIT_MEMORY_FAULT, memoryFault: { gpa: PAGE, size: PAGE, flags: uapi.KVM_MEMORY_EXIT_FLAG_PRIVATE }, errno: 'EFAULT' },
    });
  });

  it('a guest_memfd error becomes a memory-fault exit with that errno (EHWPOISON)', () => {
    const env = setup();
    const { file } = env.gmemSlot(0, 0, MiB);
    env.setPrivate(0, MiB);
    expect(env.mmu.fault({ gpa: 2 * PAGE, access: 'read' }).kind).toBe('mapped');
    file.memoryFailure(2);
    expect(env.mmu.lookup(2)).toBeUndefined(); // the invalidation zapped it
    expect(env.mmu.fault({ gpa: 2 * PAGE, access: 'read' })).toMatchObject({ kind: 'exit', exit: { reason: 'MEMORY_FAULT', errno: 'EHWPOISON', memoryFault: { gpa: 2 * PAGE } } });
  });
});

describe('private vs shared mismatch', () => {
  it('fills KVM_EXIT_MEMORY_FAULT with the faulting page and the access kind, and maps nothing', () => {
    const { arch } = fakeArch();
    const env = setup({ arch });
    env.gmemSlot(0, 0, 2 * MiB);
    env.setPrivate(0, MiB);
    // An encrypted (private) access to a shared gfn.
    expect(env.mmu.fault({ gpa: MiB + 0x123, access: 'write', encrypted: true })).toMatchObject({
      kind: 'exit',
      exit: { reason: 'MEMORY_FAULT', memoryFault: { gpa: MiB, size: PAGE, flags: uapi.KVM_MEMORY_EXIT_FLAG_PRIVATE }, errno: 'EFAULT' },
    });
    // A shared access to a private gfn.
    expect(env.mmu.fault({ gpa: 0x2000, access: 'read', encrypted: false })).toMatchObject({
      kind: 'exit',
      exit: { memoryFault: { gpa: 0x2000, size: PAGE, flags: 0 } },
    });
    expect(env.mmu.mappedLeaves).toBe(0);
    expect(env.mmu.stats.exits.memoryFault).toBe(2);
    // After userspace converts, the same access maps.
    env.setPrivate(MiB, MiB);
    expect(env.mmu.fault({ gpa: MiB, access: 'write', encrypted: true }).kind).toBe('mapped');
    env.check();
  });

  it('with in-place conversion, private-ness comes from guest_memfd shareability', () => {
    const { arch } = fakeArch();
    const env = setup({ arch, proposals: { memoryAttributes2: true } });
    expect(env.mmu.privateTracking).toBe('gmem');
    const { file } = env.gmemSlot(0, 0, 2 * MiB, uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED);
    expect(env.mmu.fault({ gpa: 0, access: 'read', encrypted: true })).toMatchObject({ kind: 'exit', exit: { memoryFault: { flags: uapi.KVM_MEMORY_EXIT_FLAG_PRIVATE } } });
    expect(env.mmu.fault({ gpa: 0, access: 'read', encrypted: false })).toMatchObject({ kind: 'mapped', private: false });
    file.setMemoryAttributes2({ offset: 0, size: PAGE, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
    expect(env.mmu.lookup(0)).toBeUndefined(); // the conversion zapped the shared mapping
    expect(env.mmu.fault({ gpa: 0, access: 'read', encrypted: true })).toMatchObject({ kind: 'mapped', private: true });
    env.check();
  });
});

describe('memslot changes and extensions', () => {
  it('a slot being deleted makes faults retry; the delete zaps its mappings', () => {
    const env = setup({ privateMem: false });
    env.hvaSlot(0, 0, MiB);
    env.mmu.fault({ gpa: 0, access: 'write' });
    const seen: string[] = [];
    env.memslots.subscribe({ beforeChange: () => void seen.push(env.mmu.fault({ gpa: PAGE, access: 'read' }).kind) });
    env.memslots.setUserMemoryRegion2({ slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0, userspace_addr: 0 });
    expect(seen).toEqual(['retry']);
    expect(env.mmu.mappedLeaves).toBe(0);
    expect(env.mmu.stats.retries.invalidSlot).toBe(1);
    expect(env.mmu.fault({ gpa: 0, access: 'read' })).toMatchObject({ kind: 'exit', exit: { reason: 'MMIO' } });
    env.check();
  });

  it('beforeMap can exit or cap the level', () => {
    let answer: 'continue' | { exit: { reason: string }; errno: 'EFAULT' } | { maxLevel: 0 } = { exit: { reason: 'USERFAULT' }, errno: 'EFAULT' };
    const env = setup({ privateMem: false, beforeMap: () => answer, proposals: { hugetlb: true } });
    env.gmemSlot(0, 0, 4 * MiB, uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED | HUGETLB_2M);
    expect(env.mmu.fault({ gpa: 0, access: 'read' })).toMatchObject({ kind: 'exit', exit: { reason: 'USERFAULT', errno: 'EFAULT' } });
    answer = { maxLevel: 0 };
    expect(env.mmu.fault({ gpa: 0, access: 'read' })).toMatchObject({ kind: 'mapped', level: 0 });
    answer = 'continue';
    expect(env.mmu.fault({ gpa: 2 * MiB, access: 'read' })).toMatchObject({ kind: 'mapped', level: 1 });
    expect(env.mmu.stats.exits.extension).toBe(1);
  });
});
