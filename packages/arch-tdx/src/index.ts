/**
 * @cocokit/arch-tdx: the Intel TDX backend for cocokit — the Secure EPT in a modelled TDX module,
 * PAGE.ADD/AUG, BLOCK/TRACK/REMOVE, DEMOTE/PROMOTE, ACCEPT and #VE, MapGPA exits, the guest
 * kernel's conversion and acceptance code, and MRTD.
 */
export { default } from './plugin.js';

export { TDX_COSTS } from './costs.js';
export type { TdxCostName } from './costs.js';

export { KVM_EXIT_HYPERCALL_LONG_MODE, TDVMCALL_MAP_GPA, TDX_MAP_GPA_MAX_LEN, X86_TRAP_VE } from './guest.js';
export type { TdvmcallResult, TdxAcceptResult, TdxGuestApi, TdxMapGpaExit } from './guest.js';

export { TDX_ACCEPT_EPT_VIOLATION_LIMIT, TDX_MAP_GPA_MAX_RETRIES, createTdxGuestKernel } from './guest-kernel.js';

export { MRTD_BLOCK_SIZE, Mrtd, TDX_EXTENDMR_CHUNKSIZE, mrExtendBlock, pageAddBlock } from './measure.js';

export { TDX_LEAVES, TdxModule } from './module.js';
export type { AcceptOutcome, Gpaw, TdxLeaf, TdxModuleOptions, TdxModuleStats } from './module.js';

export { SEPT_STATE, SecureEpt, framesAtLevel, isBlocked, isLeaf, isNonLeaf, septStateName } from './sept.js';
export type { SeptEntry, SeptLevel, SeptState } from './sept.js';

export {
  TDVMCALL_STATUS,
  TDX_OPERAND_ID,
  TDX_SEAMCALL_STATUS_MASK,
  TDX_STATUS,
  isTdxError,
  isTdxOperandBusy,
  seamcallToArchResult,
  tdvmcallStatusName,
  tdxStatusCode,
  tdxStatusName,
} from './status.js';
export type { TdvmcallStatus, TdxStatus } from './status.js';

export { KVM_TDX_MEASURE_MEMORY_REGION, TDX_LAUNCH_FLOWS, TDX_POPULATE_KINDS, createTdxVm } from './vm.js';
export type { TdxArchVm, TdxInitMemRegion, TdxInitMemRegionProgress, TdxLaunchFlow, TdxVmApi, TdxVmOptions } from './vm.js';
