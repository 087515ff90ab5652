/**
 * What a guest_memfd file needs from the VM that created it (kvm_gmem's `kvm` pointer): the host,
 * the sim, the arch hooks, the VM's options and the invalidation listeners. Internal: built by
 * `GmemVm`.
 */
import type { ArchVm, Gfn, Sim } from '@cocokit/sdk';
import type { Host } from '@cocokit/host';
import type { GmemInvalidationListener } from './invalidation.js';
import type { HugeFolioPolicy } from './guest-memfd.js';

/** The guest_memfd lifecycle hooks of the arch contract that gmem calls. */
export type GmemArchHooks = Pick<ArchVm, 'gmemPrepare' | 'gmemInvalidate' | 'populate'>;

/**
 * The VM's memory attributes (`kvm->mem_attr_array`) as guest_memfd asks them;
 * `@cocokit/memslot`'s `Memslots` satisfies it structurally, so gmem does not depend on memslot.
 */
export interface GmemMemoryAttributes {
  /**
   * `kvm_range_has_memory_attributes(kvm, start, end, mask, attrs)`: whether every gfn of
   * `[start, end)` has `(attributes & mask) == attrs` (note the order: `attrs` first).
   */
  rangeHasAttributes(start: Gfn | number, end: Gfn | number, attrs: number, mask?: number): boolean;
}

/** Proposals a VM may enable, each named after where it comes from. */
export interface GmemProposals {
  /** PROPOSED-CONV-v8: `KVM_SET_MEMORY_ATTRIBUTES2` on the guest_memfd (in-place conversion), INIT_SHARED for CoCo VMs. */
  readonly memoryAttributes2: boolean;
  /** PROPOSED-CONV-v2: `KVM_GMEM_CONVERT_SHARED/PRIVATE`, the first generation's entry points. */
  readonly gmemConvert: boolean;
  /** PROPOSED-CONV-v2 / seed 003: `GUEST_MEMFD_FLAG_INIT_PRIVATE` is accepted. */
  readonly initPrivate: boolean;
  /** Seed 002: `GUEST_MEMFD_FLAG_NO_DIRECT_MAP` is accepted. */
  readonly noDirectMap: boolean;
  /** PROPOSED-CONV-v2: `GUEST_MEMFD_FLAG_HUGETLB` with 2 MiB / 1 GiB folios is accepted. */
  readonly hugetlb: boolean;
}

/** @internal */
export interface GmemContext {
  readonly host: Host;
  readonly sim: Sim | undefined;
  readonly arch: GmemArchHooks | undefined;
  readonly privateMem: boolean;
  readonly preparedTracking: boolean;
  readonly hugePolicy: HugeFolioPolicy;
  readonly proposals: GmemProposals;
  /**
   * The VM's attributes when they, not the file's shareability, say what is private (no in-place
   * conversion proposal enabled); `undefined` otherwise or when the VM gave none.
   */
  readonly vmAttributes: GmemMemoryAttributes | undefined;
  readonly listeners: readonly GmemInvalidationListener[];
  closeFd(fd: number): void;
  /** The file was released (last fd closed and last mapping gone). */
  released(file: object): void;
}
