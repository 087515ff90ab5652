/**
 * Signals a host process receives, as values (DESIGN.md, "Errors": guest- and user-visible events
 * are values returned by the operation, not exceptions), and the arch host-access hook.
 */
import type { HostFault, HostFaultKind, Pfn } from '@cocokit/sdk';

/** The signals a user access can raise: SIGSEGV (no mapping, or a protection violation), SIGBUS (the backing refused). */
export type HostSignal = 'SIGSEGV' | 'SIGBUS';

/** A fault a user access took: the signal, the faulting byte address (si_addr), and why. */
export interface ProcessFault {
  readonly ok: false;
  readonly signal: HostSignal;
  /** The faulting user byte address. */
  readonly addr: number;
  /** Why, in the kernel's words (e.g. `'SEGV_MAPERR: no vma'`, `'guest_memfd page is private'`). */
  readonly reason: string;
  /** Set when an arch host-access check refused (SNP RMP violation, pKVM stage-2 abort). */
  readonly kind?: HostFaultKind;
}

/** A user access that succeeded; `data` holds what a read returned. */
export interface HostAccessOk {
  readonly ok: true;
  readonly data?: Uint8Array;
}

/** The result of a user access: success or a fault value. */
export type HostAccessResult = HostAccessOk | ProcessFault;

/**
 * An arch host-access check (the VM layer installs one from the arch plugin's `hostAccess`): asked
 * before a user access touches `pfn`. `'ok'` lets it through; otherwise the process takes the
 * signal (an SNP RMP violation on a guest-owned page, a pKVM stage-2 abort). Must not change state.
 * The shape is the arch contract's `ArchVm.hostAccess`, so a plugin's hook installs as it is.
 */
export type HostAccessCheck = (pfn: Pfn, write: boolean) => 'ok' | HostFault;

/** Builds a {@link ProcessFault}. */
export function processFault(signal: HostSignal, addr: number, reason: string, kind?: HostFaultKind): ProcessFault {
  return kind === undefined ? { ok: false, signal, addr, reason } : { ok: false, signal, addr, reason, kind };
}

/** Whether `r` is a fault value. */
export function isProcessFault(r: unknown): r is ProcessFault {
  return typeof r === 'object' && r !== null && (r as { ok?: unknown }).ok === false && typeof (r as { signal?: unknown }).signal === 'string';
}
