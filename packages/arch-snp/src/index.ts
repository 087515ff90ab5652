/**
 * @cocokit/arch-snp: the AMD SEV-SNP backend plugin for cocokit. The default export is the plugin;
 * the rest is for VMMs, guest programs and tests that use SNP directly.
 */
export { default } from './plugin.js';
export { checkVmInvariants, createSnpVm } from './plugin.js';
export type { SnpArchVm, SnpGuestApi, SnpVmApi } from './api.js';
export {
  GHCB_MSR_PSC_REQ,
  GHCB_MSR_PSC_RESP,
  GHCB_MSR_PSC_RESP_ERROR,
  PAGES_PER_2M,
  PSC_OP,
  PSMASH,
  PVALIDATE,
  RMPUPDATE,
  RMP_PG_SIZE,
  SNP_PAGE_TYPE,
  SNP_POLICY,
  SNP_POLICY_MASK_VALID,
  VC_PAGE_NOT_VALIDATED,
  VMGEXIT_PSC_ERROR,
  VMGEXIT_PSC_MAX_COUNT,
  VMSA_GPA,
} from './constants.js';
export type { PscOpName, PsmashRc, PvalidateRc, RmpPageSize, RmpUpdateRc, SnpPageType } from './constants.js';
export { Rmp, rmpForHost } from './rmp.js';
export type { RmpEntry, RmpStats, RmpUpdateState } from './rmp.js';
export { SNP_COSTS, SNP_COST_OWNER } from './costs.js';
export { X86_TRAP_VC } from './access.js';
export type { SnpNpf } from './access.js';
export { snpGuestKernel } from './guest-kernel.js';
export type { PvalidateResult } from './pvalidate.js';
export { createPscBuffer, ghcbMsrPscRequest } from './psc.js';
export type { MapGpaRangeExit, PscBuffer, PscEntry } from './psc.js';
export { LAUNCH_UPDATE_TYPES } from './launch.js';
export type {
  LaunchPageResolver,
  LaunchPhase,
  SnpLaunchFinishParams,
  SnpLaunchStartParams,
  SnpLaunchUpdateParams,
} from './launch.js';
export { LD_SIZE, LaunchDigest, PAGE_INFO_SIZE, pageContentsDigest, pageInfo } from './digest.js';
export type { PageInfoOptions } from './digest.js';
