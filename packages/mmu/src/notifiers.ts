/**
 * The MMU's subscriptions: memslot changes (kvm_arch_flush_shadow_memslot on delete/move,
 * kvm_arch_commit_memory_region for dirty logging), attribute changes
 * (kvm_arch_pre/post_set_memory_attributes), and guest_memfd invalidations
 * (kvm_gmem_invalidate_begin/end). Each zap runs under mmu_lock for write inside an MMU
 * invalidation, so faults racing with it retry.
 */
import type { GmemInvalidateRange, GmemInvalidationListener } from '@cocokit/gmem';
import type { AttributeRange, Memslot } from '@cocokit/memslot';
import { uapi, type FrameRange, type Gfn } from '@cocokit/sdk';
import { applyDirtyLogFlags, protectHarvested } from './dirty-log.js';
import type { Mmu } from './mmu.js';
import { recoverHugePages } from './recovery.js';
import { memslotFlushScope, zapGfnRange } from './zap.js';

const asIdOf = (slot: unknown): number => (slot as Partial<Memslot>).asId ?? 0;

/**
 * kvm_arch_pre_set_memory_attributes for one slot: begin an invalidation over the range plus the
 * straddling huge pages, and zap the mappings whose kind no longer matches (making PRIVATE zaps
 * shared leaves, making shared zaps private ones).
 */
export function preSetAttributes(mmu: Mmu, range: AttributeRange, huge: readonly FrameRange<Gfn>[]): void {
  mmu.lock.write(() => {
    mmu.seq.begin();
    mmu.stats.invalidations++;
    mmu.seq.addRange(range.start, range.end);
    for (const h of huge) mmu.seq.addRange(h.start, h.end);
    if (range.slot.asId !== mmu.asId || mmu.privateTracking !== 'attributes') return;
    const toPrivate = (range.attributes & uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) !== 0;
    zapGfnRange(mmu, range.start, range.end, toPrivate ? 'shared' : 'private', 'set_memory_attributes');
    // A huge leaf straddling the range is zapped whole by the range zap when it overlaps it; the
    // head/tail huge pages are added to the invalidation so faults there retry.
  });
}

/** kvm_arch_post_set_memory_attributes for one slot: end the invalidation; eager hugepage recovery. */
export function postSetAttributes(mmu: Mmu, range: AttributeRange): void {
  mmu.lock.write(() => {
    if (mmu.hugepageRecovery === 'eager' && range.slot.asId === mmu.asId) recoverAround(mmu, range.slot, range.start, range.end);
    mmu.seq.end();
  });
}

/** Eager recovery over `[start, end)` widened to the 1G pages around it. */
function recoverAround(mmu: Mmu, slot: Memslot, start: number, end: number): void {
  const g = 512 * 512;
  recoverHugePages(mmu, slot, start - (start % g), Math.ceil(end / g) * g);
}

/** The guest_memfd invalidation listener (kvm_gmem_invalidate_begin / _end). */
export function gmemListener(mmu: Mmu): GmemInvalidationListener {
  return {
    invalidateBegin(r: GmemInvalidateRange): void {
      mmu.lock.write(() => {
        mmu.seq.begin();
        mmu.stats.invalidations++;
        mmu.seq.addRange(r.start, r.end);
        if (mmu.sim.trace.enabled) mmu.sim.trace.emit('mmu.invalidate', { op: 'begin', start: r.start, end: r.end, seq: mmu.seq.seq, inProgress: mmu.seq.inProgress });
        if (asIdOf(r.slot) === mmu.asId) zapGfnRange(mmu, r.start, r.end, r.filter, `gmem_${r.reason}`);
      });
    },
    invalidateEnd(r: GmemInvalidateRange): void {
      mmu.lock.write(() => {
        if (mmu.hugepageRecovery === 'eager' && r.reason === 'convert' && asIdOf(r.slot) === mmu.asId) {
          const slot = mmu.memslots.lookup(r.start, mmu.asId);
          if (slot !== undefined) recoverAround(mmu, slot, r.start, r.end);
        }
        mmu.seq.end();
        if (mmu.sim.trace.enabled) mmu.sim.trace.emit('mmu.invalidate', { op: 'end', start: r.start, end: r.end, seq: mmu.seq.seq, inProgress: mmu.seq.inProgress });
      });
    },
  };
}

/** Subscribes `mmu` to its memslots and guest_memfd; returns the function that undoes it. */
export function subscribeAll(mmu: Mmu): () => void {
  const offSlots = mmu.memslots.subscribe({
    beforeChange(change): void {
      const old = change.old;
      if (old === undefined || old.asId !== mmu.asId) return;
      if (change.kind === 'delete' || change.kind === 'move') {
        // kvm_arch_flush_shadow_memslot: the old range goes before the new layout is installed.
        mmu.lock.write(() => zapGfnRange(mmu, old.baseGfn, old.endGfn, 'both', `memslot_${change.kind}`, memslotFlushScope(mmu)));
      }
    },
    afterChange(change): void {
      if (change.kind === 'flags') applyDirtyLogFlags(mmu, change);
    },
    dirtyLogProtect(slot, ranges): void {
      protectHarvested(mmu, slot, ranges);
    },
  });
  const offAttrs = mmu.memslots.onAttributesChange({
    preSet: (range, huge) => preSetAttributes(mmu, range, huge),
    postSet: (range) => postSetAttributes(mmu, range),
  });
  const offGmem = mmu.gmem?.subscribe(gmemListener(mmu));
  // kvm_init_mmu_notifier: munmap, CoW breaks and mprotect in the VMM zap hva-backed mappings.
  const offHost = mmu.process?.addMmuNotifier({
    invalidateRangeStart: (start, end) => void mmu.invalidateHvaRangeStart(start, end),
    invalidateRangeEnd: (start, end) => mmu.invalidateHvaRangeEnd(start, end),
  });
  return () => {
    offSlots();
    offAttrs();
    offGmem?.();
    offHost?.();
  };
}
