/**
 * The host's cost names and trace events, declared to the sdk by augmentation so that
 * `sim.charge('host.page_zero')` and `sim.trace.emit('host.alloc', {...})` are type-checked.
 *
 * The defaults are order-of-magnitude figures for a current x86-64 server; each says where it comes
 * from. They are estimates, not measurements of a named machine: override them (`sim.costs.override`)
 * with numbers from your own hardware when a result depends on them.
 */
import type { CostDef, Sim } from '@cocokit/sdk';

declare module '@cocokit/sdk' {
  interface CostNames {
    'host.page_alloc': true;
    'host.page_free': true;
    'host.page_zero': true;
    'host.page_copy': true;
    'host.page_fault': true;
    'host.pte_zap': true;
    'host.gup_page': true;
    'host.tlb_flush': true;
    'host.tlb_shootdown': true;
    'host.direct_map_update': true;
  }
  interface TraceEventMap {
    /** A block was allocated from the buddy allocator. */
    'host.alloc': { pfn: number; order: number; purpose: string };
    /** A block's allocation reference was dropped; `deferred` when other references keep it alive. */
    'host.free': { pfn: number; order: number; purpose: string; deferred: boolean };
    /** A host page fault in a process: resolved to `pfn`, or a signal. */
    'host.fault': { pid: number; hva: number; write: boolean; pfn: number | null; signal: string | null };
    /** The direct map changed: pages removed, restored, or temporarily (un)mapped. */
    'host.direct_map': { op: 'remove' | 'restore' | 'temp_map' | 'temp_unmap'; start: number; end: number; pages: number };
    /** A process mapped `[hva, hva + length)`. */
    'host.mmap': { pid: number; hva: number; length: number; prot: number; flags: number; file: string | null };
    /** A process unmapped `[hva, hva + length)`. */
    'host.munmap': { pid: number; hva: number; length: number; pages: number };
    /** A process dropped the pages of `[hva, hva + length)` with madvise (`advice`: MADV_*). */
    'host.madvise': { pid: number; hva: number; length: number; advice: number; pages: number };
    /** The user mappings of file pages `[start, end)` were zapped in every process (unmap_mapping_range). */
    'host.zap_file': { file: string; start: number; end: number; pages: number };
    /** Pages were pinned (gup) or unpinned. */
    'host.gup': { pid: number; hva: number; npages: number; longterm: boolean; op: 'pin' | 'unpin' };
  }
}

/** The owner name the host registers its costs under. */
export const HOST_COST_OWNER = '@cocokit/host';

/** The host's costs with their defaults (ns per unit) and sources. */
export const HOST_COSTS = {
  'host.page_alloc': {
    ns: 150,
    unit: 'per block allocated',
    source:
      'estimate: an order-0 allocation from the per-cpu lists (rmqueue_pcplist) is ~100-200 ns on current x86; larger orders come from the zone free lists at similar cost',
  },
  'host.page_free': {
    ns: 100,
    unit: 'per block freed',
    source: 'estimate: free_unref_page to the per-cpu lists, slightly cheaper than an allocation',
  },
  'host.page_zero': {
    ns: 400,
    unit: 'per 4 KiB page',
    source: 'memset of 4 KiB at ~10 GB/s (clear_page_erms, rep stosb) = ~400 ns',
  },
  'host.page_copy': {
    ns: 600,
    unit: 'per 4 KiB page',
    source: 'copy of 4 KiB at ~7 GB/s (copy_page, rep movsq; read + write traffic) = ~600 ns',
  },
  'host.page_fault': {
    ns: 1000,
    unit: 'per fault, excluding allocation and zeroing',
    source:
      'estimate: exception entry/exit plus handle_mm_fault for a 4 KiB anonymous fault is ~1 us before clearing the page (will-it-scale page_fault1 runs at ~1-2 us per fault, clearing included)',
  },
  'host.pte_zap': {
    ns: 20,
    unit: 'per 4 KiB page unmapped',
    source: 'estimate: zap_pte_range clears a PTE and drops the page reference in tens of ns',
  },
  'host.gup_page': {
    ns: 50,
    unit: 'per page pinned or unpinned',
    source: 'estimate: gup-fast walks the page table and raises the folio refcount (one atomic) per page',
  },
  'host.tlb_flush': {
    ns: 200,
    unit: 'per flush of a process range on the local CPU',
    source: 'estimate: INVLPG of a few pages or a CR3 reload, ~100-300 ns on current x86',
  },
  'host.tlb_shootdown': {
    ns: 3000,
    unit: 'per kernel-range flush on all CPUs',
    source:
      'estimate: flush_tlb_kernel_range sends IPIs to every CPU and waits for them; shootdowns are commonly measured at a few microseconds',
  },
  'host.direct_map_update': {
    ns: 100,
    unit: 'per 4 KiB page whose direct-map entry changes',
    source:
      'estimate: set_direct_map_invalid_noflush / set_direct_map_default_noflush walk the kernel page table and rewrite one PTE (splitting a large direct-map page the first time), without the flush',
  },
} as const satisfies Record<string, CostDef>;

/** A host cost name. */
export type HostCostName = keyof typeof HOST_COSTS;

/**
 * Registers the host's costs on `sim` under {@link HOST_COST_OWNER}. Registering them again is a no-op
 * (several hosts, or a host and a test, may share one Sim); a name another owner registered with another default is EEXIST.
 */
export function registerHostCosts(sim: Sim): void {
  sim.costs.register(HOST_COST_OWNER, HOST_COSTS);
}
