/**
 * The invalidation seam between guest_memfd and the MMU. When pages of a file stop being valid for
 * the guest (punch hole, in-place conversion, file release, memory failure), guest_memfd walks the
 * file's bindings and, for every bound memslot overlapping the range, tells the MMU to zap the gfn
 * range (kvm_gmem_invalidate_begin → kvm_mmu_invalidate_begin + kvm_mmu_unmap_gfn_range with an
 * attribute filter, then kvm_gmem_invalidate_end → kvm_mmu_invalidate_end). `@cocokit/mmu`
 * implements {@link GmemInvalidationListener}; gmem never depends on it.
 */
import type { Gfn, PgOff } from '@cocokit/sdk';

/**
 * What a memslot looks like to guest_memfd: where its gfns start and how many there are.
 * `@cocokit/memslot`'s `Memslot` satisfies it, and the listener gets back the very object the
 * memslot layer bound.
 */
export interface GmemSlotView {
  readonly baseGfn: Gfn;
  readonly npages: number;
  /**
   * The binding gmem handed the memslot layer (memslot's `slot.gmem.binding`). A memslot change
   * that keeps the binding (flags-only) makes a new slot object, so lookups go by the binding.
   */
  readonly gmem?: { readonly binding: object } | undefined;
}

/**
 * Which SPTEs an invalidation zaps (`KVM_FILTER_PRIVATE` / `KVM_FILTER_SHARED` in
 * kvm_gmem_get_invalidate_filter): private, shared, or both when the range holds both.
 */
export type GmemInvalidateFilter = 'private' | 'shared' | 'both';

/** Why pages are being invalidated. */
export type GmemInvalidateReason = 'punch_hole' | 'convert' | 'release' | 'memory_failure';

/** One bound memslot's slice of an invalidation. */
export interface GmemInvalidateRange {
  /** The file whose pages go; same object the binder reported as the binding's `file`. */
  readonly file: object;
  /** The memslot, as it was bound. */
  readonly slot: GmemSlotView;
  /** First gfn to zap. */
  readonly start: Gfn;
  /** One past the last gfn to zap. */
  readonly end: Gfn;
  /** File page of `start`. */
  readonly index: PgOff;
  readonly filter: GmemInvalidateFilter;
  readonly reason: GmemInvalidateReason;
}

/**
 * The MMU's side of an invalidation. `invalidateBegin` is called for every bound slot slice before
 * the pages change (the MMU bumps its in-progress count so racing faults retry, and zaps the range
 * with the filter); `invalidateEnd` after the change, with the same object. Both run under the
 * file's invalidate lock; neither may throw.
 */
export interface GmemInvalidationListener {
  invalidateBegin(range: GmemInvalidateRange): void;
  invalidateEnd(range: GmemInvalidateRange): void;
}
