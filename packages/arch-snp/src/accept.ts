/**
 * Lazy acceptance (UEFI "unaccepted memory"; drivers/firmware/efi/libstub/unaccepted_memory.c and
 * arch/x86/coco/sev/core.c snp_accept_memory): the guest does not validate all its memory at boot
 * but on first use, in fixed chunks (the EFI bitmap's unit: 2 MiB). Accepting a chunk is what
 * Linux's set_pages_state(PRIVATE) does: a PSC(PRIVATE) for the chunk, then PVALIDATE at 2M where
 * the RMP entry is 2M, falling back to 4K on FAIL_SIZEMISMATCH (pvalidate_pages).
 */
import { KvmError, RangeMap } from '@cocokit/sdk';
import { PAGES_PER_2M, PVALIDATE, VMGEXIT_PSC_ERROR } from './constants.js';
import type { SnpNpf } from './access.js';
import { createPscBuffer, psc, type PscBuffer } from './psc.js';
import { pvalidate } from './pvalidate.js';
import type { SnpState } from './state.js';

/** The outcome of {@link LazyAcceptor.acceptOnFirstUse}. */
export type AcceptResult =
  /** The chunk holding the gfn is accepted; `now` when this call accepted it. */
  | { readonly status: 'accepted'; readonly now: boolean }
  /** A PVALIDATE took a nested page fault: KVM handles it (fault-in, or PSMASH), then call again. */
  | { readonly status: 'npf'; readonly npf: SnpNpf }
  /** The PSC failed (its SW_EXITINFO2 result) or PVALIDATE returned an error code. */
  | { readonly status: 'error'; readonly psc?: number; readonly pvalidate?: number };

interface InFlight {
  readonly buffer: PscBuffer;
  pscDone: boolean;
  /** Next gfn to PVALIDATE. */
  next: number;
}

/**
 * The guest's accepted-memory bitmap and the accept-on-first-use loop. Restartable: when the PSC
 * exits to userspace (ending the vCPU step) or PVALIDATE takes an NPF, calling again for the same
 * gfn continues where it stopped.
 */
export class LazyAcceptor {
  /** Pages per chunk: a multiple of 512 (2 MiB) up to 253 × 512, one PSC entry per 2M. */
  readonly chunkPages: number;
  private readonly accepted = new RangeMap<true>();
  private readonly inFlight = new Map<number, InFlight>();
  private readonly s: SnpState;

  constructor(s: SnpState, chunkPages = PAGES_PER_2M) {
    if (!Number.isSafeInteger(chunkPages) || chunkPages <= 0 || chunkPages % PAGES_PER_2M !== 0 || chunkPages / PAGES_PER_2M > 253) {
      throw new KvmError('EINVAL', 'LazyAcceptor', `chunkPages ${chunkPages} must be a multiple of 512 up to ${253 * 512}`);
    }
    this.s = s;
    this.chunkPages = chunkPages;
  }

  /** Whether `gfn` has been accepted. */
  isAccepted(gfn: number): boolean {
    return this.accepted.has(gfn);
  }

  /** Pages accepted so far. */
  get acceptedPages(): number {
    let n = 0;
    for (const r of this.accepted.runs()) n += r.end - r.start;
    return n;
  }

  /** Accepts the chunk holding `gpa` unless it already is (accept_memory on first touch). */
  acceptOnFirstUse(gpa: number): AcceptResult {
    if (!Number.isSafeInteger(gpa) || gpa < 0) throw new KvmError('EINVAL', 'accept_memory', `gpa ${gpa} is not an address`);
    const gfn = Math.floor(gpa / 4096);
    if (this.accepted.has(gfn)) return { status: 'accepted', now: false };
    const start = gfn - (gfn % this.chunkPages);
    const end = start + this.chunkPages;
    let f = this.inFlight.get(start);
    if (f === undefined) {
      const requests = [];
      for (let g = start; g < end; g += PAGES_PER_2M) requests.push({ gfn: g, op: 'PRIVATE' as const, size: '2M' as const });
      f = { buffer: createPscBuffer(requests), pscDone: false, next: start };
      this.inFlight.set(start, f);
    }
    if (!f.pscDone) {
      const r = psc(this.s, f.buffer); // may end the step with an exit; a later call resumes it
      if (r !== VMGEXIT_PSC_ERROR.NONE) {
        this.inFlight.delete(start);
        return { status: 'error', psc: r };
      }
      f.pscDone = true;
    }
    while (f.next < end) {
      const g = f.next;
      if (g % PAGES_PER_2M === 0) {
        const r = pvalidate(this.s, g * 4096, '2M', true);
        if (r.kind === 'npf') return { status: 'npf', npf: r };
        if (r.rc === PVALIDATE.SUCCESS || r.rc === PVALIDATE.FAIL_NOUPDATE) {
          f.next = g + PAGES_PER_2M;
          continue;
        }
        if (r.rc !== PVALIDATE.FAIL_SIZEMISMATCH) {
          this.inFlight.delete(start);
          return { status: 'error', pvalidate: r.rc };
        }
        // 4K RMP entries under this 2M range: validate page by page.
      }
      const r = pvalidate(this.s, g * 4096, '4K', true);
      if (r.kind === 'npf') return { status: 'npf', npf: r };
      if (r.rc !== PVALIDATE.SUCCESS && r.rc !== PVALIDATE.FAIL_NOUPDATE) {
        this.inFlight.delete(start);
        return { status: 'error', pvalidate: r.rc };
      }
      f.next = g + 1;
    }
    this.inFlight.delete(start);
    this.accepted.set(start, end, true);
    return { status: 'accepted', now: true };
  }
}
