/**
 * The guest OS's SEV-SNP memory-encryption code (the `guestKernel` of the contract), after Linux
 * arch/x86/coco/sev/core.c: set_pages_state / __set_pages_state (set_memory_decrypted and
 * set_memory_encrypted end there), vmgexit_psc, pval_pages / pvalidate_pages, and
 * snp_accept_memory. It is guest code: it touches no plugin state, only yields calls of the
 * plugin's own guest API (`{ kind: 'arch', op: 'psc' | 'pvalidate', args }`), which the core runs
 * on the vCPU, and hands back the nested page faults those calls take for KVM to resolve.
 *
 * Per descriptor of at most VMGEXIT_PSC_MAX_COUNT (253) entries, 2M entries where the range is
 * 2M-aligned and at least 2M long (the direct map's use_large_entry), as __set_pages_state:
 *
 * - to shared: PVALIDATE rescind every entry first ("Page validation must be rescinded before
 *   changing to shared"), then the PSC VMGEXIT;
 * - to private (and accept): the PSC VMGEXIT first, then PVALIDATE validate ("Page validation must
 *   be performed after changing to private").
 *
 * Where Linux terminates the guest (sev_es_terminate with GHCB_TERM_PSC or GHCB_TERM_PVALIDATE: a
 * PSC that KVM failed, a PVALIDATE that did not return 0, FAIL_NOUPDATE included) the operation
 * ends with `{ ok: false, reason }`. Not modelled: the GHCB MSR protocol path used before the GHCB
 * is set up (early_set_pages_state; `guestApi.ghcbMsrPsc` is there for programs that want it),
 * PVALIDATE through an SVSM at VMPL > 0 (svsm_pval_pages), and the cache-eviction mitigation
 * after validating (sev_evict_cache).
 */
import {
  KvmError,
  ModelInvariantError,
  type ArchGuestCall,
  type ArchGuestKernel,
  type ArchGuestOutcome,
  type ArchGuestStep,
  type GuestException,
  type GuestNpf,
} from '@cocokit/sdk';
import { PAGES_PER_2M, PSC_OP, PVALIDATE, VC_PAGE_NOT_VALIDATED, VMGEXIT_PSC_ERROR, VMGEXIT_PSC_MAX_COUNT, type PscOpName, type RmpPageSize } from './constants.js';
import { X86_TRAP_VC } from './access.js';
import { createPscBuffer, type PscBuffer } from './psc.js';
import type { PvalidateResult } from './pvalidate.js';

const PAGE = 4096;
const OK: ArchGuestOutcome = Object.freeze({ ok: true });
const hex = (n: number): string => `0x${n.toString(16)}`;

/** A guest-kernel operation: the steps it yields, the outcome it returns, what each step returns into it. */
type GuestOp<T> = Generator<ArchGuestStep, T, unknown>;

/** The SNP guest kernel: a plain object of generator functions (guest code keeps no plugin state). */
export const snpGuestKernel: ArchGuestKernel = {
  convert(gpa, size, toPrivate) {
    const [start, end] = range(gpa, size, toPrivate ? 'set_memory_encrypted' : 'set_memory_decrypted');
    return setPagesState(start, end, toPrivate ? 'PRIVATE' : 'SHARED');
  },
  accept(gpa, size) {
    // snp_accept_memory: set_pages_state(SNP_PAGE_STATE_PRIVATE) over the range.
    const [start, end] = range(gpa, size, 'snp_accept_memory');
    return setPagesState(start, end, 'PRIVATE');
  },
  isUnaccepted(e: GuestException): boolean {
    // A private access to a page whose RMP entry is not validated: #VC with error code 0x404
    // (APM Table 15-39), the only thing the guest sees of memory it has not accepted.
    return e.vector === X86_TRAP_VC && e.errorCode === VC_PAGE_NOT_VALIDATED;
  },
};

/** Checks the range eagerly (a generator would only throw at its first step): `[startGfn, endGfn)`. */
function range(gpa: number, size: number, op: string): [number, number] {
  if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa % PAGE !== 0) throw new KvmError('EINVAL', op, `gpa ${gpa} is not a page-aligned address`);
  if (!Number.isSafeInteger(size) || size < 0 || size % PAGE !== 0) throw new KvmError('EINVAL', op, `size ${size} is not a whole number of pages`);
  if (!Number.isSafeInteger(gpa + size)) throw new KvmError('EINVAL', op, `[${gpa}, ${gpa} + ${size}) is beyond the address space`);
  return [gpa / PAGE, (gpa + size) / PAGE];
}

