/**
 * KVM_SET_USER_MEMORY_REGION(2), rule by rule (../shared/spec/kvm-semantics.md §1.1, numbered as
 * there), the effects of §1.2, and the cases of tools/testing/selftests/kvm/set_memory_region_test.c
 * that apply to a model. "Probed on Linux 6.18" marks rules checked against the real /dev/kvm of the
 * development machine (6.18.44, default VM type only) with a C probe kept outside the repository.
 */
import { describe, expect, it } from 'vitest';
import { gfn, isKvmError, uapi } from '@cocokit/sdk';
import { Memslots, X86_64_TASK_SIZE_MAX } from './index.js';
import type { MemslotChange } from './index.js';
import { GiB, MiB, PAGE, UADDR, defaultVm, expectRefused, region, snapshot, swProtectedVm } from '../test/helpers.js';

const { KVM_MEM_LOG_DIRTY_PAGES: LOG, KVM_MEM_READONLY: RO, KVM_MEM_GUEST_MEMFD: GMEM, KVM_MEM_USERFAULT: UF } = uapi;

describe('§1.1 rule 2: the v1 ioctl accepts only LOG_DIRTY_PAGES | READONLY', () => {
  it('v1 with GUEST_MEMFD is EINVAL (selftest "v2 only flag"; probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion({ ...region(3, 0, PAGE), flags: GMEM }));
  });
  it('v1 with an unknown flag (1<<3) is EINVAL (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion({ ...region(3, 0, PAGE), flags: 1 << 3 }));
  });
  it('v1 with READONLY and LOG_DIRTY_PAGES creates a slot (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion({ ...region(3, 0, PAGE), flags: RO | LOG });
    expect(ms.slot(0, 3)?.flags).toBe(RO | LOG);
    ms.checkInvariants();
  });
});

describe('§1.1 rule 3: slot ids 32764..32767 are KVM-internal', () => {
  it.each([32764, 32765, 32767])('slot id %i is EINVAL (probed on Linux 6.18: 32764)', (id) => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(id, 0, PAGE)));
  });
  it('slot id 32763 is the last user slot (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(32763, 4 * GiB, PAGE));
    expect(ms.slot(0, 32763)).toBeDefined();
  });
  it('the id check comes before the flags check: EINVAL either way, nothing created', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(32764, 0, PAGE), flags: 1 << 7 }));
  });
});

