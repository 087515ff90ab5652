/**
 * The TD guest kernel's memory-encryption code (the contract's `guestKernel`), modelled on Linux:
 * tdx_enc_status_changed and tdx_map_gpa in arch/x86/coco/tdx/tdx.c, tdx_accept_memory and
 * try_accept_one in arch/x86/coco/tdx/tdx-shared.c. Each operation is a generator of steps the
 * core runs on a vCPU: `{ kind: 'arch', op, args }` calls of the plugin's own guest API
 * (`mapGpa`, `accept`; see guest.ts), whose results come back through `next()`, and
 * `{ kind: 'npf', fault }` for an ACCEPT that exited to KVM as an EPT violation, after which the
 * guest re-issues the same ACCEPT (the TDCALL's RIP was not advanced).
 */
import {
  ModelInvariantError,
  type ArchGuestCall,
  type ArchGuestKernel,
  type ArchGuestOutcome,
  type ArchGuestStep,
  type GuestException,
} from '@cocokit/sdk';
import { X86_TRAP_VE, type TdvmcallResult, type TdxAcceptResult, type TdxGuestApi } from './guest.js';
import { TDVMCALL_STATUS, TDX_STATUS, tdvmcallStatusName, tdxStatusName } from './status.js';

/** max_retries_per_page in tdx_map_gpa: RETRYs without forward progress before the guest gives up. */
export const TDX_MAP_GPA_MAX_RETRIES = 3;

/**
 * How many times in a row one ACCEPT may exit to KVM as an EPT violation before the model gives
 * up. A real guest re-executes the TDCALL forever; KVM resolves the fault on the first exit (or
 * the second, when a 2M ACCEPT meets a 4K mapping and falls back), so a run of violations means
 * the VMM never maps the page, and the model reports that instead of spinning.
 */
export const TDX_ACCEPT_EPT_VIOLATION_LIMIT = 16;

/** Bytes an ACCEPT covers at each S-EPT level, largest first as try_accept_one is tried (1G, 2M, 4K). */
const ACCEPT_LEVELS = [
  { level: 2, size: 2 ** 30 },
  { level: 1, size: 2 ** 21 },
  { level: 0, size: 2 ** 12 },
] as const;

const OK: ArchGuestOutcome = Object.freeze({ ok: true });
const failed = (reason: string): ArchGuestOutcome => ({ ok: false, reason });
const hex = (n: number): string => `0x${n.toString(16)}`;

/** One call of the TD's guest API, with its op and arguments checked against {@link TdxGuestApi}. */
const call = <K extends keyof TdxGuestApi>(op: K, ...args: Parameters<TdxGuestApi[K]>): ArchGuestCall => ({ kind: 'arch', op, args });

function asTdvmcall(v: unknown): TdvmcallResult {
  if (typeof v === 'object' && v !== null && typeof (v as { status?: unknown }).status === 'bigint') return v as TdvmcallResult;
  throw new ModelInvariantError('tdx-guest-kernel-step', `a mapGpa step resumed with ${String(v)}, not the TDVMCALL result the guest API returns`);
}

function asAccept(v: unknown): TdxAcceptResult {
  const kind = typeof v === 'object' && v !== null ? (v as { kind?: unknown }).kind : undefined;
  if (kind === 'status' || kind === 'ept-violation') return v as TdxAcceptResult;
  throw new ModelInvariantError('tdx-guest-kernel-step', `an accept step resumed with ${String(v)}, not the ACCEPT result the guest API returns`);
}

