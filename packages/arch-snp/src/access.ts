/**
 * Who may touch a page, by the RMP checks of APM Vol. 2 Table 15-39: the host (a write to a
 * guest-assigned page is an RMP #PF), KVM itself (refused: it would read ciphertext or fault), and
 * the guest (a private access needs an assigned, mutable, matching and validated entry, else a
 * nested page fault or a #VC). Faults are values, not exceptions (DESIGN.md, "Errors").
 */
import { KvmError, type Access, type HostFault } from '@cocokit/sdk';
import { PAGES_PER_2M, VC_PAGE_NOT_VALIDATED } from './constants.js';
import { translate, type SnpState } from './state.js';

/**
 * A #VMEXIT(NPF) caused by the guest (EXITINFO1 bits: 31 RMP, 34 ENC, 35 SIZEM). KVM handles it,
 * the guest never sees it: `not-present` → the core's fault path (guest_memfd, sev_gmem_prepare,
 * map) then the guest retries; `rmp` with a 2M entry → {@link SnpVmApi.handleRmpFault} (PSMASH +
 * zap) then retry.
 */
export interface SnpNpf {
  readonly kind: 'npf';
  readonly gfn: number;
  /** `not-present`: no private mapping of the gfn; `rmp`: an RMP check failed (EXITINFO1 bit 31). */
  readonly reason: 'not-present' | 'rmp';
  /** EXITINFO1.SIZEM (bit 35): a 4K PVALIDATE/RMPADJUST under a 2M RMP entry. */
  readonly sizem: boolean;
  /** Which check failed, for a person. */
  readonly detail: string;
}

/** The #VC exception (vector 29) the guest receives: the value a guest program sees. */
export interface SnpVc {
  readonly kind: 'vc';
  /** X86_TRAP_VC. */
  readonly vector: 29;
  /** The #VC error code: 0x404 (page not validated). */
  readonly errorCode: number;
  /** The faulting address (CR2; the model has no guest virtual addresses, so the GPA). */
  readonly gpa: number;
}

/** A guest access as {@link guestAccess} checks it. */
export interface SnpGuestAccess {
  /** Guest physical address, bytes. */
  readonly gpa: number;
  readonly access: Access;
  /** The C-bit of the guest's PTE: a private (encrypted) access. */
  readonly encrypted: boolean;
  /**
   * For a shared (C=0) access: the host pfn the nested mapping points at, whose RMP entry must be
   * hypervisor-owned for a write. Unused for private accesses (the VM's own translation is used).
   */
  readonly pfn?: number;
  /** The level the core mapped the gfn at (0 = 4K, 1 = 2M); checked against the RMP entry size. */
  readonly level?: 0 | 1;
}

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
 * The checks of a guest access (APM Table 15-39, in the hardware's priority: nested paging first,
 * then the RMP checks RMP-covered, guest-owned, reverse-map, mutable and page-size, which give an
 * NPF, then Validated, which gives a #VC with error code 0x404).
 */
export function guestAccess(s: SnpState, a: SnpGuestAccess): 'ok' | SnpNpf | SnpVc {
  if (!Number.isSafeInteger(a.gpa) || a.gpa < 0) throw new KvmError('EINVAL', 'guestAccess', `gpa ${a.gpa} is not an address`);
  const gfn = Math.floor(a.gpa / 4096);
  if (!a.encrypted) {
    // C=0: only a write is checked (Hypervisor-Owned); a read of a shared page always works.
    if (a.access !== 'write' || a.pfn === undefined || !s.rmp.isAssigned(a.pfn)) return 'ok';
    return npf(gfn, 'rmp', false, `shared write to pfn ${hex(a.pfn)}, which is assigned in the RMP`);
  }
  const pfn = translate(s, gfn);
  if (pfn === undefined) return npf(gfn, 'not-present', false, `no private mapping of gfn ${hex(gfn)}`);
  const e = s.rmp.lookup(pfn);
  if (!e.assigned || e.asid !== s.asid) return npf(gfn, 'rmp', false, `pfn ${hex(pfn)} is not owned by ASID ${s.asid}`);
  if (e.gfn !== gfn) return npf(gfn, 'rmp', false, `pfn ${hex(pfn)} is assigned at gfn ${hex(e.gfn)}, not ${hex(gfn)}`);
  if (e.immutable) return npf(gfn, 'rmp', false, `pfn ${hex(pfn)} is immutable`);
  const rmpLevel = e.size === '2M' ? 1 : 0;
  if (a.level !== undefined && a.level !== rmpLevel) {
    return npf(gfn, 'rmp', false, `nested mapping at level ${a.level}, RMP entry is ${e.size}`);
  }
  if (!e.validated) {
    if (s.sim.trace.enabled) s.sim.trace.emit('snp.vc', { gfn, errorCode: VC_PAGE_NOT_VALIDATED });
    return { kind: 'vc', vector: 29, errorCode: VC_PAGE_NOT_VALIDATED, gpa: a.gpa };
  }
  return 'ok';
}

/** An {@link SnpNpf}. */
export function npf(gfn: number, reason: SnpNpf['reason'], sizem: boolean, detail: string): SnpNpf {
  return { kind: 'npf', gfn, reason, sizem, detail };
}