describe('§1.1 rule 4: check_memory_region_flags', () => {
  it('every flag bit the VM type does not support is EINVAL (selftest test_invalid_memory_region_flags)', () => {
    const { ms } = defaultVm();
    for (let i = 0; i < 32; i++) {
      const bit = 2 ** i;
      if (bit === LOG || bit === RO || bit === GMEM) continue;
      expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 2 * MiB), flags: bit }));
    }
  });
  it('GUEST_MEMFD is a valid flag on a default VM [6.18]; the selftest\'s EINVAL there comes from the binding (fd 0 is not a guest_memfd)', () => {
    const { ms, gmem } = defaultVm();
    const notGmem = gmem.openOther();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 2 * MiB), flags: GMEM, guest_memfd: notGmem }), gmem);
    const fd = gmem.create(ms, 512);
    ms.setUserMemoryRegion2({ ...region(0, 0, 2 * MiB), flags: GMEM, guest_memfd: fd });
    expect(ms.slot(0, 0)?.gmem?.fd).toBe(fd);
  });
  it('[old] ≤6.17 style config without guest_memfd: GUEST_MEMFD is an invalid flag', () => {
    const { ms, gmem } = defaultVm({ guestMemfd: false });
    const fd = gmem.create(ms, 512);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 2 * MiB), flags: GMEM, guest_memfd: fd }), gmem);
  });
  it('LOG_DIRTY_PAGES | GUEST_MEMFD is EINVAL: dirty logging private memory is unsupported (selftest; probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 512);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 2 * MiB), flags: GMEM | LOG, guest_memfd: fd }), gmem);
  });
  it('READONLY | GUEST_MEMFD is EINVAL (probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 512);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 2 * MiB), flags: GMEM | RO, guest_memfd: fd }), gmem);
  });
  it('READONLY on an arch without read-only memory is EINVAL', () => {
    const { ms } = defaultVm({ readonlyMem: false });
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, PAGE), flags: RO }));
  });
  it('KVM_MEM_USERFAULT (1<<3) is EINVAL without the extension (probed on Linux 6.18), valid with it', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, PAGE), flags: UF }));
    const ext = defaultVm({ extensionFlags: [{ bit: UF, name: 'KVM_MEM_USERFAULT', allowedOnGuestMemfd: true }] });
    ext.ms.setUserMemoryRegion2({ ...region(0, 0, PAGE), flags: UF });
    expect(ext.ms.slot(0, 0)?.flags).toBe(UF);
  });
  it('an extension flag not allowed on guest_memfd is EINVAL together with GUEST_MEMFD', () => {
    const { ms, gmem } = swProtectedVm({ extensionFlags: [{ bit: 1 << 4, name: 'X', allowedOnGuestMemfd: false }] });
    const fd = gmem.create(ms, 512);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 2 * MiB), flags: GMEM | (1 << 4), guest_memfd: fd }), gmem);
    ms.setUserMemoryRegion2({ ...region(1, 4 * MiB, 2 * MiB), flags: 1 << 4 });
  });
  it('an extension may not claim a built-in bit or a bit another extension claimed', () => {
    expect(() => defaultVm({ extensionFlags: [{ bit: RO, name: 'X', allowedOnGuestMemfd: true }] })).toThrow(/claimed/);
    expect(() => defaultVm({ extensionFlags: [{ bit: 3, name: 'two bits', allowedOnGuestMemfd: true }] })).toThrow(/single bit/);
  });
});

describe('§1.1 rules 5-11: kvm_set_memory_region sanity checks', () => {
  it('rule 5: memory_size not a multiple of 4096 is EINVAL', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(0, 0, PAGE + 1)));
  });
  it('rule 6: guest_phys_addr not page aligned is EINVAL', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(0, 123, PAGE)));
  });
  it('rule 7: userspace_addr not page aligned is EINVAL', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(0, 0, PAGE, { userspace_addr: UADDR + 8 })));
  });
  it('rule 7: userspace_addr + size must stay within TASK_SIZE_MAX (probed on Linux 6.18: end 2^47-4096 ok, 2^47 EINVAL)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, PAGE, { userspace_addr: X86_64_TASK_SIZE_MAX - PAGE }));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(1, MiB, PAGE, { userspace_addr: X86_64_TASK_SIZE_MAX })));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(1, MiB, 2 * PAGE, { userspace_addr: X86_64_TASK_SIZE_MAX - PAGE })));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(1, MiB, PAGE, { userspace_addr: 2n ** 56n })));
  });
  it('rule 7: userspace_addr 0 is legal, the backing need not exist (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, 64 * PAGE, { userspace_addr: 0 }));
    expect(ms.slot(0, 0)?.userspaceAddr).toBe(0);
  });
  it('rule 8: guest_memfd_offset not page aligned is EINVAL (selftest "Unaligned offset should fail")', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 512);
    for (const off of [1, 8, 2048, 4095]) {
      expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, MiB), flags: GMEM, guest_memfd: fd, guest_memfd_offset: off }), gmem);
    }
  });
  it('rule 8: guest_memfd_offset + size wrapping is EINVAL (probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 512);
    const off = 2n ** 64n - 4096n;
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 16 * PAGE), flags: GMEM, guest_memfd: fd, guest_memfd_offset: off }), gmem);
  });
  it('rule 8: without GUEST_MEMFD the guest_memfd fields are not looked at (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2({ ...region(12, 0, PAGE), guest_memfd: 0xffff_ffff, guest_memfd_offset: 3 });
    expect(ms.slot(0, 12)?.gmem).toBeUndefined();
  });
  it('rule 9: as_id 1 is EINVAL on a VM with one address space (probed on Linux 6.18: no SMM, MULTI_ADDRESS_SPACE=0)', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region((1 << 16) | 1, 0, PAGE)));
  });
  it('rule 9: with two address spaces (x86 SMM), slots of as 1 may overlap those of as 0', () => {
    const { ms } = defaultVm({ nrAddressSpaces: 2 });
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    ms.setUserMemoryRegion2(region((1 << 16) | 0, 0, MiB));
    expect(ms.lookup(gfn(5), 1)?.asId).toBe(1);
    expect(ms.lookup(gfn(5), 0)?.asId).toBe(0);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region((2 << 16) | 0, 0, MiB)));
    ms.checkInvariants();
  });
  it('rule 10: guest_phys_addr + size wrapping is EINVAL (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 2 * PAGE), guest_phys_addr: 2n ** 64n - 4096n }));
  });
  it('rule 11: 2^31-1 pages is the largest slot, 2^31 pages is EINVAL (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(2, 0, (2 ** 31 - 1) * PAGE, { userspace_addr: 0 }));
    expect(ms.slot(0, 2)?.npages).toBe(2 ** 31 - 1);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(3, 2 ** 44, 2 ** 31 * PAGE, { userspace_addr: 0 })));
  });
  it('non-integers, negatives and values beyond a u64 are EINVAL at the model surface', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(0, 0.5, PAGE)));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(0, -4096, PAGE)));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, PAGE), guest_phys_addr: 2n ** 64n }));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, PAGE), slot: -1 }));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, PAGE), flags: 2 ** 32 }));
  });
});

