/**
 * @cocokit/host: the host kernel's memory — physical frames (a buddy allocator over orders
 * 0..18), page contents, per-pfn refcounts and pins, the direct map, and process address spaces
 * with host page faults and signals as values.
 */

// ---- the host ----
export { DEFAULT_HOST_BYTES, Host, checkInvariants, createHost } from './host.js';
export type { AllocOptions, CreateHostOptions, HostStats } from './host.js';

// ---- physical frames ----
export { BuddyAllocator, MAX_ORDER } from './buddy.js';
export type { AllocatedBlockInfo, BuddyStats, PagePurpose } from './buddy.js';

// ---- page contents ----
export { PageContentsStore } from './contents.js';
export type { ContentsFootprint } from './contents.js';

// ---- the direct map ----
export { DirectMap } from './direct-map.js';
export type { DirectMapEnv, DirectMapHandle, DirectMapStats } from './direct-map.js';

// ---- processes, faults, files ----
export { MADV, MAP, MMAP_BASE, MMAP_MIN_ADDR, PROT, TASK_SIZE } from './process.js';
export type { GupOptions, HostProcess, MappedRun, MmapArgs, MmuNotifier, Vma } from './process.js';
export { processFault, isProcessFault } from './fault.js';
export type { HostAccessCheck, HostAccessOk, HostAccessResult, ProcessFault, HostSignal } from './fault.js';
export type { FileFaultAccess, FileFaultResult, FileMmapRequest, FileProvider } from './file.js';

// ---- costs ----
export { HOST_COSTS, HOST_COST_OWNER, registerHostCosts } from './costs.js';
export type { HostCostName } from './costs.js';
