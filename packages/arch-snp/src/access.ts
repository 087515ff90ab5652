/**
 * Who may touch a page, by the RMP checks of APM Vol. 2 Table 15-39: the host (a write to a
 * guest-assigned page is an RMP #PF), KVM itself (refused: it would read ciphertext or fault), and
 * the guest (a private access needs an assigned, mutable, matching and validated entry, else a
 * nested page fault or a #VC). Faults are values, not exceptions (DESIGN.md, "Errors").
 */
import {
  KvmError,
  type Gfn,
  type GuestAccess,
  type GuestException,
  type GuestFault,
  type GuestNpf,
  type HostFault,
} from '@cocokit/sdk';
import { PAGES_PER_2M, VC_PAGE_NOT_VALIDATED } from './constants.js';
import { handleRmpFault } from './gmem.js';
import type { SnpState } from './state.js';

/**
 * A #VMEXIT(NPF) caused by the guest (EXITINFO1 bits: 31 RMP, 34 ENC, 35 SIZEM), as the contract's
 * {@link GuestNpf} (KVM handles it; the guest never sees it) with SNP's details. `not-present`: the
 * core's fault path (guest_memfd, sev_gmem_prepare, map), then the guest retries. `rmp`: an RMP
 * check failed; when KVM can resolve it, sev_handle_rmp_fault has PSMASHed the 2M entry and `zap`
 * says what the core zaps before the guest retries.
 */
export interface SnpNpf extends GuestNpf {
  readonly gfn: number;
  /** `not-present`: no private mapping of the gfn; `rmp`: an RMP check failed (EXITINFO1 bit 31). */
  readonly reason: 'not-present' | 'rmp';
  /** EXITINFO1.SIZEM (bit 35): a 4K PVALIDATE/RMPADJUST under a 2M RMP entry. */
  readonly sizem: boolean;
  /** Which check failed, for a person. */
  readonly detail: string;
}

/** X86_TRAP_VC: the #VC vector (arch/x86/include/asm/trapnr.h). */
export const X86_TRAP_VC = 29;

const hex = (n: number): string => `0x${n.toString(16)}`;

/**
 * The RMP check of a host access to `pfn`: a write to an assigned page (guest- or firmware-owned)
 * takes an RMP #PF (error code bit 31), which reaches a host process as SIGBUS; a read is allowed
 * (it returns ciphertext). `hostOrder` is the order of the host mapping the access goes through: a
 * write through a 2M mapping faults if any 4K page under it is assigned (which is why Linux splits
 * the direct map before a 4K RMPUPDATE).
 */
export function hostAccess(s: SnpState, pfn: number, write: boolean, hostOrder: 0 | 9 = 0): 'ok' | HostFault {
  if (!Number.isSafeInteger(pfn) || pfn < 0 || pfn >= s.ctx.host.nrFrames) {
    throw new KvmError('EFAULT', 'hostAccess', `pfn ${pfn} is outside host memory`);
  }
  if (!write) return 'ok';
  if (hostOrder === 9) {
    const base = pfn - (pfn % PAGES_PER_2M);
    const assigned = s.rmp.countAssigned(base, base + PAGES_PER_2M);
    if (assigned === 0) return 'ok';
    return { signal: 'SIGBUS', kind: 'rmp', reason: `RMP #PF: the 2M host mapping at pfn ${hex(base)} covers ${assigned} guest-assigned page(s)` };
  }
  if (!s.rmp.isAssigned(pfn)) return 'ok';
  const e = s.rmp.lookup(pfn);
  const owner = e.asid === 0 ? 'firmware-owned' : `assigned to ASID ${e.asid} at gfn ${hex(e.gfn)}`;
  return { signal: 'SIGBUS', kind: 'rmp', reason: `RMP #PF: pfn ${hex(pfn)} is ${owner} in the RMP` };
}

/**
 * A KVM-internal access to `pfn` (kvm_read_guest, kvm_write_guest, a copy into a page): refused
 * with `EFAULT` when the page is assigned, as KVM never touches guest-owned memory (a write would
 * take an RMP #PF in the kernel, a read would return ciphertext).
 */
export function kernelAccess(s: SnpState, pfn: number, write: boolean, op: string): void {
  if (!s.rmp.covers(pfn)) throw new KvmError('EFAULT', op, `pfn ${pfn} is outside host memory`);
  if (s.rmp.isAssigned(pfn)) {
    throw new KvmError('EFAULT', op, `KVM may not ${write ? 'write' : 'read'} pfn ${hex(pfn)}: it is assigned in the RMP`);
  }
}

/**
 * The RMP checks of a guest access the core's nested tables map (the `guestAccess` hook; APM Vol. 2
 * Table 15-39, in the hardware's priority: the RMP-covered, guest-owned, reverse-map, mutable and
 * page-size checks give an #NPF with the RMP bit, then Validated gives a #VC with error code
 * 0x404). KVM handles the #NPF in npf_interception: kvm_mmu_page_fault (nothing to do: the mapping
 * is there), then, for a private GPA, sev_handle_rmp_fault ({@link resolveRmpNpf}). So:
 *
 * - through a 4K nested mapping of a page whose RMP entry is 2M: PSMASH, zap `[gfn, gfn + 512)`,
 *   and the guest re-faults at 4K;
 * - through a 2M (or 1G) nested mapping of 4K RMP entries: "spurious" for KVM, which relies on the
 *   zap of whoever PSMASHed (sev_handle_rmp_fault's own, or guest_memfd's invalidation before
 *   sev_gmem_invalidate); the model has no racing CPU, so it asks for that zap itself: the huge
 *   mapping;
 * - a shared (C=0) access is checked as a hypervisor access: only a write to an assigned page
 *   faults, and sev_handle_rmp_fault stops at once ("Unexpected RMP fault for non-private GPA");
 * - whatever sev_handle_rmp_fault cannot fix (a page not assigned, another guest's, at another
 *   GPA, Immutable; the shared write) KVM warns about and re-enters the guest, which takes the same
 *   #NPF again, forever: nobody kills the guest. The model reports it with `ctx.markBugged` and
 *   returns the #NPF, so the VM stops instead of spinning. With a correct core these states are
 *   unreachable: it maps only pages guest_memfd prepared, and zaps before they leave.
 */
