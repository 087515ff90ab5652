import { describe, expect, it } from 'vitest';
import { uapi } from '@cocokit/sdk';
import { GiB, MiB, setup } from './test-env.js';

const PAGE = 4096;
const PUNCH = uapi.FALLOC_FL_KEEP_SIZE | uapi.FALLOC_FL_PUNCH_HOLE;

describe('invalidation sources', () => {
  it('guest_memfd punch hole zaps the private mappings of the range, with one TLB flush', () => {
    const env = setup();
    const { file } = env.gmemSlot(0, GiB, MiB);
    env.setPrivate(GiB, MiB);
    for (let i = 0; i < 8; i++) env.mmu.fault({ gpa: GiB + i * PAGE, access: 'write' });
    const flushes = env.mmu.stats.tlbFlushes;
    file.fallocate(PUNCH, 2 * PAGE, 3 * PAGE);
    expect(env.mmu.leaves('shared').map((l) => l.gfn - GiB / PAGE)).toEqual([0, 1, 5, 6, 7]);
    expect(env.mmu.stats.tlbFlushes).toBe(flushes + 1);
    expect(env.mmu.stats.zapped[0]).toBe(3);
    expect(env.mmu.seq.inProgress).toBe(0);
    env.check();
  });

  it('a munmap in the VMM zaps the shared hva mappings it covers, through the mmu notifier', () => {
    const env = setup({ privateMem: false });
    const { hva } = env.hvaSlot(0, 0, MiB);
    for (let i = 0; i < 4; i++) env.mmu.fault({ gpa: i * PAGE, access: 'write' });
    const invalidations = env.mmu.stats.invalidations;
    env.vmm.munmap(hva + PAGE, 2 * PAGE);
    expect(env.mmu.leaves().map((l) => l.gfn)).toEqual([0, 3]);
    expect(env.mmu.stats.invalidations).toBe(invalidations + 1);
    expect(env.mmu.seq.inProgress).toBe(0);
    // The hva is gone, so the next fault there cannot be served.
    expect(env.mmu.fault({ gpa: PAGE, access: 'read' })).toMatchObject({ kind: 'error', errno: 'EFAULT' });
    env.check();
  });

  it('the VMM exiting zaps every hva-backed mapping; a destroyed MMU is no longer told', () => {
    const env = setup({ privateMem: false });
    env.hvaSlot(0, 0, MiB);
    for (let i = 0; i < 4; i++) env.mmu.fault({ gpa: i * PAGE, access: 'write' });
    const other = setup({ privateMem: false });
    const { hva } = other.hvaSlot(0, 0, MiB);
    other.mmu.fault({ gpa: 0, access: 'write' });
    other.mmu.destroy();
    const before = other.mmu.stats.invalidations;
    other.vmm.munmap(hva, MiB);
    expect(other.mmu.stats.invalidations).toBe(before);
    env.vmm.exit();
    expect(env.mmu.mappedLeaves).toBe(0);
  });

  it('setting attributes zaps the mappings whose kind no longer matches, only those', () => {
    const env = setup();
    env.gmemSlot(0, 0, MiB);
    env.hvaSlot(1, MiB, MiB);
    env.setPrivate(0, 16 * PAGE);
    for (let i = 0; i < 32; i++) env.mmu.fault({ gpa: i * PAGE, access: 'read' });
    expect(env.mmu.mappedLeaves).toBe(16); // gfns 16..31 are shared in a gmem slot without MMAP: GUP of hva 0 fails
    env.mmu.fault({ gpa: MiB, access: 'write' });
    // Making [8, 24) shared zaps private leaves 8..15 only.
    env.setPrivate(8 * PAGE, 16 * PAGE, false);
    expect(env.mmu.leaves().map((l) => l.gfn)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 256]);
    // Making the hva page private zaps its shared leaf.
    env.setPrivate(MiB, PAGE);
    expect(env.mmu.lookup(256)).toBeUndefined();
    expect(env.mmu.seq.inProgress).toBe(0);
    env.check();
  });

  it('moving or deleting a memslot zaps its old range', () => {
    const env = setup({ privateMem: false });
    const { hva } = env.hvaSlot(0, 0, MiB);
    env.mmu.fault({ gpa: 0, access: 'write' });
    env.memslots.setUserMemoryRegion2({ slot: 0, flags: 0, guest_phys_addr: GiB, memory_size: MiB, userspace_addr: hva });
    expect(env.mmu.mappedLeaves).toBe(0);
    // A default VM's memslot flush is kvm_mmu_zap_all_fast: the old range's tables go too.
    expect(env.mmu.pageTablePages).toBe(1);
    env.mmu.fault({ gpa: GiB, access: 'write' });
    expect(env.mmu.lookup(GiB / PAGE)).toBeDefined();
    env.check();
    env.mmu.zapAll();
    expect(env.mmu.pageTablePages).toBe(1);
    env.check();
  });
});
