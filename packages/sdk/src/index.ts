/**
 * @cocokit/sdk: the contracts every cocokit package and every third-party plugin codes against.
 * No state of any VM lives here.
 */

// ---- errors ----
export { ERRNO, KvmError, ModelInvariantError, invariant, isKvmError, isModelInvariantError } from './errors.js';
export type { Errno, KvmErrorData } from './errors.js';

// ---- units and addresses ----
export {
  MAX_BYTES,
  MAX_FRAMES,
  PAGE_ORDERS,
  PAGE_SHIFT,
  PAGE_SIZE,
  PG_ORDER,
  alignDown,
  alignUp,
  bytesToFrameFloor,
  bytesToFrames,
  bytesToFramesCeil,
  checkFrameRange,
  formatBytes,
  framesToBytes,
  gfn,
  hfn,
  isAligned,
  levelToOrder,
  orderToLevel,
  pagesInOrder,
  pfn,
  pgoff,
  rangeContains,
  rangeCovers,
  rangeIntersection,
  rangeIsEmpty,
  rangeLength,
  rangesOverlap,
  toByteCount,
} from './units.js';
export type { Branded, FrameRange, Gfn, Hfn, MappingLevel, PageOrder, Pfn, PgOff } from './units.js';

// ---- the host memory a plugin sees ----
export { tagBytes } from './host-view.js';
export type { HostMemoryView, PageContents } from './host-view.js';

// ---- uapi ----
export * as uapi from './uapi.js';
export type {
  KvmCreateGuestMemfd,
  KvmGmemConvert,
  KvmMemoryAttributes,
  KvmMemoryAttributes2,
  KvmMemoryFault,
  KvmPreFaultMemory,
  KvmUserspaceMemoryRegion2,
} from './uapi.js';

// ---- simulation kernel: seams ----
export type {
  Actor,
  ActorState,
  ActorYield,
  CostDef,
  CostEntry,
  CostModel,
  CostName,
  CostNames,
  Lock,
  LockStats,
  Rng,
  RwLock,
  Sim,
} from './sim/types.js';

// ---- trace: seams ----
export type { TraceBus, TraceEvent, TraceEventMap, TraceEventName, TraceFields, TraceSink } from './trace/types.js';

// ---- range map (helper: range-map) ----

// ---- simulation kernel: implementation (helper: sim) ----

// ---- trace: implementation (helper: sim) ----

// ---- arch plugin contract (helper: arch) ----
