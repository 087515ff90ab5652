/**
 * What an SNP VM offers beyond the generic hooks: the VMM side ({@link SnpVmApi}, the KVM_SEV_*
 * commands and RMP inspection) and the guest side ({@link SnpGuestApi}, the instructions and GHCB
 * requests a guest program issues). Declared to the sdk so a VM created with `type: 'snp'` is
 * typed with them.
 */
import type { ArchVm, HostFault } from '@cocokit/sdk';
import type { RmpPageSize } from './constants.js';
import type { LaunchPageResolver, LaunchPhase, SnpLaunchFinishParams, SnpLaunchStartParams, SnpLaunchUpdateParams } from './launch.js';
import type { PscBuffer } from './psc.js';
import type { PvalidateResult } from './pvalidate.js';
import type { RmpEntry, RmpStats } from './rmp.js';

/** The VMM side of an SNP VM. */
export interface SnpVmApi {
  /** The VM's ASID. */
  readonly asid: number;
  /** RMPREAD of one host page (the machine-wide RMP this VM shares with every SNP VM of its host). */
  rmpEntry(pfn: number): RmpEntry;
  /** Counts of the machine-wide RMP. */
  rmpStats(): RmpStats;
  /** KVM_SEV_SNP_LAUNCH_START. */
  launchStart(params: SnpLaunchStartParams): void;
  /**
   * KVM_SEV_SNP_LAUNCH_UPDATE over `resolve` (guest_memfd's gfn → pfn and the source page);
   * returns what is left to do.
   */
  launchUpdate(params: SnpLaunchUpdateParams, resolve: LaunchPageResolver): { gfnStart: number; npages: number };
  /** Registers a vCPU's VMSA (page and bytes) to be measured at LAUNCH_FINISH. */
  addVmsa(pfn: number, bytes: Uint8Array): void;
  /** KVM_SEV_SNP_LAUNCH_FINISH; the same as the `finalize` hook with parameters. */
  launchFinish(params?: SnpLaunchFinishParams): Uint8Array;
  /** The launch digest so far (after LAUNCH_FINISH: the final one). */
  launchDigest(): Uint8Array;
  /** Where the launch is. */
  readonly launchPhase: LaunchPhase;
  /** A host access through a mapping of `hostOrder` (0 = 4K, 9 = 2M): a 2M write faults if any page under it is assigned. */
  hostAccessAt(pfn: number, write: boolean, hostOrder: 0 | 9): 'ok' | HostFault;
  /** A KVM-internal access (kvm_read_guest / kvm_write_guest): throws `EFAULT` for an assigned page. */
  kernelAccess(pfn: number, write: boolean, op: string): void;
  /** Pages KVM leaked because an RMPUPDATE to shared failed (snp_leak_pages). */
  readonly leakedPages: number;
}

/** The guest side of an SNP VM: what a guest program may call. */
export interface SnpGuestApi {
  /**
   * PVALIDATE of the page at `gpa`, 4K or 2M, validating or rescinding: a result code, or the
   * nested page fault it took (a contract `GuestNpf`, for the core's fault path; then issue it again).
   */
  pvalidate(gpa: number, size: RmpPageSize, validate: boolean): PvalidateResult;
  /**
   * A PSC buffer VMGEXIT; returns SW_EXITINFO2. May exit to userspace (KVM_HC_MAP_GPA_RANGE): the
   * value then comes from the VM's `completeExit` once userspace has answered.
   */
  psc(buffer: PscBuffer): number;
  /** A GHCB MSR protocol PSC; returns the response MSR value (or exits, then `completeExit` returns it). */
  ghcbMsrPsc(msr: bigint): bigint;
}

declare module '@cocokit/sdk' {
  interface ArchVmApis {
    snp: SnpVmApi;
  }
  interface ArchGuestApis {
    snp: SnpGuestApi;
  }
}

/**
 * The {@link ArchVm} an SNP VM is: every hook it implements is present (so callers holding the
 * plugin's own type need no `?.`), with the SNP APIs.
 */
export type SnpArchVm = ArchVm<SnpVmApi, SnpGuestApi> &
  Required<
    Pick<
      ArchVm<SnpVmApi, SnpGuestApi>,
      | 'classifyFault'
      | 'gmemPrepare'
      | 'gmemInvalidate'
      | 'maxMappingLevel'
      | 'populate'
      | 'hostAccess'
      | 'finalize'
      | 'guestAccess'
      | 'completeExit'
      | 'guestKernel'
      | 'checkInvariants'
      | 'destroy'
      | 'vmApi'
      | 'guestApi'
    >
  >;
