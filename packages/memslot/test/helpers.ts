/** Shared helpers for memslot tests: VM-type configs, a state snapshot and a refusal assertion. */
import { expect } from 'vitest';
import { isKvmError, uapi } from '@cocokit/sdk';
import type { Errno } from '@cocokit/sdk';
import { Memslots } from '../src/index.js';
import type { MemslotsConfig } from '../src/index.js';
import { FakeGuestMemfds } from './fake-binder.js';

export const MiB = 2 ** 20;
export const GiB = 2 ** 30;
export const PAGE = 4096;
/** A legal user address to back slots with. */
export const UADDR = 0x7f00_0000_0000;

/** x86 KVM_X86_DEFAULT_VM on the probed host: no private memory, READONLY, one address space (no SMM). */
export function defaultVm(extra: Partial<MemslotsConfig> = {}): { ms: Memslots; gmem: FakeGuestMemfds } {
  const gmem = new FakeGuestMemfds();
  const ms = new Memslots({
    hasPrivateMem: false,
    readonlyMem: true,
    nrAddressSpaces: 1,
    supportedAttributes: 0,
    binder: gmem,
    ...extra,
  });
  return { ms, gmem };
}

/** x86 KVM_X86_SW_PROTECTED_VM: private memory, PRIVATE attribute, one address space. */
export function swProtectedVm(extra: Partial<MemslotsConfig> = {}): { ms: Memslots; gmem: FakeGuestMemfds } {
  return defaultVm({ hasPrivateMem: true, supportedAttributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE, ...extra });
}

/** Everything a caller can observe, as plain data. */
export function snapshot(ms: Memslots, gmem?: FakeGuestMemfds): unknown {
  const spaces = [];
  for (let as = 0; as < ms.nrAddressSpaces; as++) {
    spaces.push({
      generation: ms.generation(as),
      slots: ms.slots(as).map((s) => ({
        id: s.id,
        baseGfn: s.baseGfn,
        npages: s.npages,
        flags: s.flags,
        uaddr: s.userspaceAddr,
        gmem: s.gmem ? { fd: s.gmem.fd, pgoff: s.gmem.pgoff, gmemOnly: s.gmem.gmemOnly } : undefined,
        dirty: ms.dirtyRanges(s),
        mixed2M: ms.mixedHugepages(s, 1),
        mixed1G: ms.mixedHugepages(s, 2),
      })),
    });
  }
  return {
    spaces,
    attrs: [...ms.attributeRuns()].map((r) => ({ ...r })),
    binderCalls: gmem ? gmem.calls.filter((c) => !c.startsWith('checkBind')).length : 0,
  };
}

/** Asserts `f` throws a KvmError with `errno` and that no observable state changed. */
export function expectRefused(ms: Memslots, errno: Errno, f: () => unknown, gmem?: FakeGuestMemfds): void {
  const before = snapshot(ms, gmem);
  let thrown: unknown;
  try {
    f();
  } catch (e) {
    thrown = e;
  }
  expect(thrown, 'expected a refusal').toBeDefined();
  if (!isKvmError(thrown)) throw thrown;
  expect(thrown.errno, thrown.message).toBe(errno);
  expect(snapshot(ms, gmem)).toEqual(before);
  ms.checkInvariants();
}

/** A region request with defaults. */
export function region(
  slot: number,
  gpa: number,
  size: number,
  extra: Partial<{ flags: number; userspace_addr: number | bigint; guest_memfd: number; guest_memfd_offset: number | bigint }> = {},
) {
  return { slot, flags: 0, guest_phys_addr: gpa, memory_size: size, userspace_addr: UADDR, ...extra };
}
