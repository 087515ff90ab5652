/**
 * The MMU's cost names and trace events, declared to the sdk by augmentation so that
 * `sim.charge('mmu.fault')` and `sim.trace.emit('mmu.map', {...})` are type-checked.
 *
 * The defaults are order-of-magnitude estimates for a current x86-64 server with EPT, each with its
 * reasoning; host costs (page-table page allocation, GUP) and guest_memfd costs (get_pfn) are
 * charged by those packages on top. Override them with `sim.costs.override` when a result depends
 * on them.
 */
import type { CostDef, Sim } from '@cocokit/sdk';

declare module '@cocokit/sdk' {
  interface CostNames {
    'mmu.fault': true;
    'mmu.spte_set': true;
    'mmu.table_alloc': true;
    'mmu.spte_zap': true;
    'mmu.write_protect': true;
    'mmu.tlb_flush': true;
  }
  interface TraceEventMap {
    /** A vCPU fault (or a pre-fault step) ended with `outcome`. */
    'mmu.fault': { gfn: number; access: string; private: boolean; outcome: string; level: number };
    /** A leaf SPTE was installed. */
    'mmu.map': { gfn: number; level: number; pfn: number; private: boolean; writable: boolean };
    /** Leaf SPTEs of `[start, end)` were zapped. */
    'mmu.zap': { start: number; end: number; sptes: number; filter: string; reason: string };
    /** An MMU invalidation began or ended (kvm_mmu_invalidate_begin / _end). */
    'mmu.invalidate': { op: 'begin' | 'end'; start: number; end: number; seq: number; inProgress: number };
  }
}

/** The owner name the MMU registers its costs under. */
export const MMU_COST_OWNER = '@cocokit/mmu';

/** The MMU's costs with their defaults (ns per unit) and sources. */
export const MMU_COSTS = {
  'mmu.fault': {
    ns: 1200,
    unit: 'per EPT-violation exit handled (one attempt, retries included)',
    source:
      'estimate: a VM exit plus re-entry is ~0.5-1 us on current x86 (VMX round trip), plus kvm_mmu_page_fault bookkeeping; the TDP MMU walk and pfn lookup are charged separately',
  },
  'mmu.spte_set': {
    ns: 40,
    unit: 'per SPTE written (leaf or table link)',
    source: 'estimate: tdp_mmu_set_spte_atomic is one cmpxchg64 plus handle_changed_spte bookkeeping, tens of ns',
  },
  'mmu.table_alloc': {
    ns: 100,
    unit: 'per page-table page',
    source:
      'estimate: tdp_mmu_alloc_sp takes a zeroed page and a kvm_mmu_page from the vCPU memory caches (topped up outside mmu_lock); the page allocation itself is charged by the host',
  },
  'mmu.spte_zap': {
    ns: 20,
    unit: 'per leaf SPTE zapped',
    source: 'estimate: tdp_mmu_zap_leafs clears one SPTE and runs handle_changed_spte, tens of ns per entry',
  },
  'mmu.write_protect': {
    ns: 10,
    unit: 'per leaf SPTE write-protected',
    source: 'estimate: wrprot_gfn_range clears the writable bit with one atomic per entry',
  },
  'mmu.tlb_flush': {
    ns: 2500,
    unit: 'per remote TLB flush (kvm_flush_remote_tlbs)',
    source:
      'estimate: INVEPT on every CPU running a vCPU of the VM, requested by IPI and waited for; remote flushes are commonly measured at a few microseconds',
  },
} as const satisfies Record<string, CostDef>;

/** An MMU cost name. */
export type MmuCostName = keyof typeof MMU_COSTS;

/**
 * Registers the MMU's costs on `sim` under {@link MMU_COST_OWNER}. Registering them again is a no-op
 * (several MMUs, or an MMU and a test, may share one Sim); a name another owner registered with another default is EEXIST.
 */
export function registerMmuCosts(sim: Sim): void {
  sim.costs.register(MMU_COST_OWNER, MMU_COSTS);
}
