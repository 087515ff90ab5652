/**
 * What a pKVM VM offers beyond the generic hooks: the VMM side ({@link PkvmVmApi}: inspection of
 * the hypervisor's ownership state) and the guest side ({@link PkvmGuestApi}: the vendor-hyp SMCCC
 * calls a protected guest issues). Declared to the sdk so a VM created with `type: 'pkvm'` is typed
 * with them.
 */
import type { ArchExit, ArchVm, GuestNpf } from '@cocokit/sdk';
import type { GuestPte, HypPage } from './ownership.js';

/**
 * The exit a guest's MEM_SHARE, MEM_UNSHARE or MEM_RELINQUISH ends in once EL2 has done it: the
 * call forwarded to userspace as arm64 KVM forwards SMCCC calls (KVM_EXIT_HYPERCALL with `nr` the
 * SMCCC function ID, as for KVM_SMCCC_FILTER_FWD_TO_USER in Documentation/virt/kvm/api.rst), so
 * the VMM updates guest_memfd / the memory attributes to match.
 */
export interface PkvmHypercallExit extends ArchExit {
  readonly reason: 'HYPERCALL';
  /** kvm_run.exit_reason: KVM_EXIT_HYPERCALL. */
  readonly exitReason: number;
  /** The SMCCC function ID (ARM_SMCCC_VENDOR_HYP_KVM_MEM_SHARE_FUNC_ID, ...). */
  readonly nr: number;
  /** [ipa, 0, 0, 0, 0, 0]: the page's guest physical address. */
  readonly args: readonly number[];
  /** kvm_run.hypercall.ret: 0 when userspace did the conversion; the guest gets INVALID_PARAMETER otherwise. */
  ret: number;
  /** kvm_run.hypercall.flags: 0 (an HVC, not an SMC). */
  readonly flags: number;
}

/** What userspace is asked to do for a {@link PkvmHypercallExit}. */
export interface PkvmMemRequest {
  /** share: make the page shared; unshare: make it private; relinquish: the guest gave it up (discard it). */
  readonly op: 'share' | 'unshare' | 'relinquish';
  /** Guest physical address, bytes. */
  readonly gpa: number;
  /** Bytes (one granule). */
  readonly size: number;
}

/** The VMM side of a pKVM VM. */
export interface PkvmVmApi {
  /** The VM's handle at EL2 (pkvm_handle_t). */
  readonly handle: number;
  /** The hypervisor's view of a host page: host and hyp states, hyp pins, the owning guest. */
  page(pfn: number): HypPage;
  /** This VM's stage-2 entry at `gfn` as EL2 keeps it; `undefined` for NOPAGE. */
  guestPte(gfn: number): GuestPte | undefined;
  /** Pages this VM owns or shares with the host. */
  readonly guestPages: number;
}

/**
 * The guest side of a pKVM VM: the vendor-hyp SMCCC calls of Documentation/virt/kvm/arm/hypercalls.rst.
 * Each returns what the guest reads in x0 (a `SMCCC_RET` code, or the granule for HYP_MEMINFO), a
 * {@link GuestNpf} when EL2 first has the host fault the page in (then issue the call again), or
 * ends in a {@link PkvmHypercallExit} whose answer `completeExit` returns.
 */
export interface PkvmGuestApi {
  /** ARM_SMCCC_KVM_FUNC_HYP_MEMINFO: the protection granule (4096), INVALID_PARAMETER with non-zero arguments. */
  hypMeminfo(arg1?: number, arg2?: number, arg3?: number): number;
  /** ARM_SMCCC_KVM_FUNC_MEM_SHARE of the granule at `ipa`. */
  memShare(ipa: number, arg2?: number, arg3?: number): number | GuestNpf;
  /** ARM_SMCCC_KVM_FUNC_MEM_UNSHARE of the granule at `ipa`. */
  memUnshare(ipa: number, arg2?: number, arg3?: number): number;
  /** ARM_SMCCC_KVM_FUNC_MEM_RELINQUISH of the granule at `ipa`: 0 at once when nothing is mapped there. */
  memRelinquish(ipa: number, arg2?: number, arg3?: number): number;
}

declare module '@cocokit/sdk' {
  interface ArchVmApis {
    pkvm: PkvmVmApi;
  }
  interface ArchGuestApis {
    pkvm: PkvmGuestApi;
  }
}

/** The {@link ArchVm} a pKVM VM is: every hook it implements present, with the pKVM APIs. */
export type PkvmArchVm = ArchVm<PkvmVmApi, PkvmGuestApi> &
  Required<
    Pick<
      ArchVm<PkvmVmApi, PkvmGuestApi>,
      | 'gmemPrepare'
      | 'gmemInvalidate'
      | 'maxMappingLevel'
      | 'hostAccess'
      | 'completeExit'
      | 'memoryRequest'
      | 'guestKernel'
      | 'checkInvariants'
      | 'destroy'
      | 'vmApi'
      | 'guestApi'
    >
  >;
