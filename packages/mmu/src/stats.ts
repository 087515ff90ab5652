/**
 * The MMU's statistics (the model's `kvm_vm_stat` / `kvm_vcpu_stat` for the MMU: pf_taken,
 * pf_fixed, pf_spurious, pf_emulate, pf_mmio_spte_created, lpages, tlb flushes...), kept as plain
 * counters so the fault path pays one increment each.
 */

/** Counters of one MMU. */
export interface MmuStats {
  /** Faults handled (pre-fault steps included), by the kind the fault was classified as. */
  faults: { private: number; shared: number };
  /** Faults that mapped a page (pf_fixed). */
  fixed: number;
  /** Faults that found the mapping already there (pf_spurious). */
  spurious: number;
  /** Retries, by cause. */
  retries: { invalidation: number; invalidSlot: number; archBusy: number };
  /** Exits to userspace, by kind. */
  exits: { memoryFault: number; mmio: number; extension: number };
  /** Faults that failed with an errno and no exit (e.g. an hva GUP could not fault). */
  errors: number;
  /** Leaves installed, by level (4K, 2M, 1G). */
  maps: [number, number, number];
  /** Leaves zapped, by level. */
  zapped: [number, number, number];
  /** Zap operations that zapped something. */
  zaps: number;
  /** Remote TLB flushes (kvm_flush_remote_tlbs). */
  tlbFlushes: number;
  /** Leaves write-protected for dirty logging. */
  writeProtected: number;
  /** Page-table pages allocated and freed over time. */
  tablesAllocated: number;
  tablesFreed: number;
  /** Invalidations begun (mmu-notifier, guest_memfd, attributes, memslot). */
  invalidations: number;
}

/** Fresh zeroed counters. */
export function createMmuStats(): MmuStats {
  return {
    faults: { private: 0, shared: 0 },
    fixed: 0,
    spurious: 0,
    retries: { invalidation: 0, invalidSlot: 0, archBusy: 0 },
    exits: { memoryFault: 0, mmio: 0, extension: 0 },
    errors: 0,
    maps: [0, 0, 0],
    zapped: [0, 0, 0],
    zaps: 0,
    tlbFlushes: 0,
    writeProtected: 0,
    tablesAllocated: 0,
    tablesFreed: 0,
    invalidations: 0,
  };
}
