/**
 * @cocokit/arch-pkvm: the Arm pKVM backend plugin for cocokit. The default export is the plugin;
 * the rest is for VMMs, guest programs and tests that use pKVM directly.
 */
export { default } from './plugin.js';
export { createPkvmVm, pkvmMemRequest, pkvmMemoryRequest } from './plugin.js';
export type { PkvmArchVm, PkvmGuestApi, PkvmHypercallExit, PkvmMemRequest, PkvmVmApi } from './api.js';
export { ARM_SMCCC_KVM_FUNC, ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID, PKVM_GRANULE, PKVM_PAGE_STATE, SMCCC_RET, pageStateBits, smcccVendorHypFuncId } from './constants.js';
export type { PkvmPageState } from './constants.js';
export { PkvmMemProtect, memProtectForHost } from './ownership.js';
export type { GuestPte, HypPage, Reclaimed } from './ownership.js';
export { PKVM_COSTS, PKVM_COST_OWNER } from './costs.js';
export { PKVM_SHARE_FAULT_LIMIT, pkvmGuestKernel } from './guest-kernel.js';