describe('§1.1 rule 13: delete (memory_size 0)', () => {
  it('deleting a slot that does not exist is EINVAL (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(5, 0, 0)));
  });
  it('a delete request is still validated: an invalid flag is EINVAL (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 0), flags: 1 << 5 }));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 0), flags: UF }));
  });
  it('a delete request is still validated: a misaligned gpa is EINVAL (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(0, 123, 0)));
  });
  it('otherwise the request\'s addresses are ignored: delete at another gpa and uaddr removes the slot', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    ms.setUserMemoryRegion2(region(0, 8 * GiB, 0, { userspace_addr: 0 }));
    expect(ms.slot(0, 0)).toBeUndefined();
    ms.checkInvariants();
  });
  it('a guest_memfd slot is deleted with GUEST_MEMFD set and fd -1 (selftest overlapping-bindings setup; probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 512);
    ms.setUserMemoryRegion2({ ...region(0, 0, MiB), flags: GMEM, guest_memfd: fd });
    ms.setUserMemoryRegion2({ ...region(0, 0, 0), flags: GMEM, guest_memfd: 0xffff_ffff });
    expect(ms.slot(0, 0)).toBeUndefined();
    expect(gmem.bindingsOf(fd)).toHaveLength(0);
  });
  it('a delete with GUEST_MEMFD and a misaligned guest_memfd_offset is EINVAL (probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 512);
    ms.setUserMemoryRegion2({ ...region(0, 0, MiB), flags: GMEM, guest_memfd: fd });
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, 0), flags: GMEM, guest_memfd: 0xffff_ffff, guest_memfd_offset: 5 }), gmem);
  });
});

