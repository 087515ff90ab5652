/**
 * Guest RAM the way a VMM lays it out (QEMU's kvm_set_phys_mem for a guest_memfd RAM block): one
 * memslot over a guest_memfd for private memory, with shared memory either in anonymous memory of
 * the VMM process (the 6.18 layout: two copies possible, the double allocation of seed 000) or in
 * the guest_memfd itself, mmapped (in-place conversion: one copy). Memory starts private on VMs
 * with private memory, as QEMU sets the PRIVATE attribute on every guest_memfd-backed range; with
 * in-place conversion on (PROPOSED-CONV-v8 `gmem_in_place_conversion`) the VM's attributes accept no
 * PRIVATE (KVM_CAP_MEMORY_ATTRIBUTES reports 0) and a guest_memfd starts private unless created
 * with INIT_SHARED, so the initial state is the file's, on either layout.
 */
import { KvmError, uapi } from '@cocokit/sdk';
import { MAP, PROT } from '@cocokit/host';
import type { ConversionPath } from './conversion.js';
import type { Vm, VmGuestMemfd } from './vm.js';

/** Options of {@link setupGuestMemory}. */
export interface GuestMemoryOptions {
  /** Guest physical base, bytes. Default 0. */
  readonly gpa?: number;
  readonly size: number;
  /** Which conversion path the layout serves. Default `'attributes'`. */
  readonly path?: ConversionPath;
  /** Memslot id. Default 0. */
  readonly slot?: number;
  /** Extra guest_memfd flags (e.g. HugeTLB). */
  readonly fileFlags?: number;
  /** Extra memslot flags (e.g. KVM_MEM_LOG_DIRTY_PAGES, an extension's flag). */
  readonly slotFlags?: number;
  /** Start private (default: whether the VM has private memory). */
  readonly private?: boolean;
}

/** What {@link setupGuestMemory} made. */
export interface GuestMemory {
  readonly gpa: number;
  readonly size: number;
  readonly slot: number;
  /** The guest_memfd, absent on a VM without private memory using the attributes layout. */
  readonly file: VmGuestMemfd | undefined;
  /** Where shared memory lives in the VMM process. */
  readonly hva: number;
}

/** Creates guest RAM for `vm`: guest_memfd, the shared backing, the memslot, the initial attributes. */
export function setupGuestMemory(vm: Vm, options: GuestMemoryOptions): GuestMemory {
  const gpa = options.gpa ?? 0;
  const size = options.size;
  const slot = options.slot ?? 0;
  const path = options.path ?? 'attributes';
  const privateMem = vm.capabilities.privateMem;
  const startPrivate = options.private ?? privateMem;
  if (startPrivate && !privateMem) throw new KvmError('EINVAL', 'setupGuestMemory', `VM type ${vm.type} has no private memory`);
  const slotFlags = options.slotFlags ?? 0;
  if (!privateMem && path === 'attributes') {
    const hva = vm.process.mmap({ length: size, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    vm.setUserMemoryRegion2({ slot, flags: slotFlags, guest_phys_addr: gpa, memory_size: size, userspace_addr: hva });
    return { gpa, size, slot, file: undefined, hva };
  }
  // Where shareability lives: the VM's attributes (6.18), or the file when the VM's attributes do
  // not offer PRIVATE (kvm_supported_vm_mem_attributes is 0 with in-place conversion on).
  const vmAttributes = (vm.checkExtension(uapi.KVM_CAP_MEMORY_ATTRIBUTES) & uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) !== 0;
  if (path === 'attributes') {
    const initial = !vmAttributes && privateMem && !startPrivate ? uapi.GUEST_MEMFD_FLAG_INIT_SHARED : 0;
    const file = vm.createGuestMemfd({ size, flags: (options.fileFlags ?? 0) | initial });
    const hva = vm.process.mmap({ length: size, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    vm.setUserMemoryRegion2({ slot, flags: slotFlags | uapi.KVM_MEM_GUEST_MEMFD, guest_phys_addr: gpa, memory_size: size, userspace_addr: hva, guest_memfd: file.fd, guest_memfd_offset: 0 });
    if (startPrivate && vmAttributes) vm.setMemoryAttributes({ address: gpa, size, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
    return { gpa, size, slot, file, hva };
  }
  // In place: shareability lives in the file; shared pages are the file's own, mmapped.
  const initial = startPrivate ? 0 : uapi.GUEST_MEMFD_FLAG_INIT_SHARED;
  const file = vm.createGuestMemfd({ size, flags: (options.fileFlags ?? 0) | uapi.GUEST_MEMFD_FLAG_MMAP | initial });
  const hva = file.mmap({ length: size, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED });
  vm.setUserMemoryRegion2({ slot, flags: slotFlags | uapi.KVM_MEM_GUEST_MEMFD, guest_phys_addr: gpa, memory_size: size, userspace_addr: hva, guest_memfd: file.fd, guest_memfd_offset: 0 });
  return { gpa, size, slot, file, hva };
}
