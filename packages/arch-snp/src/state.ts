/**
 * The state of one SNP VM and KVM's RMP wrappers that every operation shares: rmp_make_private,
 * rmp_make_shared and snp_rmptable_psmash (arch/x86/virt/svm/sev.c, arch/x86/kvm/svm/sev.c), each
 * charging its cost and emitting its trace event. Internal to the package.
 */
import { uapi, type ArchExit, type ArchVmContext, type Sim } from '@cocokit/sdk';
import { PAGES_PER_2M, PSMASH, type PsmashRc, type RmpPageSize, type RmpUpdateRc } from './constants.js';
import type { LaunchState } from './launch.js';
import type { Rmp } from './rmp.js';

/**
 * A page state change in flight on one vCPU, waiting for userspace (psc.ts): what KVM keeps in
 * `vcpu->arch.complete_userspace_io` (snp_complete_psc_msr or snp_complete_one_psc) and in
 * `svm->sev_es` (ghcb_sa, psc_idx, psc_inflight) until the vCPU runs again.
 */
export interface PendingPsc {
  readonly kind: 'msr' | 'buffer';
  /** The exit handed to userspace, as the plugin built it. */
  readonly exit: ArchExit & { ret: number };
  /** For a PSC buffer: the guest's buffer (svm->sev_es.ghcb_sa). */
  readonly buffer?: unknown;
  /** For a PSC buffer: the first in-flight entry and how many are in flight (psc_idx, psc_inflight). */
  readonly idx: number;
  readonly inflight: number;
}

/**
 * One SNP VM. It keeps no gfn → pfn map: which host page backs a gfn is what the core's nested
 * tables say (`ctx.translate`), as on the CPU the nested page table walk decides it. The only
 * gfns kept are the ones the hardware keeps: the GPA of each RMP entry (the reverse map, indexed
 * by pfn, in {@link Rmp}).
 */
export interface SnpState {
  readonly ctx: ArchVmContext;
  readonly sim: Sim;
  readonly rmp: Rmp;
  /** The VM's ASID (sev->asid). */
  readonly asid: number;
  /** PSCs in flight, by vCPU ({@link vcpuId}). */
  readonly pendingPsc: Map<number, PendingPsc>;
  /** Pages KVM gave up on (snp_leak_pages): an RMPUPDATE to shared failed. */
  leakedPages: number;
  launch: LaunchState;
}

/**
 * The vCPU a guest operation runs on: `ctx.vcpu`, or, outside the core (a plugin test calling the
 * guest API directly), the current sim actor, so per-vCPU state still has one key per caller.
 */
export function vcpuId(s: SnpState): number {
  return s.ctx.vcpu ?? s.sim.current.id;
}

/**
 * user_exit_on_hypercall(kvm, KVM_HC_MAP_GPA_RANGE): whether userspace enabled the exit with
 * KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL), whose args[0] is a bitmap of hypercall numbers
 * (kvm->arch.hypercall_exit_enabled). Read at every PSC, as KVM does, so enabling it later works.
 */
export function mapGpaRangeExitEnabled(s: SnpState): boolean {
  const bitmap = s.ctx.enabledCap(uapi.KVM_CAP_EXIT_HYPERCALL);
  // Bit 12: below 2^31, so the 32-bit operators are exact.
  return bitmap !== undefined && (Math.floor(bitmap / 2 ** uapi.KVM_HC_MAP_GPA_RANGE) & 1) === 1;
}

/**
 * rmp_make_private(pfn, gpa, level, asid, immutable): RMPUPDATE assigning `[pfn, pfn + n)` to this
 * VM at `gfn`.
 */
export function rmpMakePrivate(s: SnpState, pfn: number, gfn: number, size: RmpPageSize, immutable: boolean, why: string): RmpUpdateRc {
  s.sim.charge('snp.rmpupdate');
  const rc = s.rmp.rmpupdate(pfn, size, { asid: s.asid, gfn, immutable });
  const n = size === '2M' ? PAGES_PER_2M : 1;
  if (s.sim.trace.enabled) s.sim.trace.emit('snp.rmpupdate', { pfn, npages: n, op: 'private', asid: s.asid, gfn, immutable, rc, why });
  return rc;
}

/** rmp_make_shared(pfn, level): RMPUPDATE returning `[pfn, pfn + n)` to the hypervisor. */
export function rmpMakeShared(s: SnpState, pfn: number, size: RmpPageSize, why: string): RmpUpdateRc {
  const n = size === '2M' ? PAGES_PER_2M : 1;
  s.sim.charge('snp.rmpupdate');
  const rc = s.rmp.rmpupdate(pfn, size, null);
  if (s.sim.trace.enabled) s.sim.trace.emit('snp.rmpupdate', { pfn, npages: n, op: 'shared', asid: 0, gfn: 0, immutable: false, rc, why });
  return rc;
}

/**
 * snp_rmptable_psmash(pfn): PSMASH of the 2M entry covering `pfn`, retried while FAIL_INUSE (the
 * model has no concurrent RMP user, so it never is).
 */
export function rmptablePsmash(s: SnpState, pfn: number, why: string): PsmashRc {
  const base = pfn - (pfn % PAGES_PER_2M);
  let rc: PsmashRc;
  do {
    s.sim.charge('snp.psmash');
    rc = s.rmp.psmash(base);
  } while (rc === PSMASH.FAIL_INUSE);
  if (s.sim.trace.enabled) s.sim.trace.emit('snp.psmash', { pfn: base, rc, why });
  return rc;
}