/** set_pages_state: one __set_pages_state per descriptor until the range is done. */
function* setPagesState(start: number, end: number, op: 'PRIVATE' | 'SHARED'): GuestOp<ArchGuestOutcome> {
  let gfn = start;
  while (gfn < end) {
    const requests: Array<{ gfn: number; op: PscOpName; size: RmpPageSize }> = [];
    while (gfn < end && requests.length < VMGEXIT_PSC_MAX_COUNT) {
      const large = gfn % PAGES_PER_2M === 0 && end - gfn >= PAGES_PER_2M;
      requests.push({ gfn, op, size: large ? '2M' : '4K' });
      gfn += large ? PAGES_PER_2M : 1;
    }
    const desc = createPscBuffer(requests);
    if (op === 'SHARED') {
      const r = yield* pvalidatePages(desc);
      if (!r.ok) return r;
    }
    const r = yield* vmgexitPsc(desc);
    if (!r.ok) return r;
    if (op === 'PRIVATE') {
      const v = yield* pvalidatePages(desc);
      if (!v.ok) return v;
    }
  }
  return OK;
}

/**
 * vmgexit_psc: issues the PSC VMGEXIT until KVM has processed every entry (the GHCB spec lets the
 * hypervisor resume the guest early), checking each result as Linux does.
 */
function* vmgexitPsc(desc: PscBuffer): GuestOp<ArchGuestOutcome> {
  const { hdr } = desc;
  const endEntry = hdr.endEntry;
  while (hdr.curEntry <= hdr.endEntry) {
    const curEntry = hdr.curEntry;
    const exitInfo2 = yield call('psc', desc);
    if (exitInfo2 !== VMGEXIT_PSC_ERROR.NONE) {
      return fail(`SNP: PSC failed exit_info_2=${typeof exitInfo2 === 'number' ? hex(exitInfo2) : String(exitInfo2)} (GHCB_TERM_PSC)`);
    }
    // "This will happen only if hypervisor is tricking us."
    if (hdr.endEntry > endEntry || curEntry > hdr.curEntry) {
      return fail(`SNP: PSC processing going backward, end_entry ${endEntry} (got ${hdr.endEntry}) cur_entry ${curEntry} (got ${hdr.curEntry}) (GHCB_TERM_PSC)`);
    }
  }
  return OK;
}

/**
 * pval_pages: PVALIDATE each entry, validating for PRIVATE and rescinding for SHARED; a 2M entry
 * that FAIL_SIZEMISMATCHes (4K RMP entries under it) is done page by page; any other non-zero
 * result terminates the guest (__pval_terminate).
 */
function* pvalidatePages(desc: PscBuffer): GuestOp<ArchGuestOutcome> {
  for (let i = 0; i <= desc.hdr.endEntry; i++) {
    const e = desc.entries[i];
    if (e === undefined) break;
    const size: RmpPageSize = e.pageSize !== 0 ? '2M' : '4K';
    const validate = e.operation === PSC_OP.PRIVATE;
    const rc = yield* pvalidate(e.gfn, size, validate);
    if (rc === PVALIDATE.SUCCESS) continue;
    if (rc === PVALIDATE.FAIL_SIZEMISMATCH && size === '2M') {
      for (let g = e.gfn; g < e.gfn + PAGES_PER_2M; g++) {
        const rc4k = yield* pvalidate(g, '4K', validate);
        if (rc4k !== PVALIDATE.SUCCESS) return pvalTerminate(g, validate, '4K', rc4k);
      }
      continue;
    }
    return pvalTerminate(e.gfn, validate, size, rc);
  }
  return OK;
}

/**
 * One PVALIDATE as the instruction runs: a nested page fault is KVM's business (the guest never
 * sees it), so it is yielded for the core to resolve and the instruction is issued again.
 */
function* pvalidate(gfn: number, size: RmpPageSize, validate: boolean): GuestOp<number> {
  for (;;) {
    const r = (yield call('pvalidate', gfn * PAGE, size, validate)) as PvalidateResult | undefined;
    if (r?.kind !== 'done' && r?.kind !== 'npf') {
      throw new ModelInvariantError('snp.guest_kernel.step', `the pvalidate step of gfn ${hex(gfn)} returned ${String(r)}, not its result`);
    }
    if (r.kind === 'done') return r.rc;
    const step: GuestNpf = r.zap === undefined ? { kind: 'npf', fault: r.fault } : { kind: 'npf', fault: r.fault, zap: r.zap };
    yield step;
  }
}

function call(op: 'psc' | 'pvalidate', ...args: unknown[]): ArchGuestCall {
  return { kind: 'arch', op, args };
}

function pvalTerminate(gfn: number, validate: boolean, size: RmpPageSize, rc: number): ArchGuestOutcome {
  const name = Object.entries(PVALIDATE).find(([, v]) => v === rc)?.[0] ?? String(rc);
  return fail(`PVALIDATE failure: pfn: ${hex(gfn)}, action: ${validate ? 1 : 0}, size: ${size}, ret: ${rc} (${name}) (GHCB_TERM_PVALIDATE)`);
}

function fail(reason: string): ArchGuestOutcome {
  return { ok: false, reason };
}