describe('§1.1 rule 15: modifying an existing slot', () => {
  it('re-issuing the identical request is a no-op returning 0: no generation bump, no notification (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2({ ...region(0, 0, MiB), flags: LOG });
    const before = snapshot(ms);
    const seen: string[] = [];
    ms.subscribe({ beforeChange: (c) => void seen.push(c.kind) });
    ms.setUserMemoryRegion2({ ...region(0, 0, MiB), flags: LOG });
    expect(snapshot(ms)).toEqual(before);
    expect(seen).toEqual([]);
  });
  it('resizing an existing slot is EINVAL (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(0, 0, MiB / 2)));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(0, 0, 2 * MiB)));
  });
  it('changing userspace_addr of an existing slot is EINVAL (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(0, 0, MiB, { userspace_addr: UADDR + PAGE })));
  });
  it('toggling READONLY on an existing slot is EINVAL (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(0, 0, MiB), flags: RO }));
    ms.setUserMemoryRegion2({ ...region(1, MiB, MiB), flags: RO });
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(1, MiB, MiB)));
  });
  it('guest_memfd slots are immutable: the identical request, a move and a flags change are EINVAL (probed on Linux 6.18: identical, move)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 512);
    const req = { ...region(11, 8 * GiB, 16 * PAGE), flags: GMEM, guest_memfd: fd };
    ms.setUserMemoryRegion2(req);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(req), gmem);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...req, guest_phys_addr: 16 * GiB }), gmem);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...req, guest_memfd_offset: 16 * PAGE }), gmem);
  });
  it('changing the guest_memfd binding by dropping GUEST_MEMFD in a flags-only request is EINVAL (model; 6.18 source has no such check, not probed: it would leave the binding dangling)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 512);
    ms.setUserMemoryRegion2({ ...region(11, 8 * GiB, 16 * PAGE), flags: GMEM, guest_memfd: fd });
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(11, 8 * GiB, 16 * PAGE)), gmem);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...region(11, 8 * GiB, 16 * PAGE), flags: LOG }), gmem);
  });
  it('a different gpa with the same size and uaddr is a MOVE; different flags only is FLAGS_ONLY', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    const kinds: string[] = [];
    ms.subscribe({ afterChange: (c) => void kinds.push(c.kind) });
    ms.setUserMemoryRegion2(region(0, GiB, MiB));
    ms.setUserMemoryRegion2({ ...region(0, GiB, MiB), flags: LOG });
    ms.setUserMemoryRegion2({ ...region(0, 2 * GiB, MiB), flags: 0 });
    expect(kinds).toEqual(['move', 'flags', 'move']);
    expect(ms.slot(0, 0)?.flags).toBe(0);
    ms.checkInvariants();
  });
  it('PROPOSED-UF option: a guest_memfd slot accepts a flags-only USERFAULT toggle and an identical re-issue; moving it is EINVAL', () => {
    const { ms, gmem } = swProtectedVm({
      userfaultGmemFlagsOnly: true,
      extensionFlags: [{ bit: UF, name: 'KVM_MEM_USERFAULT', allowedOnGuestMemfd: true }],
    });
    const fd = gmem.create(ms, 512);
    const req = { ...region(0, 0, MiB), flags: GMEM, guest_memfd: fd };
    ms.setUserMemoryRegion2(req);
    const gen = ms.generation();
    ms.setUserMemoryRegion2(req);
    expect(ms.generation()).toBe(gen);
    const changes: MemslotChange[] = [];
    ms.subscribe({ afterChange: (c) => void changes.push(c) });
    ms.setUserMemoryRegion2({ ...req, flags: GMEM | UF });
    expect(changes[0]).toMatchObject({ kind: 'flags', changedFlags: UF });
    expect(ms.slot(0, 0)?.gmem?.fd).toBe(fd);
    expect(gmem.bindingsOf(fd)).toHaveLength(1);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...req, flags: GMEM | UF, guest_phys_addr: GiB }), gmem);
  });
});

