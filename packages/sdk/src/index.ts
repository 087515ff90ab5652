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
  KvmClearDirtyLog,
  KvmCreateGuestMemfd,
  KvmDirtyLog,
  KvmEnableCap,
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

// ---- range maps ----
export { RangeMap } from './range-map.js';
export type { RangeMapOptions, RangePredicate, Run } from './range-map.js';
export { EnumRangeMap, NumberRangeMap } from './number-range-map.js';
export type { NumberRun } from './number-range-map.js';

// ---- simulation kernel: implementation (helper: sim) ----
export { createSim } from './sim/sim.js';
export type { SimOptions } from './sim/sim.js';
export { SimActorError, isSimActorError } from './sim/actor.js';
export { createCostModel } from './sim/cost-model.js';
export { createRng } from './sim/rng.js';

// ---- trace: implementation (helper: sim) ----
export { createTraceBus } from './trace/bus.js';
export type { TraceClock } from './trace/bus.js';
export { createCounters } from './trace/counters.js';
export type { Counters, CountersOptions, Histogram, HistogramBucket } from './trace/counters.js';
export { createRingBuffer } from './trace/ring.js';
export type { RingBuffer } from './trace/ring.js';
export { createTraceEventRecorder, toChromeTraceJson } from './trace/perfetto.js';
export type { ChromeTrace, ChromeTraceEvent, ChromeTraceOptions, TraceEventRecorder } from './trace/perfetto.js';

// ---- arch plugin contract (helper: arch) ----
export {
  ARCH_PLUGIN_BRAND,
  CONTRACT_API_VERSION,
  SUPPORTED_API_VERSIONS,
  archBusy,
  archError,
  archOk,
} from './arch/contract.js';
export type {
  Access,
  ArchCapabilities,
  ArchExit,
  ArchGuestApiOf,
  ArchGuestCall,
  ArchGuestKernel,
  ArchGuestOutcome,
  ArchGuestStep,
  ArchGuestApis,
  ArchMeasurement,
  ArchMemoryRequest,
  ArchPlugin,
  ArchPluginDef,
  ArchResult,
  ArchVm,
  ArchVmApiOf,
  ArchVmApis,
  ArchVmContext,
  ArchVmFor,
  FaultClass,
  GfnRange,
  GuestAccess,
  GuestException,
  GuestFault,
  GuestNpf,
  HostFault,
  HostFaultKind,
  PageSource,
  TableLevel,
} from './arch/contract.js';
export { ARCH_NAME_PATTERN, defineArchPlugin, isArchName, validateArchPlugin } from './arch/define.js';
export { ARCH_VM_HOOKS, archCapabilitiesProblem, archVmProblem, archVmShapeProblem } from './arch/validate-vm.js';
export { ARCH_PLUGIN_ERROR_CODES, ArchPluginError, isArchPluginError } from './arch/errors.js';
export type { ArchLookupAttempt, ArchPluginErrorCode, ArchPluginErrorInit } from './arch/errors.js';
export { DEPENDENCY_FIELDS, discoverArchPackages } from './arch/discovery.js';
export type { ArchPackage, DependencyField, PackageJsonSource } from './arch/discovery.js';
export {
  archPackageNames,
  createArchRegistry,
  defaultArchImporter,
  defaultArchRegistry,
  listArchs,
  registerArch,
  resolveArch,
  unregisterArch,
} from './arch/registry.js';
export type { ArchImporter, ArchListing, ArchRegistry, ResolveArchOptions } from './arch/registry.js';
