import { describe, expect, it } from 'vitest';
import { errnoOf } from '@cocokit/sdk/testing';
import { type Errno, type KvmPreFaultMemory } from '@cocokit/sdk';
import { SPTE } from './page-table.js';
import { MiB, setup } from './test-env.js';

const PAGE = 4096;

describe('KVM_PRE_FAULT_MEMORY', () => {
  it('refuses bad arguments with EINVAL and changes nothing', () => {
    const env = setup({ privateMem: false });
    env.hvaSlot(0, 0, 2 * MiB);
    for (const r of [
      { gpa: 0, size: PAGE, flags: 1 },
      { gpa: 1, size: PAGE },
      { gpa: 0, size: 100 },
      { gpa: 0, size: 0 },
      { gpa: 2 ** 52 - PAGE, size: 2 * PAGE },
      { gpa: -4096, size: PAGE },
    ]) {
      expect(errnoOf(() => env.mmu.preFaultMemory({ ...r }))).toBe('EINVAL');
    }
    expect(env.mmu.mappedLeaves).toBe(0);
  });

  it('follows the selftest: a 2M+4K slot, partial progress, then ENOENT past the slot', () => {
    const env = setup({ privateMem: false });
    env.hvaSlot(0, 0, 2 * MiB + PAGE);
    const a: KvmPreFaultMemory = { gpa: 0, size: 2 * MiB };
    expect(env.mmu.preFaultMemory(a)).toBe(0);
    expect(a).toEqual({ gpa: 2 * MiB, size: 0 });
    const b: KvmPreFaultMemory = { gpa: 2 * MiB, size: 2 * PAGE };
    expect(env.mmu.preFaultMemory(b)).toBe(0);
    expect(b).toEqual({ gpa: 2 * MiB + PAGE, size: PAGE });
    expect(errnoOf(() => env.mmu.preFaultMemory(b))).toBe('ENOENT');
    expect(b).toEqual({ gpa: 2 * MiB + PAGE, size: PAGE }); // nothing changed
    // Pre-faulted pages are mapped for read, without the Accessed bit.
    expect(env.mmu.lookup(3)!.flags & SPTE.ACCESSED).toBe(0);
    expect(env.mmu.mappedLeaves).toBe(513);
    env.check();
  });

  it('bigint in, bigint out; private kind follows the attribute', () => {
    const env = setup();
    env.gmemSlot(0, 0, MiB);
    env.setPrivate(0, MiB);
    const r: KvmPreFaultMemory = { gpa: 0n, size: 8192n };
    expect(env.mmu.preFaultMemory(r)).toBe(0);
    expect(r).toEqual({ gpa: 8192n, size: 0n });
    expect(env.mmu.lookup(1)!.flags & SPTE.PRIVATE).toBe(SPTE.PRIVATE);
  });

  it('EOPNOTSUPP when not allowed, EFAULT for a private gfn without guest_memfd, EINTR on a signal', () => {
    let allowed = false;
    const env = setup({ preFaultAllowed: () => allowed });
    env.hvaSlot(0, 0, MiB);
    expect(errnoOf(() => env.mmu.preFaultMemory({ gpa: 0, size: PAGE }))).toBe('EOPNOTSUPP');
    allowed = true;
    env.setPrivate(0, PAGE);
    expect(errnoOf(() => env.mmu.preFaultMemory({ gpa: 0, size: PAGE }))).toBe('EFAULT');
    expect(errnoOf(() => env.mmu.preFaultMemory({ gpa: PAGE, size: PAGE }, { signalPending: () => true }))).toBe('EINTR');
    // A failure after progress returns 0 with what is left.
    const r = { gpa: PAGE, size: 3 * PAGE };
    let n = 0;
    expect(env.mmu.preFaultMemory(r, { signalPending: () => ++n > 2 })).toBe(0);
    expect(r).toEqual({ gpa: 3 * PAGE, size: PAGE });
  });

  it('EAGAIN while the memslot is being deleted', () => {
    const env = setup({ privateMem: false });
    env.hvaSlot(0, 0, MiB);
    let seen: Errno | undefined;
    env.memslots.subscribe({ beforeChange: () => void (seen = errnoOf(() => env.mmu.preFaultMemory({ gpa: 0, size: PAGE })))});
    env.memslots.setUserMemoryRegion2({ slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0, userspace_addr: 0 });
    expect(seen).toBe('EAGAIN');
  });

  it('EIO once the VM is dead', () => {
    const env = setup({ privateMem: false });
    env.hvaSlot(0, 0, MiB);
    env.mmu.bugged = 'test';
    expect(errnoOf(() => env.mmu.preFaultMemory({ gpa: 0, size: PAGE }))).toBe('EIO');
  });
});
