/**
 * What `vcpu.run()` returns: the exit to userspace, as a value with the kernel's exit reason name
 * and the fields of the matching `kvm_run` union member (Documentation/virt/kvm/api.rst, "The
 * kvm_run structure"). Exits that mark a failed KVM_RUN (MEMORY_FAULT) carry the errno the ioctl
 * fails with, so a prototype written against them handles them the way it must on real KVM.
 */
import type { ArchExit, Errno } from '@cocokit/sdk';
import type { MemoryFaultExit } from '@cocokit/mmu';

export type { MemoryFaultExit } from '@cocokit/mmu';

/**
 * KVM_EXIT_HYPERCALL (kvm_run.hypercall): a hypercall userspace asked to handle with
 * KVM_CAP_EXIT_HYPERCALL (KVM_HC_MAP_GPA_RANGE, the way SNP and TDX guests ask for conversions).
 * Userspace writes `ret` (0 = done) and runs the vCPU again.
 */
export interface HypercallExit {
  readonly reason: 'HYPERCALL';
  readonly exitReason: number;
  readonly nr: number;
  readonly args: readonly number[];
  /** kvm_run.hypercall.ret: written by userspace before the next KVM_RUN. */
  ret: number;
  /** kvm_run.hypercall.flags (KVM_EXIT_HYPERCALL_LONG_MODE). */
  readonly flags?: number;
  readonly [field: string]: unknown;
}

/**
 * KVM_EXIT_MMIO (kvm_run.mmio): an access to a gpa no memslot backs (or a write to a read-only
 * slot). For a read, userspace fills `data` before running the vCPU again; the guest's read returns it.
 */
export interface MmioExit {
  readonly reason: 'MMIO';
  readonly exitReason: number;
  readonly phys: number;
  readonly len: number;
  readonly isWrite: boolean;
  data: Uint8Array;
}

/** KVM_EXIT_HLT: the guest halted (no in-kernel local APIC here: userspace sees every HLT). */
export interface HltExit {
  readonly reason: 'HLT';
  readonly exitReason: number;
}

/**
 * KVM_EXIT_SYSTEM_EVENT with KVM_SYSTEM_EVENT_SHUTDOWN: the guest program returned (the guest
 * powered off). Running the vCPU again returns the same exit.
 */
export interface SystemEventExit {
  readonly reason: 'SYSTEM_EVENT';
  readonly exitReason: number;
  readonly type: number;
}

/**
 * KVM_RUN failed without an exit: `EIO` once the VM is dead (KVM_BUG_ON, kvm_vm_dead), or the
 * errno of a guest operation the kernel refuses. Not a kvm_run exit: the value stands for the
 * ioctl's -1/errno.
 */
export interface RunErrorExit {
  readonly reason: 'RUN_ERROR';
  readonly errno: Errno;
  readonly message: string;
}

/** Any exit `vcpu.run()` returns. Arch and extension exits carry their own `reason`. */
export type VcpuExit = MemoryFaultExit | HypercallExit | MmioExit | HltExit | SystemEventExit | RunErrorExit | ArchExit;

/** The exit reasons the core itself produces. */
export const CORE_EXIT_REASONS = ['MEMORY_FAULT', 'HYPERCALL', 'MMIO', 'HLT', 'SYSTEM_EVENT', 'RUN_ERROR'] as const;

/** Narrows an exit by its reason. */
export function isExit<R extends VcpuExit['reason']>(exit: VcpuExit, reason: R): exit is Extract<VcpuExit, { reason: R }> {
  return exit.reason === reason;
}
