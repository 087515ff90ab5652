/**
 * PVALIDATE (APM Vol. 3 "PVALIDATE"; APM Vol. 2 §15.36.6, Table 15-40): the guest's instruction to
 * set or clear the Validated bit of the RMP entry backing one of its pages, at 4K or 2M. The
 * guest uses it after a page became private (validate) and before it becomes shared (rescind);
 * Linux's wrapper is pvalidate() in arch/x86/include/asm/sev.h.
 */
import { KvmError, gfn as toGfn } from '@cocokit/sdk';
import { PAGES_PER_2M, PVALIDATE, type PvalidateRc, type RmpPageSize } from './constants.js';
import { npf, resolveRmpNpf, type SnpNpf } from './access.js';
import type { SnpState } from './state.js';

/** What PVALIDATE did: a result code in EAX (with CF folded in as FAIL_NOUPDATE), or a nested page fault KVM handles. */
export type PvalidateResult = { readonly kind: 'done'; readonly rc: PvalidateRc } | SnpNpf;

const hex = (n: number): string => `0x${n.toString(16)}`;

/**
 * PVALIDATE of the page at `gpa` with page size `size` (RCX), validating or rescinding (RDX).
 * In the hardware's order (APM Vol. 3 "PVALIDATE"; APM Vol. 2 §15.36.6 and Tables 15-39/15-40):
 *
 * 1. FAIL_INPUT: a 2M request at an address that is not 2M-aligned.
 * 2. The nested page table walk: PVALIDATE operates on the guest's own mapping, so the host page
 *    it checks and updates is the one the NPT maps the gfn to, which the model asks the core for
 *    (`ctx.translate(gfn, 'private')`: the one root's private leaf, SNP having no mirror root).
 *    No private mapping: NPF `not-present`. KVM's fault path (kvm_gmem_get_pfn, sev_gmem_prepare,
 *    map) maps the page, or exits to userspace (KVM_EXIT_MEMORY_FAULT) when the gfn is shared in
 *    its attributes; the guest retries.
 * 3. NPF `rmp` (the RMP-Covered, Guest-Owned, Reverse-Map and Mutable checks on the entry of that
 *    pfn): the entry is not this guest's, is at another GPA, or is Immutable. KVM cannot resolve it
 *    (sev_handle_rmp_fault warns; the guest would fault forever): the VM is marked bugged (see
 *    resolveRmpNpf in access.ts).
 * 4. NPF `rmp` + SIZEM: a 4K request on a page covered by a 2M RMP entry: KVM's
 *    sev_handle_rmp_fault PSMASHes the entry at once and the NPF carries the range to zap; the
 *    guest retries. FAIL_SIZEMISMATCH: a 2M request on 4K RMP entries (the guest retries at 4K).
 * 5. FAIL_NOUPDATE (rFLAGS.CF = 1): Validated already had the requested value; nothing changes.
 * 6. SUCCESS: Validated is set (or cleared) in the RMP entry of the mapped pfn (4K, or the whole
 *    2M entry).
 *
 * The NPF is reported as a private write fault: PVALIDATE changes the page's RMP entry.
 */
export function pvalidate(s: SnpState, gpa: number, size: RmpPageSize, validate: boolean): PvalidateResult {
  if (!Number.isSafeInteger(gpa) || gpa < 0) throw new KvmError('EINVAL', 'pvalidate', `gpa ${gpa} is not an address`);
  s.sim.charge('snp.pvalidate');
  const gfn = Math.floor(gpa / 4096);
  const r = check(s, gpa, gfn, size, validate);
  if (r.kind === 'update') s.rmp.setValidated(r.pfn, size, validate);
  const result = r.kind === 'update' ? done(PVALIDATE.SUCCESS) : r;
  if (s.sim.trace.enabled) {
    s.sim.trace.emit('snp.pvalidate', { gfn, size, validate, rc: result.kind === 'done' ? result.rc : -1, npf: result.kind === 'npf' ? result.detail : null });
  }
  return result;
}

/** The checks passed: Validated of the RMP entry of `pfn` (the page the NPT maps) is to change. */
type Update = { readonly kind: 'update'; readonly pfn: number };

function check(s: SnpState, gpa: number, gfn: number, size: RmpPageSize, validate: boolean): PvalidateResult | Update {
  if (size !== '4K' && size !== '2M') return done(PVALIDATE.FAIL_INPUT);
  if (size === '2M' && gfn % PAGES_PER_2M !== 0) return done(PVALIDATE.FAIL_INPUT);
  const fault = { gpa, access: 'write', encrypted: true } as const;
  const leaf = s.ctx.translate(toGfn(gfn), 'private');
  if (leaf === undefined) return npf(fault, gfn, 'not-present', false, `no private nested mapping of gfn ${hex(gfn)}`);
  const pfn: number = leaf.pfn;
  if (!s.rmp.covers(pfn)) throw new KvmError('EFAULT', 'pvalidate', `the nested tables map gfn ${hex(gfn)} to pfn ${hex(pfn)}, outside host memory`);
  const e = s.rmp.lookup(pfn);
  if (!e.assigned || e.asid !== s.asid) return resolveRmpNpf(s, npf(fault, gfn, 'rmp', false, `pfn ${hex(pfn)} is not owned by ASID ${s.asid}`), pfn);
  if (e.gfn !== gfn) return resolveRmpNpf(s, npf(fault, gfn, 'rmp', false, `pfn ${hex(pfn)} is assigned at gfn ${hex(e.gfn)}, not ${hex(gfn)}`), pfn);
  if (e.immutable) return resolveRmpNpf(s, npf(fault, gfn, 'rmp', false, `pfn ${hex(pfn)} is immutable`), pfn);
  if (size === '4K' && e.size === '2M') return resolveRmpNpf(s, npf(fault, gfn, 'rmp', true, `4K PVALIDATE of gfn ${hex(gfn)} under a 2M RMP entry`), pfn);
  if (size === '2M' && e.size === '4K') return done(PVALIDATE.FAIL_SIZEMISMATCH);
  if (e.validated === validate) return done(PVALIDATE.FAIL_NOUPDATE);
  return { kind: 'update', pfn };
}

const DONE = new Map<PvalidateRc, PvalidateResult>(
  Object.values(PVALIDATE).map((rc) => [rc, Object.freeze({ kind: 'done', rc })] as const),
);
function done(rc: PvalidateRc): PvalidateResult {
  return DONE.get(rc) as PvalidateResult;
}
