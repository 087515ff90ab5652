/**
 * The MMU invalidation sequence (virt/kvm/kvm_main.c: `mmu_invalidate_seq`,
 * `mmu_invalidate_in_progress`, `mmu_invalidate_range_start/end`; include/linux/kvm_host.h:
 * `mmu_invalidate_retry_gfn`). A fault snapshots the sequence before resolving its pfn outside
 * mmu_lock; an invalidation (host mmu-notifier, guest_memfd, attribute change) bumps the
 * in-progress count and widens the in-progress range at begin, and bumps the sequence at end. Under
 * mmu_lock the fault re-checks: a gfn inside an in-progress range, or a sequence that moved, means
 * the pfn may be stale and the fault is retried instead of installing it.
 */

/** One invalidation sequence; the MMU owns one per VM. */
export class InvalidationSeq {
  /** `mmu_invalidate_seq`: bumped at every end. */
  seq = 0;
  /** `mmu_invalidate_in_progress`: begins not yet ended. */
  inProgress = 0;
  /** `mmu_invalidate_range_start`: union of the ranges added since the count left 0. */
  rangeStart = Number.POSITIVE_INFINITY;
  /** `mmu_invalidate_range_end`. */
  rangeEnd = Number.NEGATIVE_INFINITY;

  /**
   * kvm_mmu_invalidate_begin: one more invalidation in progress; when it is the first, the range
   * starts empty (INVALID_GPA).
   */
  begin(): void {
    if (this.inProgress++ === 0) {
      this.rangeStart = Number.POSITIVE_INFINITY;
      this.rangeEnd = Number.NEGATIVE_INFINITY;
    }
  }

  /**
   * kvm_mmu_invalidate_range_add: widens the in-progress range to cover `[start, end)` (one range
   * per VM: concurrent invalidations of far-apart ranges make faults between them retry too, as
   * in the kernel).
   */
  addRange(start: number, end: number): void {
    if (start < this.rangeStart) this.rangeStart = start;
    if (end > this.rangeEnd) this.rangeEnd = end;
  }

  /**
   * kvm_mmu_invalidate_end: bumps the sequence (so faults that snapshotted it before retry), then
   * one invalidation fewer in progress.
   */
  end(): void {
    this.seq++;
    this.inProgress--;
    if (this.inProgress < 0) this.inProgress = 0;
  }

  /**
   * mmu_invalidate_retry_gfn: whether a fault on `gfn` that snapshotted `snapshot` must retry: an
   * invalidation covering `gfn` is in progress, or any invalidation ended since the snapshot.
   */
  retryGfn(snapshot: number, gfn: number): boolean {
    if (this.inProgress > 0 && gfn >= this.rangeStart && gfn < this.rangeEnd) return true;
    return this.seq !== snapshot;
  }

  /**
   * mmu_invalidate_retry_gfn_unsafe: the same test without mmu_lock, used before resolving the pfn
   * (kvm_mmu_faultin_pfn) so a fault in a range being invalidated does not even fault the page in.
   */
  retryGfnUnsafe(snapshot: number, gfn: number): boolean {
    return this.retryGfn(snapshot, gfn);
  }
}
