/**
 * What a toy VM offers beyond the generic hooks: the VMM side ({@link ToyVmApi}: inspection) and
 * the guest side ({@link ToyGuestApi}: the calls a guest program issues). Declared to the sdk by
 * augmentation, so `kvm.createVm({ type: 'toy' })` is typed with them although the core never
 * imports this package.
 */
import type { ArchVm, Gfn, Pfn } from '@cocokit/sdk';

/** The VMM side of a toy VM: read-only views of the arch's state, for VMMs and tests. */
export interface ToyVmApi {
  /** Whether host page `pfn` is owned by this VM (its owned bit is set). */
  isOwned(pfn: Pfn | number): boolean;
  /** The guest frame an owned page backs, or `undefined` when `pfn` is not owned. */
  ownerGfn(pfn: Pfn | number): Gfn | undefined;
  /** Whether the guest has accepted the private page at `gfn`. */
  isAccepted(gfn: Gfn | number): boolean;
  /** How many host pages this VM owns. */
  ownedPages(): number;
  /** How many guest frames are accepted. */
  acceptedPages(): number;
}

/** What {@link ToyGuestApi.accept} returns. */
export type ToyAcceptResult =
  /** Accepted (or already accepted: accepting twice is harmless). */
  | { readonly status: 'ok' }
  /** Nothing maps the frame yet: the guest kernel lets KVM fault it in (an NPF step) and retries. */
  | { readonly status: 'not-mapped' }
  /** The frame is mapped but not to a page this VM owns (it is shared): nothing to accept. */
  | { readonly status: 'not-private' }
  /** A bad address (not page aligned, negative, not an integer). */
  | { readonly status: 'invalid'; readonly reason: string };

/** The guest side of a toy VM: what a guest program may call, as `yield* g.arch.accept(gpa)`. */
export interface ToyGuestApi {
  /** Accepts the private page at `gpa` (page aligned) before its first use. */
  accept(gpa: number): ToyAcceptResult;
  /**
   * Asks the host to make `[gpa, gpa + size)` shared: a KVM_HC_MAP_GPA_RANGE hypercall, which exits
   * to userspace (KVM_EXIT_HYPERCALL) when userspace enabled it with KVM_CAP_EXIT_HYPERCALL.
   * Returns the hypercall's result: 0 when userspace converted the range, else non-zero
   * (-KVM_ENOSYS when the exit is not enabled, -KVM_EINVAL for a bad range).
   */
  share(gpa: number, size: number): number;
  /** The same as {@link ToyGuestApi.share}, asking for private. The pages must be accepted again. */
  unshare(gpa: number, size: number): number;
}

declare module '@cocokit/sdk' {
  interface ArchVmApis {
    toy: ToyVmApi;
  }
  interface ArchGuestApis {
    toy: ToyGuestApi;
  }
}

/**
 * The {@link ArchVm} a toy VM is: every hook it implements is present (so code holding the plugin's
 * own type needs no `?.`), with the toy APIs.
 */
export type ToyArchVm = ArchVm<ToyVmApi, ToyGuestApi> &
  Required<
    Pick<
      ArchVm<ToyVmApi, ToyGuestApi>,
      | 'gmemPrepare'
      | 'gmemInvalidate'
      | 'maxMappingLevel'
      | 'hostAccess'
      | 'beforeConvert'
      | 'guestAccess'
      | 'completeExit'
      | 'guestKernel'
      | 'checkInvariants'
      | 'vmApi'
      | 'guestApi'
    >
  >;
