/**
 * @cocokit/mmu: the TDP MMU — sparse shared and mirror page tables, the private/shared fault
 * pipeline, zapping with the invalidation sequence and fault retry, pre-fault, dirty logging,
 * hugepage recovery, statistics and invariants.
 */
export { Mmu, createMmu } from './mmu.js';
export type {
  BeforeMapResult,
  ExtensionExit,
  FaultOutcome,
  FaultRequest,
  FaultView,
  HugepageRecovery,
  MemoryFaultExit,
  MmioExit,
  MmuExit,
  MmuOptions,
  PrivateTracking,
  RetryReason,
} from './types.js';
export type { PendingFault } from './fault.js';
export { memoryFaultExit } from './fault.js';
export type { PreFaultOptions } from './prefault.js';
export { InvalidationSeq } from './invalidation.js';
export {
  ENTRY_SPAN,
  GFN_LIMIT,
  PageTable,
  PTES_PER_TABLE,
  REMOVE_BUSY_RETRIES,
  ROOT_LEVEL,
  SPTE,
  TABLE_ENTRY,
  encodeLeaf,
  leafFlags,
  leafPfn,
} from './page-table.js';
export type { LeafSpte, PrivateTableHooks, TablePageSource, ZapCount, ZapFilter } from './page-table.js';
export { allowedLevel, maxMappingLevel, orderLevel, slotMaxLevel } from './max-level.js';
export { createMmuStats } from './stats.js';
export type { MmuStats } from './stats.js';
export { MMU_COSTS, MMU_COST_OWNER, registerMmuCosts } from './costs.js';
export type { MmuCostName } from './costs.js';
