/**
 * Zapping (tdp_mmu.c: kvm_tdp_mmu_zap_leafs / kvm_tdp_mmu_unmap_gfn_range, mmu.c:
 * kvm_zap_gfn_range, kvm_unmap_gfn_range): leaves of both roots intersecting a gfn range go, with
 * a filter (KVM_FILTER_PRIVATE / KVM_FILTER_SHARED), one remote TLB flush per zap that removed
 * anything, and the counters. Callers hold mmu_lock for write and have begun an invalidation.
 */
import type { Mmu } from './mmu.js';
import type { ZapCount, ZapFilter } from './page-table.js';

/**
 * Zaps `[start, end)` with `filter` in the roots the filter reaches: the mirror root holds only
 * private leaves; the direct root holds shared leaves (and, without a mirror root, private ones
 * flagged PRIVATE). Returns the leaves zapped. Must run under mmu_lock for write.
 */
export function zapGfnRange(mmu: Mmu, start: number, end: number, filter: ZapFilter, reason: string): number {
  const out: ZapCount = { byLevel: [0, 0, 0], tablesFreed: 0 };
  const mirror = mmu.mirror;
  if (mirror !== undefined) {
    if (filter !== 'private') mmu.direct.zap(start, end, 'both', out);
    if (filter !== 'shared') mirror.zap(start, end, 'both', out);
  } else {
    mmu.direct.zap(start, end, filter, out);
  }
  const n = out.byLevel[0] + out.byLevel[1] + out.byLevel[2];
  if (n === 0) return 0;
  for (let l = 0; l < 3; l++) mmu.stats.zapped[l]! += out.byLevel[l]!;
  mmu.stats.zaps++;
  mmu.sim.charge('mmu.spte_zap', n);
  mmu.flushTlbs();
  if (mmu.sim.trace.enabled) mmu.sim.trace.emit('mmu.zap', { start, end: Math.min(end, Number.MAX_SAFE_INTEGER), sptes: n, filter, reason });
  return n;
}
