/**
 * @cocokit/gmem: guest_memfd — creation flags, folios and the page cache, fallocate, host mmap,
 * memslot bindings and get_pfn, shareability with in-place conversion, huge-folio split/merge,
 * direct-map removal, populate, and invalidation notifications for the MMU.
 */

// ---- a VM's guest_memfd side ----
export { GmemVm, createGmemVm } from './gmem-vm.js';
export type { GmemBinder, GmemBinding, GmemBindRequest, GmemVmOptions } from './gmem-vm.js';
export type { GmemArchHooks, GmemMemoryAttributes, GmemProposals } from './context.js';

// ---- the file ----
export { GuestMemfd, SHAREABILITY } from './guest-memfd.js';
export type {
  GmemFileStats,
  GmemPfn,
  GmemPfnCache,
  GmemPopulateArgs,
  GmemStat,
  HugeFolioPolicy,
  Shareability,
} from './guest-memfd.js';

// ---- the MMU seam ----
export type {
  GmemInvalidateFilter,
  GmemInvalidateRange,
  GmemInvalidateReason,
  GmemInvalidationListener,
  GmemSlotView,
} from './invalidation.js';

// ---- fds ----
export { FdTable } from './fd-table.js';
export type { FdTarget } from './fd-table.js';


// ---- costs ----
export { GMEM_COSTS, GMEM_COST_OWNER, registerGmemCosts } from './costs.js';
export type { GmemCostName } from './costs.js';
