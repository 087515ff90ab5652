/** gmem's binder driving real memslots: KVM_SET_USER_MEMORY_REGION2 with KVM_MEM_GUEST_MEMFD. */
import { describe, expect, it } from 'vitest';
import { isKvmError, uapi } from '@cocokit/sdk';
import { Memslots } from '@cocokit/memslot';
import { recorder, setup } from './test-helpers.js';

describe('binder with @cocokit/memslot', () => {
  it('binds, refuses overlap and foreign fds, invalidates by gfn, and unbinds on delete', () => {
    const { vm } = setup({ privateMem: true });
    const rec = recorder();
    vm.subscribe(rec);
    const slots = new Memslots({ hasPrivateMem: true, readonlyMem: false, nrAddressSpaces: 1, supportedAttributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE, binder: vm.binder, vmToken: vm.vmToken });
    const f = vm.createGuestMemfd({ size: 2 ** 21, flags: uapi.GUEST_MEMFD_FLAG_MMAP });
    const region = { slot: 0, flags: uapi.KVM_MEM_GUEST_MEMFD, guest_phys_addr: 2 ** 30, memory_size: 2 ** 20, userspace_addr: 0, guest_memfd: f.fd, guest_memfd_offset: 0 };
    slots.setUserMemoryRegion2(region);
    const slot = slots.slot(0, 0)!;
    expect(slot.gmem?.gmemOnly).toBe(true);
    let err: unknown;
    try {
      slots.setUserMemoryRegion2({ ...region, slot: 1, guest_phys_addr: 2 ** 31 });
    } catch (e) {
      err = e;
    }
    expect(isKvmError(err, 'EINVAL')).toBe(true);
    const other = vm.fdTable.openOther('memfd');
    expect(() => slots.setUserMemoryRegion2({ ...region, slot: 2, guest_phys_addr: 2 ** 32, guest_memfd: other })).toThrow(/EINVAL/);
    expect(() => slots.setUserMemoryRegion2({ ...region, slot: 2, guest_phys_addr: 2 ** 32, guest_memfd: 77 })).toThrow(/EBADF/);
    expect(vm.getPfn(slot, 2 ** 18 + 3).isPrivate).toBe(true);
    f.fallocate(uapi.FALLOC_FL_KEEP_SIZE | uapi.FALLOC_FL_PUNCH_HOLE, 0, 2 ** 21);
    expect(rec.begins[0]).toMatchObject({ slot, start: 2 ** 18, end: 2 ** 18 + 256, filter: 'private' });
    slots.setUserMemoryRegion2({ ...region, memory_size: 0 });
    slots.setUserMemoryRegion2({ ...region, slot: 1, guest_phys_addr: 2 ** 31 });
    vm.checkInvariants();
    slots.checkInvariants();
  });

  it('finds the binding after a flags-only change replaced the slot object (KVM Userfault toggling its flag)', () => {
    const { vm } = setup({ privateMem: true });
    const slots = new Memslots({
      hasPrivateMem: true,
      readonlyMem: false,
      nrAddressSpaces: 1,
      supportedAttributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE,
      binder: vm.binder,
      vmToken: vm.vmToken,
      extensionFlags: [{ bit: uapi.KVM_MEM_USERFAULT, name: 'KVM_MEM_USERFAULT', allowedOnGuestMemfd: true }],
      userfaultGmemFlagsOnly: true,
    });
    const f = vm.createGuestMemfd({ size: 2 ** 21, flags: 0 });
    const region = { slot: 0, flags: uapi.KVM_MEM_GUEST_MEMFD, guest_phys_addr: 0, memory_size: 2 ** 21, userspace_addr: 0, guest_memfd: f.fd, guest_memfd_offset: 0 };
    slots.setUserMemoryRegion2(region);
    const before = slots.slot(0, 0)!;
    slots.setUserMemoryRegion2({ ...region, flags: uapi.KVM_MEM_GUEST_MEMFD | uapi.KVM_MEM_USERFAULT });
    const after = slots.slot(0, 0)!;
    expect(after).not.toBe(before);
    expect(after.gmem?.binding).toBe(before.gmem?.binding);
    expect(vm.getPfn(after, 7).pfn).toBe(vm.getPfn(before, 7).pfn);
    expect(vm.bindingOf(after)?.file).toBe(f);
    // Deleting the slot through its newer object unbinds the range, so it binds again.
    slots.setUserMemoryRegion2({ ...region, memory_size: 0 });
    expect(() => vm.getPfn(after, 7)).toThrow(/EFAULT/);
    slots.setUserMemoryRegion2({ ...region, slot: 1 });
    expect(vm.getPfn(slots.slot(0, 1)!, 7).isPrivate).toBe(true);
    vm.checkInvariants();
    slots.checkInvariants();
  });
});
