/**
 * Dirty logging (mmu.c kvm_mmu_slot_apply_flags, kvm_mmu_slot_remove_write_access,
 * kvm_arch_mmu_enable_log_dirty_pt_masked, kvm_mmu_recover_huge_pages): enabling logging on a slot
 * write-protects its leaves so the next write faults (and is logged: the fault path marks the gfn
 * in the slot's bitmap and maps 4K only while logging is on); harvesting the log write-protects the
 * harvested pages again; disabling it zaps the small leaves of huge pages that may be huge again.
 */
import type { FrameRange, Gfn } from '@cocokit/sdk';
import type { Memslot, MemslotChange } from '@cocokit/memslot';
import type { Mmu } from './mmu.js';
import { SPTE, encodeLeaf, leafFlags, leafPfn } from './page-table.js';
import { recoverHugePages } from './recovery.js';

/** Clears the writable bit of every leaf of the direct root in `[start, end)`; one TLB flush if any changed. Under mmu_lock for write. */
export function writeProtectRange(mmu: Mmu, start: number, end: number): number {
  let n = 0;
  mmu.direct.forEachLeaf(start, end, (_g, _level, v) => {
    const flags = leafFlags(v);
    if ((flags & SPTE.WRITABLE) === 0) return undefined;
    n++;
    return encodeLeaf(leafPfn(v), flags & ~SPTE.WRITABLE);
  });
  if (n > 0) {
    mmu.stats.writeProtected += n;
    mmu.sim.charge('mmu.write_protect', n);
    mmu.flushTlbs();
  }
  return n;
}

/** kvm_mmu_slot_apply_flags for a flags-only change that toggles KVM_MEM_LOG_DIRTY_PAGES. */
export function applyDirtyLogFlags(mmu: Mmu, change: MemslotChange): void {
  const slot = change.new;
  if (slot === undefined || change.dirtyLogging === undefined || slot.asId !== mmu.asId) return;
  if (change.dirtyLogging === 'enable') {
    // With manual protect + INITIALLY_SET every page is already "dirty": nothing to protect yet.
    if (!change.dirtyLogInitiallySet) mmu.lock.write(() => writeProtectRange(mmu, slot.baseGfn, slot.endGfn));
  } else {
    mmu.lock.write(() => recoverHugePages(mmu, slot, slot.baseGfn, slot.endGfn));
  }
}

/** The memslot listener's dirtyLogProtect: re-protect harvested ranges (KVM_GET/CLEAR_DIRTY_LOG). */
export function protectHarvested(mmu: Mmu, slot: Memslot, ranges: readonly FrameRange<Gfn>[]): void {
  if (slot.asId !== mmu.asId) return;
  mmu.lock.write(() => {
    for (const r of ranges) writeProtectRange(mmu, r.start, r.end);
  });
}