describe('§1.1 rule 16: no overlap with another slot of the address space', () => {
  it('creating a slot that overlaps another is EEXIST; adjacent is fine (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, 128 * PAGE));
    expectRefused(ms, 'EEXIST', () => ms.setUserMemoryRegion2(region(1, 64 * PAGE, 128 * PAGE)));
    expectRefused(ms, 'EEXIST', () => ms.setUserMemoryRegion2(region(1, 0, PAGE)));
    ms.setUserMemoryRegion2(region(1, 128 * PAGE, 100 * PAGE));
    ms.checkInvariants();
  });
  it('moving a slot onto another is EEXIST (probed on Linux 6.18)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, 128 * PAGE));
    ms.setUserMemoryRegion2(region(1, 128 * PAGE, 100 * PAGE));
    expectRefused(ms, 'EEXIST', () => ms.setUserMemoryRegion2(region(1, PAGE, 100 * PAGE)));
  });
  it('a slot may move onto part of its own old range', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, MiB, MiB));
    ms.setUserMemoryRegion2(region(0, MiB - PAGE, MiB));
    expect(ms.slot(0, 0)?.baseGfn).toBe(255);
    ms.checkInvariants();
  });
});

describe('§1.1 rule 18: the guest_memfd binding (kvm_gmem_bind)', () => {
  const gmemReq = (fd: number, extra: Partial<ReturnType<typeof region>> & { guest_memfd_offset?: number } = {}) => ({
    ...region(10, 4 * GiB, 16 * PAGE),
    flags: GMEM,
    guest_memfd: fd,
    ...extra,
  });
  it('fd -1 is EBADF (probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    expectRefused(ms, 'EBADF', () => ms.setUserMemoryRegion2(gmemReq(0xffff_ffff)), gmem);
  });
  it('a file that is not a guest_memfd (KVM fd, VM fd, memfd) is EINVAL (selftest; probed on Linux 6.18: VM fd)', () => {
    const { ms, gmem } = swProtectedVm();
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(gmemReq(gmem.openOther())), gmem);
  });
  it('another VM\'s guest_memfd is EINVAL (selftest "Other VM\'s guest_memfd() should fail"; probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create({ otherVm: true }, 64);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(gmemReq(fd)), gmem);
  });
  it('offset + size beyond the file is EINVAL, offset + size == i_size is fine (probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 64);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(gmemReq(fd, { guest_memfd_offset: 56 * PAGE })), gmem);
    ms.setUserMemoryRegion2(gmemReq(fd, { guest_memfd_offset: 48 * PAGE }));
    expect(ms.slot(0, 10)?.gmem?.pgoff).toBe(48);
  });
  it('a huge aligned offset (2^63, a negative loff_t) is EINVAL (probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 64);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...gmemReq(fd), guest_memfd_offset: 2n ** 63n }), gmem);
  });
  it('binding a range of the file that another slot binds is EINVAL, even at a disjoint gpa (probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 64);
    ms.setUserMemoryRegion2(gmemReq(fd, { guest_memfd_offset: 48 * PAGE }));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...gmemReq(fd), slot: 11, guest_phys_addr: 8 * GiB, guest_memfd_offset: 40 * PAGE }), gmem);
    // Through a dup'd fd it is the same file.
    const dupFd = gmem.dup(fd);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...gmemReq(dupFd), slot: 11, guest_phys_addr: 8 * GiB, guest_memfd_offset: 50 * PAGE }), gmem);
    ms.setUserMemoryRegion2({ ...gmemReq(fd), slot: 11, guest_phys_addr: 8 * GiB, guest_memfd_offset: 0 });
    ms.checkInvariants();
  });
  it('selftest "Overlapping guest_memfd() bindings should fail with EEXIST" gets EEXIST from the gpa overlap (rule 16), not from the binding', () => {
    const { ms, gmem } = swProtectedVm();
    const SIZE = 2 * MiB;
    const GPA = GiB;
    const fd = gmem.create(ms, (4 * SIZE) / PAGE);
    ms.setUserMemoryRegion2({ ...region(10, GPA, 2 * SIZE), flags: GMEM, guest_memfd: fd });
    ms.setUserMemoryRegion2({ ...region(11, GPA * 2, 2 * SIZE), flags: GMEM, guest_memfd: fd, guest_memfd_offset: 2 * SIZE });
    ms.setUserMemoryRegion2({ ...region(10, GPA, 0), flags: GMEM, guest_memfd: 0xffff_ffff });
    // Front half, then back half of slot 11: both overlap slot 11's gpa range as well as its file range.
    expectRefused(ms, 'EEXIST', () => ms.setUserMemoryRegion2({ ...region(10, GPA * 2 - SIZE, 2 * SIZE), flags: GMEM, guest_memfd: fd }), gmem);
    expectRefused(ms, 'EEXIST', () => ms.setUserMemoryRegion2({ ...region(10, GPA * 2 + SIZE, 2 * SIZE), flags: GMEM, guest_memfd: fd }), gmem);
  });
  it('the gpa overlap is checked before the fd: EEXIST wins over a bad fd (probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    ms.setUserMemoryRegion2(region(0, 4 * GiB, MiB));
    expectRefused(ms, 'EEXIST', () => ms.setUserMemoryRegion2(gmemReq(0xffff_ffff)), gmem);
  });
  it('without a binder every guest_memfd fd is EBADF', () => {
    const ms = new Memslots({ hasPrivateMem: true, readonlyMem: true, nrAddressSpaces: 1, supportedAttributes: 8 });
    expectRefused(ms, 'EBADF', () => ms.setUserMemoryRegion2(gmemReq(3)));
  });
  it('a refused create binds nothing: the binder only saw checkBind', () => {
    const { ms, gmem } = swProtectedVm({ maxGpaBits: 40 });
    const fd = gmem.create(ms, 64);
    // Passes the binder's checks, then fails rule 19.
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...gmemReq(fd), guest_phys_addr: 2 ** 40 }), gmem);
    expect(gmem.calls).toEqual([`checkBind(${fd})`]);
  });
  it('a file with GUEST_MEMFD_FLAG_MMAP makes the slot GMEM_ONLY [6.18]', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 64, { mmap: true });
    ms.setUserMemoryRegion2(gmemReq(fd));
    expect(ms.slot(0, 10)?.gmem?.gmemOnly).toBe(true);
  });
  it('selftest test_add_private_memory_region: after the refusals, a good binding at offset 0 succeeds', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 512);
    for (let i = 1; i < PAGE; i += 511) {
      expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2({ ...gmemReq(fd), guest_memfd_offset: i }), gmem);
    }
    ms.setUserMemoryRegion2(gmemReq(fd));
    ms.checkInvariants();
  });
});

