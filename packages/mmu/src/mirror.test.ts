import { describe, expect, it } from 'vitest';
import { archBusy, archError, uapi } from '@cocokit/sdk';
import { MiB, fakeArch, setup } from './test-env.js';

const PAGE = 4096;
const PUNCH = uapi.FALLOC_FL_KEEP_SIZE | uapi.FALLOC_FL_PUNCH_HOLE;

describe('mirror root (private tables in a trusted component)', () => {
  it('private faults build the private tables through the hooks; shared faults use the shared root', () => {
    const { arch, calls } = fakeArch({ mirror: true, maxPrivateLevel: 0 });
    const env = setup({ arch });
    const { file } = env.gmemSlot(0, 0, MiB);
    env.hvaSlot(1, MiB, MiB);
    env.setPrivate(0, MiB);
    const r = env.mmu.fault({ gpa: 3 * PAGE, access: 'write', encrypted: true });
    expect(r).toMatchObject({ kind: 'mapped', private: true, level: 0 });
    const pfn = file.folioAt(3)!.pfn;
    expect(calls).toEqual(['link 0 3', 'link 0 2', 'link 0 1', `set 3 0 ${pfn}`]);
    expect(env.mmu.lookup(3, 'private')?.pfn).toBe(pfn);
    expect(env.mmu.lookup(3, 'shared')).toBeUndefined();
    expect(env.mmu.fault({ gpa: MiB, access: 'write', encrypted: false })).toMatchObject({ kind: 'mapped', private: false });
    expect(calls).toHaveLength(4);
    expect(env.mmu.lookup(256, 'shared')).toBeDefined();
    expect(env.mmu.pageTablePages).toBe(8);
    env.check();
    // guest_memfd invalidation removes the private leaf through the hook.
    file.fallocate(PUNCH, 3 * PAGE, PAGE);
    expect(calls.at(-1)).toBe(`remove 3 0 ${pfn}`);
    expect(env.mmu.lookup(3, 'private')).toBeUndefined();
    env.check();
  });

  it('a leaf zap keeps the page tables of both roots (tdp_mmu_zap_leafs): a fault under them links nothing', () => {
    const { arch, calls } = fakeArch({ mirror: true, maxPrivateLevel: 0 });
    const env = setup({ arch });
    env.gmemSlot(0, 0, 4 * MiB);
    env.setPrivate(0, 4 * MiB);
    env.hvaSlot(1, 4 * MiB, 2 * MiB);
    // Two adjacent private pages alone under their 4K table, and one shared page.
    for (const g of [0x200, 0x201]) expect(env.mmu.fault({ gpa: g * PAGE, access: 'write', encrypted: true }).kind).toBe('mapped');
    expect(env.mmu.fault({ gpa: 0x500 * PAGE, access: 'write', encrypted: false }).kind).toBe('mapped');
    const links = calls.filter((c) => c.startsWith('link'));
    expect(links).toEqual(['link 0 3', 'link 0 2', 'link 512 1']);
    const tables = env.mmu.pageTablePages;
    const freed = env.mmu.stats.tablesFreed;
    // Each private page to shared, one at a time: the second empties the mirror's 4K table.
    env.setPrivate(0x200 * PAGE, PAGE, false);
    env.setPrivate(0x201 * PAGE, PAGE, false);
    // The shared page to private: the direct root's 4K table empties too.
    env.setPrivate(0x500 * PAGE, PAGE);
    expect(env.mmu.mappedLeaves).toBe(0);
    expect([env.mmu.pageTablePages, env.mmu.stats.tablesFreed]).toEqual([tables, freed]);
    expect(env.mmu.mirror?.hasTableBelow(0x200, 1)).toBe(true);
    env.check();
    // Back to private, both pages at once, and fault: set only, no link over the kept table.
    env.setPrivate(0x200 * PAGE, 2 * PAGE);
    for (const g of [0x200, 0x201]) expect(env.mmu.fault({ gpa: g * PAGE, access: 'read', encrypted: true }).kind).toBe('mapped');
    expect(calls.filter((c) => c.startsWith('link'))).toEqual(links);
    expect(env.mmu.pageTablePages).toBe(tables);
    env.check();
    // kvm_mmu_zap_all frees the direct root's tables; the mirror root keeps its own, as the S-EPT does.
    const mirrorTables = env.mmu.mirror!.tablePages;
    env.mmu.zapAll();
    expect(env.mmu.mappedLeaves).toBe(0);
    expect([env.mmu.direct.tablePages, env.mmu.mirror!.tablePages]).toEqual([1, mirrorTables]);
    env.check();
    // So does deleting the memslot of a VM with private memory (kvm_mmu_zap_memslot_leafs).
    expect(env.mmu.fault({ gpa: 0x200 * PAGE, access: 'read', encrypted: true }).kind).toBe('mapped');
    env.memslots.setUserMemoryRegion2({ slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0, userspace_addr: 0 });
    expect([env.mmu.mappedLeaves, env.mmu.mirror!.tablePages]).toEqual([0, mirrorTables]);
    expect(calls.filter((c) => c.startsWith('link'))).toEqual(links);
    env.check();
  });

  it("'busy' retries the fault, 'error' fails it with the arch's errno; nothing is installed", () => {
    const { arch, script } = fakeArch({ mirror: true, maxPrivateLevel: 0 });
    const env = setup({ arch });
    env.gmemSlot(0, 0, MiB);
    env.setPrivate(0, MiB);
    script.set.push(archBusy('TDX_OPERAND_BUSY'));
    expect(env.mmu.fault({ gpa: 0, access: 'read', encrypted: true })).toMatchObject({ kind: 'retry', reason: 'arch-busy' });
    expect(env.mmu.lookup(0, 'private')).toBeUndefined();
    expect(env.mmu.fault({ gpa: 0, access: 'read', encrypted: true }).kind).toBe('mapped');
    script.set.push(archError('EIO', 'TDX_EPT_ENTRY_STATE_INCORRECT'));
    expect(env.mmu.fault({ gpa: PAGE, access: 'read', encrypted: true })).toMatchObject({ kind: 'error', errno: 'EIO' });
    expect(env.mmu.lookup(1, 'private')).toBeUndefined();
    expect(env.mmu.stats.retries.archBusy).toBe(1);
    env.check();
  });

  it('a removal that keeps failing kills the VM (KVM_BUG_ON): faults then fail with EIO', () => {
    const { arch, script } = fakeArch({ mirror: true, maxPrivateLevel: 0 });
    const env = setup({ arch });
    env.gmemSlot(0, 0, MiB);
    env.setPrivate(0, MiB);
    env.mmu.fault({ gpa: 0, access: 'read', encrypted: true });
    script.remove.push(...Array.from({ length: 30 }, () => archError('EIO', 'broken')));
    env.setPrivate(0, PAGE, false);
    expect(env.mmu.bugged).toMatch(/removePrivateSpte/);
    expect(env.mmu.fault({ gpa: PAGE, access: 'read', encrypted: true })).toMatchObject({ kind: 'error', errno: 'EIO' });
  });

  it('pre-fault builds the private tables ahead of time (the TDX launch flow)', () => {
    const { arch, calls } = fakeArch({ mirror: true, maxPrivateLevel: 0 });
    const env = setup({ arch });
    env.gmemSlot(0, 0, MiB);
    env.setPrivate(0, MiB);
    const r = { gpa: 0, size: 4 * PAGE };
    expect(env.mmu.preFaultMemory(r)).toBe(0);
    expect(calls.filter((c) => c.startsWith('set'))).toHaveLength(4);
    expect(env.mmu.leaves('private')).toHaveLength(4);
    env.check();
  });
});

describe('createMmu', () => {
  it('refuses a mirror-root arch without the private-table hooks (EINVAL), allocating nothing', () => {
    const { arch } = fakeArch({ mirror: false });
    const broken = { ...arch, capabilities: { ...arch.capabilities, mirrorRoot: true } };
    expect(() => setup({ arch: broken })).toThrow(/EINVAL.*lacks linkPrivateTable/);
  });

  it('refuses a private root deeper than its 4-level tables (TDX with GPAW 52) with EINVAL', () => {
    const { arch } = fakeArch({ mirror: true });
    const fiveLevel = { ...arch, capabilities: { ...arch.capabilities, privateRootLevel: 4 as const } };
    expect(() => setup({ arch: fiveLevel })).toThrow(/EINVAL.*private root is at level 4/);
  });
});
