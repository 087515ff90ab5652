/**
 * The state of one SNP VM and KVM's RMP wrappers that every operation shares: rmp_make_private,
 * rmp_make_shared and snp_rmptable_psmash (arch/x86/virt/svm/sev.c, arch/x86/kvm/svm/sev.c), each
 * charging its cost and emitting its trace event. Internal to the package.
 */
import { uapi, type ArchExit, type ArchVmContext, type RangeMap, type Sim } from '@cocokit/sdk';
import { PAGES_PER_2M, PSMASH, RMPUPDATE, type PsmashRc, type RmpPageSize, type RmpUpdateRc } from './constants.js';
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

/** One SNP VM. */
export interface SnpState {
  readonly ctx: ArchVmContext;
  readonly sim: Sim;
  readonly rmp: Rmp;
  /** The VM's ASID (sev->asid). */
  readonly asid: number;
  /**
   * gfn → (pfn − gfn) for the private pages this VM assigned in the RMP (gmemPrepare, populate):
   * the translation PVALIDATE goes through. Guest accesses use the pfn and level the core's nested
   * tables give `guestAccess` instead; PVALIDATE keeps the plugin's own view because
   * `ctx.translate(gfn, 'private')` is only defined for archs with a mirror root (see the README,
   * "The contract it uses").
   */
  readonly gfnToPfn: RangeMap<number>;
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

/** The pfn `gfn` translates to in this VM, or `undefined` when it has no private mapping. */
export function translate(s: SnpState, gfn: number): number | undefined {
  const d = s.gfnToPfn.get(gfn);
  return d === undefined ? undefined : gfn + d;
}

/**
 * rmp_make_private(pfn, gpa, level, asid, immutable): RMPUPDATE assigning `[pfn, pfn + n)` to this
 * VM at `gfn`. Records the translation on success, unless `guestMapped` is false.
 */
export function rmpMakePrivate(
  s: SnpState,
  pfn: number,
  gfn: number,
  size: RmpPageSize,
  immutable: boolean,
  why: string,
  guestMapped = true,
): RmpUpdateRc {
  s.sim.charge('snp.rmpupdate');
  const rc = s.rmp.rmpupdate(pfn, size, { asid: s.asid, gfn, immutable });
  const n = size === '2M' ? PAGES_PER_2M : 1;
  // A VMSA (all at GPA 0xFFFFFFFFF000) is not guest memory: no translation for it.
  if (rc === RMPUPDATE.SUCCESS && guestMapped) s.gfnToPfn.set(gfn, gfn + n, pfn - gfn);
  if (s.sim.trace.enabled) s.sim.trace.emit('snp.rmpupdate', { pfn, npages: n, op: 'private', asid: s.asid, gfn, immutable, rc, why });
  return rc;
}

/**
 * rmp_make_shared(pfn, level): RMPUPDATE returning `[pfn, pfn + n)` to the hypervisor. Drops this
 * VM's translations that pointed at those pages.
 */
export function rmpMakeShared(s: SnpState, pfn: number, size: RmpPageSize, why: string): RmpUpdateRc {
  const n = size === '2M' ? PAGES_PER_2M : 1;
  const owned: Array<{ gfn: number; end: number; delta: number }> = [];
  if (s.rmp.covers(pfn)) {
    for (const r of s.rmp.assignedRuns(pfn, Math.min(pfn + n, s.rmp.nrFrames))) {
      if (r.entry.asid === s.asid && !r.entry.vmsa) owned.push({ gfn: r.entry.gfn, end: r.entry.gfn + (r.end - r.start), delta: r.start - r.entry.gfn });
    }
  }
  s.sim.charge('snp.rmpupdate');
  const rc = s.rmp.rmpupdate(pfn, size, null);
  if (rc === RMPUPDATE.SUCCESS) {
    for (const o of owned) {
      // Only the translations that still point at these pages: the gfn may have been remapped.
      s.gfnToPfn.update(o.gfn, o.end, (d) => (d === o.delta ? undefined : d));
    }
  }
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