describe('§1.1 rule 19: x86 arch prepare', () => {
  it('a slot ending above the MMU\'s max gfn is EINVAL (probed on Linux 6.18: gpa 2^52-4096 ok, 2^52 EINVAL)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(2, 2 ** 52 - PAGE, PAGE));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(3, 2 ** 52, PAGE)));
    const small = defaultVm({ maxGpaBits: 46 }).ms;
    expectRefused(small, 'EINVAL', () => small.setUserMemoryRegion2(region(0, 2 ** 46 - PAGE, 2 * PAGE)));
  });
  it('rule 19 applies to a move as well', () => {
    const { ms } = defaultVm({ maxGpaBits: 46 });
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(0, 2 ** 46, MiB)));
  });
});

describe('§1.2 effects', () => {
  it('delete: the old slot is published INVALID and zapped before the new layout; lookups see it invalid in the window', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    const seen: Array<{ phase: string; invalid: boolean | undefined; found: boolean }> = [];
    ms.subscribe({
      beforeChange: (c) => void seen.push({ phase: 'before', invalid: c.old?.invalid, found: ms.lookup(gfn(1))?.invalid === true }),
      afterChange: () => void seen.push({ phase: 'after', invalid: undefined, found: ms.lookup(gfn(1)) !== undefined }),
    });
    ms.setUserMemoryRegion2(region(0, 0, 0));
    expect(seen).toEqual([
      { phase: 'before', invalid: true, found: true },
      { phase: 'after', invalid: undefined, found: false },
    ]);
  });
  it('move: beforeChange carries the old range to zap, afterChange the new one', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    const changes: MemslotChange[] = [];
    ms.subscribe({ beforeChange: (c) => void changes.push(c) });
    ms.setUserMemoryRegion2(region(0, GiB, MiB));
    expect(changes[0]).toMatchObject({ kind: 'move', old: { baseGfn: 0, invalid: true }, new: { baseGfn: GiB / PAGE } });
    expect(ms.lookup(gfn(0))).toBeUndefined();
    expect(ms.lookup(gfn(GiB / PAGE))?.id).toBe(0);
  });
  it('flags-only: enabling dirty logging says "enable" (write-protect/split), disabling says "disable" (recover huge pages)', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    const got: Array<MemslotChange['dirtyLogging']> = [];
    ms.subscribe({ afterChange: (c) => void got.push(c.dirtyLogging) });
    ms.setUserMemoryRegion2({ ...region(0, 0, MiB), flags: LOG });
    expect(ms.slot(0, 0)?.dirtyLogging).toBe(true);
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expect(ms.slot(0, 0)?.dirtyLogging).toBe(false);
    expect(got).toEqual(['enable', 'disable']);
  });
  it('the generation steps by the number of address spaces per swap: create/flags one swap, delete/move two', () => {
    const { ms } = defaultVm({ nrAddressSpaces: 2 });
    expect([ms.generation(0), ms.generation(1)]).toEqual([0, 1]);
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expect(ms.generation(0)).toBe(2);
    ms.setUserMemoryRegion2({ ...region(0, 0, MiB), flags: LOG });
    expect(ms.generation(0)).toBe(4);
    ms.setUserMemoryRegion2({ ...region(0, GiB, MiB), flags: LOG });
    expect(ms.generation(0)).toBe(8);
    ms.setUserMemoryRegion2(region(0, 0, 0));
    expect(ms.generation(0)).toBe(12);
    expect(ms.generation(1)).toBe(1);
    ms.checkInvariants();
  });
  it('deleting a guest_memfd slot unbinds it: the same file range can be bound again (probed on Linux 6.18)', () => {
    const { ms, gmem } = swProtectedVm();
    const fd = gmem.create(ms, 64);
    const req = { ...region(10, 4 * GiB, 16 * PAGE), flags: GMEM, guest_memfd: fd, guest_memfd_offset: 48 * PAGE };
    ms.setUserMemoryRegion2(req);
    ms.setUserMemoryRegion2(region(10, 0, 0));
    expect(gmem.bindingsOf(fd)).toHaveLength(0);
    ms.setUserMemoryRegion2(req);
    expect(gmem.bindingsOf(fd)).toHaveLength(1);
    ms.checkInvariants();
  });
  it('memslot changes do not touch memory attributes', () => {
    const { ms } = swProtectedVm();
    ms.setUserMemoryRegion2(region(0, 0, 4 * MiB));
    ms.setMemoryAttributes({ address: 0, size: 2 * MiB, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
    ms.setUserMemoryRegion2(region(0, 0, 0));
    expect(ms.getAttributes(gfn(5))).toBe(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
  });
});

describe('lookups', () => {
  it('lookup finds the containing slot and nothing between slots; no slots at all finds nothing (selftest test_zero_memory_regions)', () => {
    const { ms } = defaultVm();
    expect(ms.lookup(gfn(0))).toBeUndefined();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    ms.setUserMemoryRegion2(region(1, 2 * MiB, MiB));
    expect(ms.lookup(gfn(255))?.id).toBe(0);
    expect(ms.lookup(gfn(256))).toBeUndefined();
    expect(ms.lookup(gfn(512))?.id).toBe(1);
    expect(ms.lookup(gfn(768))).toBeUndefined();
    expect(ms.lookup(gfn(0), 7)).toBeUndefined();
  });
  it('the last-hit cache never returns a deleted or moved slot', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expect(ms.lookup(gfn(3))?.id).toBe(0);
    ms.setUserMemoryRegion2(region(0, GiB, MiB));
    expect(ms.lookup(gfn(3))).toBeUndefined();
  });
  it('slotsInRange yields the overlapping slots in gfn order', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(5, 0, MiB));
    ms.setUserMemoryRegion2(region(3, 2 * MiB, MiB));
    ms.setUserMemoryRegion2(region(4, 4 * MiB, MiB));
    expect([...ms.slotsInRange(0, gfn(255), gfn(1025))].map((s) => s.id)).toEqual([5, 3, 4]);
    expect([...ms.slotsInRange(0, gfn(256), gfn(512))]).toEqual([]);
    expect([...ms.slotsInRange(0, gfn(300), gfn(513))].map((s) => s.id)).toEqual([3]);
  });
});