/** Creates the guest kernel of a TD whose shared bit is `sharedBit` (GPAW - 1, from TDG.VP.INFO). */
export function createTdxGuestKernel(sharedBit: number): ArchGuestKernel {
  const bit = 2 ** sharedBit;

  /** Why `[gpa, gpa + size)` is not a range of private guest memory the guest can name, or `undefined`. */
  function badRange(gpa: number, size: number): string | undefined {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(size) || gpa < 0 || size < 0) return `[${gpa}, +${size}) is not a range of addresses`;
    if (gpa % 4096 !== 0 || size % 4096 !== 0) return `[${hex(gpa)}, +${hex(size)}) is not page aligned`;
    if (gpa + size > bit) return `[${hex(gpa)}, ${hex(gpa + size)}) reaches the shared bit ${sharedBit}: pass GPAs without it`;
    return undefined;
  }

  /**
   * tdx_map_gpa: TDG.VP.VMCALL<MapGPA> of `[start, end)` with the shared bit set when converting to
   * shared (cc_mkdec). On RETRY the VMM says where to resume in R11; the guest checks it lies in the
   * request (R11 comes from the untrusted VMM), resumes there, and gives up after
   * {@link TDX_MAP_GPA_MAX_RETRIES} RETRYs that made no progress.
   */
  function* mapGpa(start: number, end: number, enc: boolean): Generator<ArchGuestStep, ArchGuestOutcome, unknown> {
    if (!enc) {
      start += bit;
      end += bit;
    }
    let retries = 0;
    while (retries < TDX_MAP_GPA_MAX_RETRIES) {
      const r = asTdvmcall(yield call('mapGpa', start, end - start));
      if (r.status !== TDVMCALL_STATUS.RETRY) {
        return r.status === TDVMCALL_STATUS.SUCCESS ? OK : failed(`TDG.VP.VMCALL<MapGPA>(${hex(start)}, ${hex(end - start)}) failed with ${tdvmcallStatusName(r.status)}`);
      }
      const failAt = r.r11;
      if (failAt === undefined || failAt < start || failAt >= end) {
        return failed(`MapGPA RETRY at R11 ${failAt === undefined ? 'unset' : hex(failAt)}, outside the request [${hex(start)}, ${hex(end)})`);
      }
      // "Consume" a retry without forward progress.
      if (failAt === start) {
        retries++;
        continue;
      }
      start = failAt;
      retries = 0;
    }
    return failed(`MapGPA of [${hex(start)}, ${hex(end)}) made no progress after ${TDX_MAP_GPA_MAX_RETRIES} RETRYs`);
  }

  /**
   * try_accept_one: TDG.MEM.PAGE.ACCEPT of `size` bytes at `start` if aligned and within `len`.
   * Returns the bytes accepted (0: not at this size, any status but TDX_SUCCESS counts, as
   * `__tdcall` returning non-zero does) and the status, or why the ACCEPT never completed.
   */
  function* tryAcceptOne(
    start: number,
    len: number,
    level: 0 | 1 | 2,
    size: number,
  ): Generator<ArchGuestStep, { readonly accepted: number; readonly status?: bigint } | { readonly stuck: string }, unknown> {
    if (start % size !== 0 || len < size) return { accepted: 0 };
    for (let violations = 0; ; ) {
      const r = asAccept(yield call('accept', start, level));
      if (r.kind === 'status') return { accepted: r.status === TDX_STATUS.TDX_SUCCESS ? size : 0, status: r.status };
      if (++violations > TDX_ACCEPT_EPT_VIOLATION_LIMIT) {
        return { stuck: `TDG.MEM.PAGE.ACCEPT(${hex(start)}, level ${level}) exited to KVM as an EPT violation ${violations} times in a row: the VMM never mapped the page` };
      }
      // The TD exits to KVM; KVM maps the page (TDH.MEM.PAGE.AUG, PENDING) and re-enters the TD,
      // which re-executes the same TDCALL.
      yield { kind: 'npf', fault: r.fault };
    }
  }

  /**
   * tdx_accept_memory: accepts `[start, end)` trying 1G, then 2M, then 4K at each step ("gives the
   * VMM a chance to keep 1G/2M Secure EPT entries"); fails when even a 4K ACCEPT does not succeed.
   */
  function* acceptMemory(start: number, end: number): Generator<ArchGuestStep, ArchGuestOutcome, unknown> {
    while (start < end) {
      const len = end - start;
      let accepted = 0;
      let last: bigint | undefined;
      for (const { level, size } of ACCEPT_LEVELS) {
        const r = yield* tryAcceptOne(start, len, level, size);
        if ('stuck' in r) return failed(r.stuck);
        last = r.status ?? last;
        accepted = r.accepted;
        if (accepted > 0) break;
      }
      if (accepted === 0) return failed(`TDG.MEM.PAGE.ACCEPT of ${hex(start)} failed with ${last === undefined ? 'no call' : tdxStatusName(last)}`);
      start += accepted;
    }
    return OK;
  }

  return {
    *convert(gpa, size, toPrivate) {
      const bad = badRange(gpa, size);
      if (bad) return failed(`convert: ${bad}`);
      const mapped = yield* mapGpa(gpa, gpa + size, toPrivate);
      if (!mapped.ok) return mapped;
      // tdx_enc_status_changed: "shared->private conversion requires memory to be accepted before use".
      return toPrivate ? yield* acceptMemory(gpa, gpa + size) : OK;
    },

    *accept(gpa, size) {
      const bad = badRange(gpa, size);
      if (bad) return failed(`accept: ${bad}`);
      return yield* acceptMemory(gpa, gpa + size);
    },

    // In this model TDX raises #VE only for a private access to a PENDING page (guest.ts).
    isUnaccepted: (e: GuestException): boolean => e.vector === X86_TRAP_VE,
  };
}
