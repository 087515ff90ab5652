/**
 * PVALIDATE (APM Vol. 3 "PVALIDATE"; APM Vol. 2 §15.36.6, Table 15-40): the guest's instruction to
 * set or clear the Validated bit of the RMP entry backing one of its pages, at 4K or 2M. The
 * guest uses it after a page became private (validate) and before it becomes shared (rescind);
 * Linux's wrapper is pvalidate() in arch/x86/include/asm/sev.h.
 */
import { KvmError } from '@cocokit/sdk';
import { PAGES_PER_2M, PVALIDATE, type PvalidateRc, type RmpPageSize } from './constants.js';
import { npf, resolveRmpNpf, type SnpNpf } from './access.js';
import { translate, type SnpState } from './state.js';

/** What PVALIDATE did: a result code in EAX (with CF folded in as FAIL_NOUPDATE), or a nested page fault KVM handles. */
export type PvalidateResult = { readonly kind: 'done'; readonly rc: PvalidateRc } | SnpNpf;

const hex = (n: number): string => `0x${n.toString(16)}`;

/**
 * PVALIDATE of the page at `gpa` with page size `size` (RCX), validating or rescinding (RDX).
 * In the hardware's order:
 *
 * 1. FAIL_INPUT: a 2M request at an address that is not 2M-aligned.
 * 2. NPF `not-present`: the gfn has no private mapping (KVM faults it in; the guest retries).
 * 3. NPF `rmp`: the entry is not this guest's, is at another GPA, or is Immutable. KVM cannot
 *    resolve it (sev_handle_rmp_fault warns; the guest would fault forever): the VM is marked
 *    bugged (see resolveRmpNpf in access.ts).
 * 4. NPF `rmp` + SIZEM: a 4K request on a page covered by a 2M RMP entry: KVM's
 *    sev_handle_rmp_fault PSMASHes the entry at once and the NPF carries the range to zap; the
 *    guest retries. FAIL_SIZEMISMATCH: a 2M request on 4K RMP entries (the guest retries at 4K).
 * 5. FAIL_NOUPDATE (rFLAGS.CF = 1): Validated already had the requested value; nothing changes.
 * 6. SUCCESS: Validated is set (or cleared) for the 4K or 2M entry.
 *
 * The NPF is reported as a private write fault: PVALIDATE changes the page's RMP entry.
 */
export function pvalidate(s: SnpState, gpa: number, size: RmpPageSize, validate: boolean): PvalidateResult {
  if (!Number.isSafeInteger(gpa) || gpa < 0) throw new KvmError('EINVAL', 'pvalidate', `gpa ${gpa} is not an address`);
  s.sim.charge('snp.pvalidate');
  const gfn = Math.floor(gpa / 4096);
  const r = check(s, gpa, gfn, size, validate);
  if (r.kind === 'done' && r.rc === PVALIDATE.SUCCESS) {
    const pfn = translate(s, gfn) as number;
    s.rmp.setValidated(pfn, size, validate);
  }
  if (s.sim.trace.enabled) {
    s.sim.trace.emit('snp.pvalidate', { gfn, size, validate, rc: r.kind === 'done' ? r.rc : -1, npf: r.kind === 'npf' ? r.detail : null });
  }
  return r;
}

function check(s: SnpState, gpa: number, gfn: number, size: RmpPageSize, validate: boolean): PvalidateResult {
  if (size !== '4K' && size !== '2M') return done(PVALIDATE.FAIL_INPUT);
  if (size === '2M' && gfn % PAGES_PER_2M !== 0) return done(PVALIDATE.FAIL_INPUT);
  const fault = { gpa, access: 'write', encrypted: true } as const;
  const pfn = translate(s, gfn);
  if (pfn === undefined) return npf(fault, gfn, 'not-present', false, `no private mapping of gfn ${hex(gfn)}`);
  const e = s.rmp.lookup(pfn);
  if (!e.assigned || e.asid !== s.asid) return resolveRmpNpf(s, npf(fault, gfn, 'rmp', false, `pfn ${hex(pfn)} is not owned by ASID ${s.asid}`), pfn);
  if (e.gfn !== gfn) return resolveRmpNpf(s, npf(fault, gfn, 'rmp', false, `pfn ${hex(pfn)} is assigned at gfn ${hex(e.gfn)}, not ${hex(gfn)}`), pfn);
  if (e.immutable) return resolveRmpNpf(s, npf(fault, gfn, 'rmp', false, `pfn ${hex(pfn)} is immutable`), pfn);
  if (size === '4K' && e.size === '2M') return resolveRmpNpf(s, npf(fault, gfn, 'rmp', true, `4K PVALIDATE of gfn ${hex(gfn)} under a 2M RMP entry`), pfn);
  if (size === '2M' && e.size === '4K') return done(PVALIDATE.FAIL_SIZEMISMATCH);
  if (e.validated === validate) return done(PVALIDATE.FAIL_NOUPDATE);
  return done(PVALIDATE.SUCCESS);
}

const DONE = new Map<PvalidateRc, PvalidateResult>(
  Object.values(PVALIDATE).map((rc) => [rc, Object.freeze({ kind: 'done', rc })] as const),
);
function done(rc: PvalidateRc): PvalidateResult {
  return DONE.get(rc) as PvalidateResult;
}
