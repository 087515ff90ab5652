/**
 * The shapes the MMU's callers see: fault requests, outcomes and exits, the extension hook, options.
 */
import type { Access, ArchExit, ArchVm, Errno, Gfn, KvmMemoryFault, MappingLevel, Pfn, Sim } from '@cocokit/sdk';
import type { Host, HostProcess } from '@cocokit/host';
import type { GmemVm } from '@cocokit/gmem';
import type { Memslot, Memslots } from '@cocokit/memslot';

/** A vCPU's EPT violation / NPF as the MMU receives it. */
export interface FaultRequest {
  /** Guest physical address, bytes (may carry the arch's shared bit; classifyFault strips it). */
  readonly gpa: number;
  readonly access: Access;
  /** SNP: the access was encrypted (C-bit); see the sdk's `GuestFault.encrypted`. */
  readonly encrypted?: boolean;
}

/** `KVM_EXIT_MEMORY_FAULT`: KVM_RUN fails with `errno` and `kvm_run.memory_fault` filled (kvm_prepare_memory_fault_exit). */
export interface MemoryFaultExit {
  readonly reason: 'MEMORY_FAULT';
  /** `KVM_EXIT_MEMORY_FAULT` (39). */
  readonly exitReason: number;
  readonly memoryFault: KvmMemoryFault;
  /** What KVM_RUN fails with: EFAULT, or the guest_memfd error (EHWPOISON...). */
  readonly errno: Errno;
}

/**
 * An access KVM must emulate as MMIO (no memslot, or a write to a read-only slot): `KVM_EXIT_MMIO`.
 * `len` and `data` come from decoding the guest instruction, which is the vCPU's business, not the
 * MMU's.
 */
export interface MmioExit {
  readonly reason: 'MMIO';
  /** `KVM_EXIT_MMIO` (6). */
  readonly exitReason: number;
  readonly phys: number;
  readonly isWrite: boolean;
}

/** An exit produced by an extension's {@link MmuOptions.beforeMap} (e.g. KVM Userfault's memory fault). */
export type ExtensionExit = ArchExit;

/** Any exit a fault produces. */
export type MmuExit = MemoryFaultExit | MmioExit | ExtensionExit;

/** Why a fault is retried (RET_PF_RETRY: the vCPU re-enters the guest and faults again). */
export type RetryReason = 'invalidation' | 'invalid-slot' | 'arch-busy';

/** What one fault attempt did. */
export type FaultOutcome =
  | {
      readonly kind: 'mapped';
      readonly gfn: Gfn;
      readonly pfn: Pfn;
      readonly level: MappingLevel;
      readonly private: boolean;
      readonly writable: boolean;
      /** The mapping was already there (pf_spurious): only A/D/W bits may have changed. */
      readonly spurious: boolean;
    }
  | { readonly kind: 'retry'; readonly reason: RetryReason; readonly gfn: Gfn }
  | { readonly kind: 'exit'; readonly exit: MmuExit; readonly gfn: Gfn }
  | { readonly kind: 'error'; readonly errno: Errno; readonly reason: string; readonly gfn: Gfn };

/** What an extension sees of a fault (after the memslot lookup and the private/shared check). */
export interface FaultView {
  readonly gpa: number;
  readonly gfn: Gfn;
  readonly access: Access;
  readonly private: boolean;
  readonly slot: Memslot;
  /** A KVM_PRE_FAULT_MEMORY step rather than a vCPU access. */
  readonly prefault: boolean;
}

/** What an extension answers: go on, exit to userspace, or cap the mapping level (userfault: 4K). */
export type BeforeMapResult = 'continue' | { readonly exit: ExtensionExit; readonly errno?: Errno } | { readonly maxLevel: MappingLevel };

/**
 * Hugepage recovery after a range becomes uniform again (attributes or shareability):
 * - `'on-fault'` (default, upstream): nothing is zapped; the next fault of an unmapped gfn in the
 *   huge page maps it huge and replaces the 4K table (tdp_mmu_map_handle_target_level replaces a
 *   non-leaf SPTE). Cheapest, and what 6.18 does.
 * - `'eager'`: right after the change, the 4K leaves of huge pages that may now be mapped huge are
 *   zapped (as kvm_mmu_recover_huge_pages does after dirty logging), so the next access maps huge.
 */
export type HugepageRecovery = 'on-fault' | 'eager';

/** How the MMU learns whether a gfn is private (kvm_mem_is_private). */
export type PrivateTracking = 'attributes' | 'gmem';

/** Options of {@link createMmu}. */
export interface MmuOptions {
  readonly sim: Sim;
  readonly host: Host;
  readonly memslots: Memslots;
  /** The VM's guest_memfd side; needed for private memory and guest_memfd slots. */
  readonly gmem?: GmemVm;
  /** The arch's hooks (classification, max level, mirror root); absent: a default/sw-protected VM. */
  readonly arch?: ArchVm;
  /** The VMM process whose memory backs hva-based memslots (faults there GUP from it). */
  readonly process?: HostProcess;
  /** The memslot address space this MMU serves (x86: 0 normal, 1 SMM). Default 0. */
  readonly asId?: number;
  /**
   * Where private-ness comes from: `'attributes'` (KVM_SET_MEMORY_ATTRIBUTES, 6.18) or `'gmem'`
   * (the bound guest_memfd's shareability, PROPOSED-CONV in-place conversion). Default: `'gmem'` when
   * `gmem` enables `memoryAttributes2` or `gmemConvert`, else `'attributes'`.
   */
  readonly privateTracking?: PrivateTracking;
  /** Default `'on-fault'`; see {@link HugepageRecovery}. */
  readonly hugepageRecovery?: HugepageRecovery;
  /**
   * Extension hook run before a pfn is resolved (the userfault series checks its bitmap in
   * kvm_mmu_faultin_pfn): continue, exit, or cap the level.
   */
  readonly beforeMap?: (fault: FaultView) => BeforeMapResult;
  /**
   * host_pfn_mapping_level for hva-backed memory: the level the host maps `hva` at. Default 4K
   * (`@cocokit/host` maps processes with 4K pages only); give it to model THP/hugetlbfs backing.
   */
  readonly hostMappingLevel?: (slot: Memslot, gfn: Gfn, hva: number) => MappingLevel;
  /**
   * Whether KVM_PRE_FAULT_MEMORY is allowed now (x86: TDP in use and `kvm->arch.pre_fault_allowed`,
   * false for SNP until snp_launch_finish and for upstream TDX until tdx_td_finalize). Default:
   * always. Refused → EOPNOTSUPP.
   */
  readonly preFaultAllowed?: () => boolean;
}
