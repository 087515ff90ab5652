/**
 * Hugepage recovery: zap the small leaves of huge pages that may be mapped huge again, so the next
 * fault maps them huge (mmu.c kvm_mmu_recover_huge_pages, formerly kvm_mmu_zap_collapsible_sptes,
 * run when dirty logging is disabled; and, with `hugepageRecovery: 'eager'`, after a range's
 * attributes or shareability become uniform). Only the direct root: a mirror root cannot promote.
 * Callers hold mmu_lock for write.
 */
import type { Memslot } from '@cocokit/memslot';
import { allowedLevel } from './max-level.js';
import type { Mmu } from './mmu.js';
import { ENTRY_SPAN } from './page-table.js';
import { zapGfnRange } from './zap.js';

/** Zaps, in `[start, end)` of `slot`, the tables under huge pages that now allow a huge mapping. Returns leaves zapped. */
export function recoverHugePages(mmu: Mmu, slot: Memslot, start: number, end: number): number {
  const pt = mmu.direct;
  const lo = Math.max(start, slot.baseGfn);
  const hi = Math.min(end, slot.baseGfn + slot.npages);
  if (lo >= hi || pt.leafCount[0] + pt.leafCount[1] === 0) return 0;
  // Candidate blocks: the huge pages holding a smaller leaf in the range, 1G first.
  const heads: [Set<number>, Set<number>, Set<number>] = [new Set(), new Set(), new Set()];
  pt.forEachLeaf(lo, hi, (g, level) => {
    for (let l = level + 1; l <= 2; l++) heads[l as 1 | 2].add(g - (g % ENTRY_SPAN[l]!));
    return undefined;
  });
  let n = 0;
  const done: number[] = [];
  for (const l of [2, 1] as const) {
    const span = ENTRY_SPAN[l];
    for (const h of heads[l]) {
      if (h < slot.baseGfn || h + span > slot.baseGfn + slot.npages) continue;
      if (done.some((d) => h >= d && h < d + ENTRY_SPAN[2])) continue;
      if (!pt.hasTableBelow(h, l) || allowedLevel(mmu, slot, h) < l) continue;
      // The non-leaf SPTE goes with the table under it (handle_removed_pt), so the next fault maps huge.
      n += zapGfnRange(mmu, h, h + span, 'both', 'recover_huge_pages', 'tables');
      if (l === 2) done.push(h);
    }
  }
  return n;
}