export function guestAccess(s: SnpState, a: GuestAccess): 'ok' | GuestException | SnpNpf {
  const op = 'guestAccess';
  if (!Number.isSafeInteger(a.gpa) || a.gpa < 0) throw new KvmError('EINVAL', op, `gpa ${a.gpa} is not an address`);
  if (!Number.isSafeInteger(a.gfn) || a.gfn < 0) throw new KvmError('EINVAL', op, `gfn ${a.gfn} is not a frame number`);
  if (!s.rmp.covers(a.pfn)) throw new KvmError('EFAULT', op, `pfn ${a.pfn} is outside host memory`);
  const gfn: number = a.gfn;
  const fault = { gpa: a.gpa, access: a.access, encrypted: a.private };
  if (!a.private) {
    if (a.access !== 'write' || !s.rmp.isAssigned(a.pfn)) return 'ok';
    if (s.sim.trace.enabled) s.sim.trace.emit('snp.rmp_fault', { gfn, pfn: a.pfn, action: 'ignored' });
    return unresolvable(s, npf(fault, gfn, 'rmp', false, `shared write to pfn ${hex(a.pfn)}, which is assigned in the RMP`));
  }
  const e = s.rmp.lookup(a.pfn);
  // The RMP has no 1G entries: a 1G nested mapping is checked against the 2M entries under it.
  const nptLevel = a.level === 0 ? 0 : 1;
  const rmpLevel = e.size === '2M' ? 1 : 0;
  let failed: string | undefined;
  if (!e.assigned) failed = `private access to pfn ${hex(a.pfn)}, which is hypervisor-owned`;
  else if (e.asid !== s.asid) failed = `pfn ${hex(a.pfn)} is owned by ASID ${e.asid}, not ${s.asid}`;
  else if (e.gfn !== gfn) failed = `pfn ${hex(a.pfn)} is assigned at gfn ${hex(e.gfn)}, not ${hex(gfn)}`;
  else if (e.immutable) failed = `pfn ${hex(a.pfn)} is immutable`;
  else if (nptLevel < rmpLevel) failed = `4K nested mapping of gfn ${hex(gfn)} over a 2M RMP entry`;
  else if (nptLevel > rmpLevel) {
    const pages = 512 ** a.level;
    const start = gfn - (gfn % pages);
    const n = npf(fault, gfn, 'rmp', false, `level-${a.level} nested mapping of gfn ${hex(gfn)} over a 4K RMP entry`);
    return resolveRmpNpf(s, n, a.pfn, { start, end: start + pages });
  }
  if (failed !== undefined) return resolveRmpNpf(s, npf(fault, gfn, 'rmp', false, failed), a.pfn);
  if (!e.validated) {
    if (s.sim.trace.enabled) s.sim.trace.emit('snp.vc', { gfn, errorCode: VC_PAGE_NOT_VALIDATED });
    return { kind: 'exception', vector: X86_TRAP_VC, name: '#VC', errorCode: VC_PAGE_NOT_VALIDATED, gpa: a.gpa };
  }
  return 'ok';
}

/** An {@link SnpNpf} for `fault`, with the range the core zaps first when KVM asks for one. */
export function npf(fault: GuestFault, gfn: number, reason: SnpNpf['reason'], sizem: boolean, detail: string, zap?: { start: number; end: number }): SnpNpf {
  const base = { kind: 'npf' as const, fault, gfn, reason, sizem, detail };
  return zap === undefined ? base : { ...base, zap: { start: zap.start as Gfn, end: zap.end as Gfn } };
}

/**
 * What KVM does about an RMP #NPF on a private GPA backed by `pfn` (a guest access or PVALIDATE):
 * sev_handle_rmp_fault ({@link handleRmpFault}), which checks neither the owner nor the GPA, only
 * whether the entry is assigned and 2M. A 2M entry is PSMASHed and `[gfn, gfn + 512)` zapped (so
 * a wrong-owner 2M page is split too, and faults again as 4K); a 4K entry is "spurious": resolved
 * only when `hugeMapping` says the cause is a huge nested mapping the model zaps; anything else is
 * {@link unresolvable}.
 */
export function resolveRmpNpf(s: SnpState, n: SnpNpf, pfn: number, hugeMapping?: { start: number; end: number }): SnpNpf {
  const r = handleRmpFault(s, n.gfn, pfn);
  if (r.action === 'psmash') return npf(n.fault, n.gfn, n.reason, n.sizem, n.detail, { start: r.zapStart, end: r.zapEnd });
  if (r.action === 'spurious' && hugeMapping !== undefined) return npf(n.fault, n.gfn, n.reason, n.sizem, n.detail, hugeMapping);
  return unresolvable(s, n);
}

/**
 * An RMP #NPF KVM cannot resolve (see {@link guestAccess}): sev_handle_rmp_fault warns and the vCPU
 * would fault forever; the model marks the VM bugged so it stops.
 */
export function unresolvable(s: SnpState, n: SnpNpf): SnpNpf {
  s.ctx.markBugged(`RMP #NPF at gpa ${hex(n.fault.gpa)} that KVM cannot resolve: ${n.detail} (sev_handle_rmp_fault only warns, and the vCPU would fault again forever)`);
  return n;
}
