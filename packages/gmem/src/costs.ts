/**
 * guest_memfd's cost names and trace events, declared to the sdk by augmentation so that
 * `sim.charge('gmem.convert')` and `sim.trace.emit('gmem.punch_hole', {...})` are type-checked.
 *
 * The defaults are estimates for a current x86-64 server, each with its reasoning; the host charges
 * its own costs (page allocation, zeroing, PTE zaps, direct-map updates) on top of these, and the
 * MMU charges the SPTEs it zaps when it handles an invalidation. Override them with
 * `sim.costs.override` when a result depends on them.
 */
import type { CostDef, Sim } from '@cocokit/sdk';

declare module '@cocokit/sdk' {
  interface CostNames {
    'gmem.create': true;
    'gmem.filemap_lookup': true;
    'gmem.folio_insert': true;
    'gmem.folio_remove': true;
    'gmem.invalidate': true;
    'gmem.convert': true;
    'gmem.refcount_check': true;
    'gmem.folio_split': true;
    'gmem.folio_merge': true;
    'gmem.get_pfn': true;
  }
  interface TraceEventMap {
    /** KVM_CREATE_GUEST_MEMFD made a file. */
    'gmem.create': { file: string; pages: number; flags: number; hugeOrder: number };
    /** A folio entered the page cache (fallocate, a host fault, get_pfn, populate). */
    'gmem.alloc': { file: string; index: number; pfn: number; order: number; cause: string };
    /** A folio left the page cache (punch hole, release); `deferred` while host references keep it. */
    'gmem.free': { file: string; index: number; pfn: number; order: number; deferred: boolean };
    /** fallocate(PUNCH_HOLE|KEEP_SIZE) over file pages `[start, end)` freed `pages`. */
    'gmem.punch_hole': { file: string; start: number; end: number; pages: number };
    /** Guest mappings of file pages `[start, end)` are being invalidated (kvm_gmem_invalidate_begin). */
    'gmem.invalidate': { file: string; start: number; end: number; filter: string; reason: string; slots: number };
    /** Shareability of `[start, end)` changed (in-place conversion). */
    'gmem.convert': { file: string; start: number; end: number; to: string; entry: string };
    /** A conversion to private was refused because a folio is still referenced. */
    'gmem.convert_refused': { file: string; start: number; end: number; errorOffset: number };
    /** A huge folio was split into folios of `newOrder`. */
    'gmem.split': { file: string; index: number; order: number; newOrder: number; cause: string };
    /** Folios tiling `[index, index + 2^order)` were merged back into one folio; `zeroed` of its pages, never zeroed while split, were zeroed first (so the folio is uptodate as a whole). */
    'gmem.merge': { file: string; index: number; order: number; zeroed: number };
    /** A NO_DIRECT_MAP page was put back in the direct map for a KVM access (`op: map`) or left it again (`unmap`). */
    'gmem.remap': { file: string; index: number; pfn: number; op: 'map' | 'unmap'; user: string };
    /** The arch prepare hook ran for a folio (kvm_gmem_prepare_folio). */
    'gmem.prepare': { file: string; index: number; pfn: number; order: number };
    /** kvm_gmem_populate copied initial contents into a page. */
    'gmem.populate': { file: string; index: number; gfn: number; pfn: number };
    /** A memslot was bound to (or unbound from) file pages `[start, end)`. */
    'gmem.bind': { file: string; start: number; end: number; op: 'bind' | 'unbind' };
    /** The file's last reference went (kvm_gmem_release): bindings cleared, pages freed. */
    'gmem.release': { file: string; pages: number; bindings: number };
  }
}

/** The owner name gmem registers its costs under. */
export const GMEM_COST_OWNER = '@cocokit/gmem';

/** gmem's costs with their defaults (ns per unit) and sources. */
export const GMEM_COSTS = {
  'gmem.create': {
    ns: 5000,
    unit: 'per KVM_CREATE_GUEST_MEMFD',
    source: 'estimate: anon_inode_create_getfile plus the inode and kvm_gmem allocations, a few microseconds',
  },
  'gmem.filemap_lookup': {
    ns: 40,
    unit: 'per page-cache lookup',
    source: 'estimate: filemap_get_entry walks the xarray (a few cache misses) and takes a folio reference',
  },
  'gmem.folio_insert': {
    ns: 150,
    unit: 'per folio added to the page cache',
    source: 'estimate: filemap_add_folio (xarray store, memcg charge, LRU add) on top of the allocation the host charges',
  },
  'gmem.folio_remove': {
    ns: 120,
    unit: 'per folio truncated',
    source: 'estimate: truncate_inode_folio / filemap_remove_folio (xarray erase, memcg uncharge) before the free the host charges',
  },
  'gmem.invalidate': {
    ns: 300,
    unit: 'per bound memslot range invalidated',
    source:
      'estimate: kvm_gmem_invalidate_begin/end per binding: mmu_lock, mmu_invalidate_begin/end and the range bookkeeping, excluding the SPTEs the MMU zaps',
  },
  'gmem.convert': {
    ns: 500,
    unit: 'per conversion request that changes state',
    source:
      'estimate: the invalidate lock, a maple-tree store with node preallocation (mas_preallocate + mas_store_prealloc, a few hundred ns)',
  },
  'gmem.refcount_check': {
    ns: 30,
    unit: 'per folio whose refcount is checked on conversion to private',
    source: 'estimate: folio_ref_count read under the invalidate lock, one cache line per folio',
  },
  'gmem.folio_split': {
    ns: 20000,
    unit: 'per huge folio split',
    source:
      'estimate: the 1G RFC v2 split path restructures the folio (hugetlb vmemmap restore, per-page struct page init); tens of microseconds per 1 GiB folio are reported in seed 003 discussions',
  },
  'gmem.folio_merge': {
    ns: 20000,
    unit: 'per huge folio merge',
    source: 'estimate: the reverse of a split (vmemmap optimisation redone), same order as a split',
  },
  'gmem.get_pfn': {
    ns: 80,
    unit: 'per kvm_gmem_get_pfn',
    source: 'estimate: the file reference, the binding lookup and the filemap lookup of kvm_gmem_get_pfn',
  },
} as const satisfies Record<string, CostDef>;

/** A gmem cost name. */
export type GmemCostName = keyof typeof GMEM_COSTS;

/** Registers gmem's costs on `sim` unless they are there already (several VMs may share one Sim). */
export function registerGmemCosts(sim: Sim): void {
  sim.costs.register(GMEM_COST_OWNER, GMEM_COSTS);
}