describe('set_memory_region_test.c', () => {
  it('test_add_max_memory_regions: KVM_CAP_NR_MEMSLOTS (32764) slots fit, one more is EINVAL', () => {
    const { ms } = defaultVm();
    for (let slot = 0; slot < uapi.KVM_USER_MEM_SLOTS; slot++) {
      ms.setUserMemoryRegion2(region(slot, slot * 2 * MiB, 2 * MiB, { userspace_addr: UADDR }));
    }
    expect(ms.slots()).toHaveLength(32764);
    expectRefused(ms, 'EINVAL', () => ms.setUserMemoryRegion2(region(32764, 32764 * 2 * MiB, 2 * MiB)));
    expect(ms.lookup(gfn(12345 * 512 + 7))?.id).toBe(12345);
  });
  it('test_move_memory_region: shift the base by one page and back; the old gfn is in no slot meanwhile', () => {
    const { ms } = defaultVm();
    const GPA = 0xc000_0000;
    ms.setUserMemoryRegion2(region(10, GPA, 2 * MiB));
    ms.setUserMemoryRegion2(region(10, GPA - PAGE, 2 * MiB));
    expect(ms.lookup(gfn(GPA / PAGE + 511))).toBeUndefined();
    expect(ms.lookup(gfn(GPA / PAGE - 1))?.id).toBe(10);
    ms.setUserMemoryRegion2(region(10, GPA, 2 * MiB));
    expect(ms.lookup(gfn(GPA / PAGE + 511))?.id).toBe(10);
    ms.checkInvariants();
  });
  it('test_delete_memory_region: delete, recreate, delete again, then the primary slot', () => {
    const { ms } = defaultVm();
    const GPA = 0xc000_0000;
    ms.setUserMemoryRegion2(region(0, 0, 2 * MiB));
    ms.setUserMemoryRegion2(region(10, GPA, 2 * MiB));
    ms.setUserMemoryRegion2(region(10, GPA, 0));
    ms.setUserMemoryRegion2(region(10, GPA, 2 * MiB));
    expect(ms.lookup(gfn(GPA / PAGE))?.id).toBe(10);
    ms.setUserMemoryRegion2(region(10, GPA, 0));
    ms.setUserMemoryRegion2(region(0, 0, 0));
    expect(ms.slots()).toEqual([]);
    ms.checkInvariants();
  });
});

it('errors are KvmErrors naming the ioctl', () => {
  const { ms } = defaultVm();
  try {
    ms.setUserMemoryRegion2(region(0, 1, PAGE));
  } catch (e) {
    expect(isKvmError(e, 'EINVAL')).toBe(true);
    expect((e as Error).message).toMatch(/^KVM_SET_USER_MEMORY_REGION2: EINVAL/);
  }
});
