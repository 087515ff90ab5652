/**
 * The seam between memslots and guest_memfd. `KVM_SET_USER_MEMORY_REGION2` with
 * `KVM_MEM_GUEST_MEMFD` binds a range of a guest_memfd file to the new slot (`kvm_gmem_bind` in
 * virt/kvm/guest_memfd.c). The checks live with the file (is the fd a guest_memfd, was it created by
 * this VM, is the range inside it and not bound yet), but memslot must not depend on gmem, so it
 * calls them through this interface. `@cocokit/gmem` implements it per VM; tests use a fake.
 *
 * The split into {@link GuestMemfdBinder.checkBind} and {@link GuestMemfdBinder.bind} is what lets a
 * refused ioctl change no state: memslot runs every check of the ioctl (its own and the binder's),
 * and only then mutates anything, starting with `bind`.
 */
import type { PgOff } from '@cocokit/sdk';
import type { Memslot } from './memslot.js';

/** What a memslot asks of a guest_memfd file: `[offset, offset + npages)` of the file behind `fd`. */
export interface GuestMemfdBindRequest {
  /** `kvm_userspace_memory_region2.guest_memfd`, as the kernel reads it (an `unsigned int` fd). */
  readonly fd: number;
  /** The VM making the request; a file created by another VM is refused with EINVAL. */
  readonly vm: unknown;
  /**
   * `guest_memfd_offset` in pages. May exceed 2^40 when userspace passed a huge (but aligned and
   * non-wrapping) offset: the binder refuses it as "outside the file" (EINVAL), as the kernel does.
   */
  readonly offset: number;
  /** Pages in the slot. */
  readonly npages: number;
}

/** What {@link GuestMemfdBinder.checkBind} learns about the file. */
export interface GuestMemfdBindCheck {
  /**
   * The file's identity (the kernel's `struct file`/`kvm_gmem`): two fds dup'd from one file give the
   * same object. Used by the invariant "no two slots bind overlapping ranges of one file".
   */
  readonly file: object;
  /**
   * The file was created with `GUEST_MEMFD_FLAG_MMAP`: the slot becomes `KVM_MEMSLOT_GMEM_ONLY`
   * (every fault, shared or private, is served from guest_memfd) [6.18].
   */
  readonly gmemOnly: boolean;
}

/** A live binding, as {@link GuestMemfdBinder.bind} returns it; memslot hands it back to `unbind`. */
export interface GuestMemfdBinding {
  /** Same object as {@link GuestMemfdBindCheck.file}. */
  readonly file: object;
  /** First page of the file bound to the slot's first gfn (`slot->gmem.pgoff`). */
  readonly pgoff: PgOff;
  readonly npages: number;
}

/**
 * The guest_memfd operations a memslot needs (`kvm_gmem_bind`/`kvm_gmem_unbind`).
 *
 * How `@cocokit/gmem` implements it: one binder per VM, holding the VM's fd table view.
 * `checkBind` resolves the fd (none → EBADF; not a guest_memfd, e.g. a memfd, the VM fd or /dev/kvm
 * → EINVAL), checks the file's owner VM against `vm` (EINVAL), `offset + npages <= i_size` (EINVAL)
 * and that no page of the range is already in the file's bindings map (EINVAL). `bind` stores the
 * range → slot in the file's bindings (a RangeMap), so invalidations (punch hole, conversion,
 * file release) can find the slots to zap. `unbind` removes it; after the file was closed it is a
 * no-op (the kernel clears `slot->gmem.file` on release and the slot stays).
 */
export interface GuestMemfdBinder {
  /** Every check of `kvm_gmem_bind`, with no side effect. Throws `KvmError` EBADF or EINVAL. */
  checkBind(request: GuestMemfdBindRequest): GuestMemfdBindCheck;
  /**
   * Records the binding. Called only after `checkBind` succeeded for the same request and nothing
   * changed in between (both run under slots_lock), so it must not fail.
   */
  bind(request: GuestMemfdBindRequest, slot: Memslot): GuestMemfdBinding;
  /** Removes a binding made by `bind` (memslot deletion). */
  unbind(binding: GuestMemfdBinding, slot: Memslot): void;
}
