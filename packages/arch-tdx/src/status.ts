/**
 * TDX module completion status codes (the RAX of a SEAMCALL or TDCALL) and TDVMCALL status codes,
 * with the mapping KVM applies to them (arch/x86/kvm/vmx/tdx.c).
 *
 * Values from arch/x86/kvm/vmx/tdx_errno.h and the TDX module ABI's error-code table (arch-specs
 * A.7): bits 63:32 are the class and code, bits 31:0 an operand id. They exceed 2^53, so they are
 * `bigint` constants; the hot paths compare them by identity and never do arithmetic on them.
 */
import { archBusy, archError, archOk, type ArchResult, type Errno } from '@cocokit/sdk';

/** TDX module status codes the model returns (tdx_errno.h; arch-specs A.7). */
export const TDX_STATUS = {
  TDX_SUCCESS: 0x0000000000000000n,
  TDX_INTERRUPTED_RESUMABLE: 0x8000000300000000n,
  TDX_OPERAND_INVALID: 0xc000010000000000n,
  TDX_OPERAND_BUSY: 0x8000020000000000n,
  TDX_PREVIOUS_TLB_EPOCH_BUSY: 0x8000020100000000n,
  TDX_PAGE_METADATA_INCORRECT: 0xc000030000000000n,
  /** The TD's OP_STATE forbids the leaf (PAGE.ADD after MR.FINALIZE, PAGE.AUG before it). */
  TDX_OP_STATE_INCORRECT: 0xc000060800000000n,
  TDX_EPT_WALK_FAILED: 0xc0000b0000000000n,
  TDX_EPT_ENTRY_FREE: 0xc0000b0100000000n,
  TDX_EPT_ENTRY_NOT_FREE: 0xc0000b0200000000n,
  TDX_EPT_ENTRY_NOT_PRESENT: 0xc0000b0300000000n,
  TDX_GPA_RANGE_NOT_BLOCKED: 0xc0000b0600000000n,
  /** Warning class (bit 63 clear): BLOCK of a range that is already blocked. */
  TDX_GPA_RANGE_ALREADY_BLOCKED: 0x00000b0700000000n,
  TDX_TLB_TRACKING_NOT_DONE: 0xc0000b0800000000n,
  TDX_EPT_INVALID_PROMOTE_CONDITIONS: 0xc0000b0900000000n,
  /** Warning class (bit 63 clear): ACCEPT of a page the guest can already use. */
  TDX_PAGE_ALREADY_ACCEPTED: 0x00000b0a00000000n,
  TDX_PAGE_SIZE_MISMATCH: 0xc0000b0b00000000n,
  TDX_GPA_RANGE_BLOCKED: 0xc0000b0c00000000n,
  TDX_EPT_ENTRY_STATE_INCORRECT: 0xc0000b0d00000000n,
} as const;

/** A TDX module status code. */
export type TdxStatus = (typeof TDX_STATUS)[keyof typeof TDX_STATUS] | bigint;

/** Operand ids KVM tests for (tdx_arch.h): the low 32 bits of a status. */
export const TDX_OPERAND_ID = {
  RCX: 0x01n,
  TDR: 0x80n,
  SEPT: 0x92n,
  TD_EPOCH: 0xa9n,
} as const;

/** TDX_SEAMCALL_STATUS_MASK: the class/code bits, without the operand id. */
export const TDX_SEAMCALL_STATUS_MASK = 0xffffffff00000000n;

/** TDG.VP.VMCALL status codes returned to the guest in R10 (GHCI; arch-specs A.6). */
export const TDVMCALL_STATUS = {
  SUCCESS: 0x0000000000000000n,
  RETRY: 0x0000000000000001n,
  INVALID_OPERAND: 0x8000000000000000n,
  ALIGN_ERROR: 0x8000000000000002n,
  SUBFUNC_UNSUPPORTED: 0x8000000000000003n,
} as const;

/** A TDVMCALL status code. */
export type TdvmcallStatus = (typeof TDVMCALL_STATUS)[keyof typeof TDVMCALL_STATUS];

const NAMES = new Map<bigint, string>(Object.entries(TDX_STATUS).map(([k, v]) => [v, k]));
const TDVMCALL_NAMES = new Map<bigint, string>(Object.entries(TDVMCALL_STATUS).map(([k, v]) => [v, `TDVMCALL_STATUS_${k}`]));

/** The name of a TDVMCALL status (`'TDVMCALL_STATUS_RETRY'`), or its hex. */
export function tdvmcallStatusName(status: bigint): string {
  return TDVMCALL_NAMES.get(status) ?? `0x${status.toString(16)}`;
}

/** The status without its operand id (`err & TDX_SEAMCALL_STATUS_MASK`). */
export function tdxStatusCode(status: bigint): bigint {
  return status & TDX_SEAMCALL_STATUS_MASK;
}

/** The name of `status` (`'TDX_OPERAND_BUSY'`), with the operand id when one is set, or its hex. */
export function tdxStatusName(status: bigint): string {
  const name = NAMES.get(tdxStatusCode(status));
  const operand = status & 0xffffffffn;
  if (name === undefined || (name === 'TDX_SUCCESS' && operand !== 0n)) return `0x${status.toString(16)}`;
  return operand === 0n ? name : `${name}|0x${operand.toString(16)}`;
}

/** Whether `status` is an error (bit 63 set); warnings such as TDX_PAGE_ALREADY_ACCEPTED are not. */
export function isTdxError(status: bigint): boolean {
  return status >= 0x8000000000000000n;
}

/** Whether `status` is TDX_OPERAND_BUSY with any operand (tdx_operand_busy() in tdx.c). */
export function isTdxOperandBusy(status: bigint): boolean {
  return tdxStatusCode(status) === TDX_STATUS.TDX_OPERAND_BUSY;
}

/**
 * What KVM makes of a SEAMCALL's status in the S-EPT hooks (tdx_sept_link_private_spt,
 * tdx_mem_page_aug): success is `ok`; TDX_OPERAND_BUSY is -EBUSY, which the fault path retries
 * (`busy`); anything else is a KVM_BUG_ON — the VM is bugged and the hook returns `errno`
 * (-EIO in tdx.c).
 */
export function seamcallToArchResult(leaf: string, status: bigint, errno: Errno = 'EIO'): ArchResult {
  if (status === TDX_STATUS.TDX_SUCCESS) return archOk();
  if (isTdxOperandBusy(status)) return archBusy(`${leaf}: ${tdxStatusName(status)}`);
  return archError(errno, `${leaf} failed with ${tdxStatusName(status)} (KVM_BUG_ON: the VM is bugged)`);
}
