/**
 * Zapping (tdp_mmu.c: kvm_tdp_mmu_zap_leafs / kvm_tdp_mmu_unmap_gfn_range, mmu.c:
 * kvm_zap_gfn_range, kvm_unmap_gfn_range): leaves of both roots intersecting a gfn range go, with
 * a filter (KVM_FILTER_PRIVATE / KVM_FILTER_SHARED), one remote TLB flush per zap that removed
 * anything, and the counters. Page tables stay unless the caller asks for the direct root's to go
 * too (kvm_tdp_mmu_zap_all, kvm_mmu_zap_all_fast, huge-page recovery); a mirror root's never go
 * here. Callers hold mmu_lock for write and have begun an invalidation.
 */
import type { Mmu } from './mmu.js';
import type { ZapCount, ZapFilter } from './page-table.js';

/**
 * What a zap takes down: `'leafs'`, leaf SPTEs only (tdp_mmu_zap_leafs: conversions, punch-hole,
 * mmu notifiers, kvm_zap_gfn_range, memslot flushes of VMs other than default ones); `'tables'`,
 * also the direct root's page tables wholly inside the range (tdp_mmu_zap_root under
 * kvm_tdp_mmu_zap_all, kvm_mmu_recover_huge_pages); `'emptied-tables'`, also the direct root's
 * tables the zap leaves empty (a default VM's memslot flush: kvm_mmu_zap_all_fast drops every
 * root, the model only what the slot's range held). A mirror root is zapped leaf by leaf either
 * way: its tables go only with the root.
 */
export type ZapScope = 'leafs' | 'tables' | 'emptied-tables';

/**
 * Zaps `[start, end)` with `filter` in the roots the filter reaches: the mirror root holds only
 * private leaves; the direct root holds shared leaves (and, without a mirror root, private ones
 * flagged PRIVATE). Returns the leaves zapped. Must run under mmu_lock for write.
 */
export function zapGfnRange(mmu: Mmu, start: number, end: number, filter: ZapFilter, reason: string, scope: ZapScope = 'leafs'): number {
  const out: ZapCount = { byLevel: [0, 0, 0], tablesFreed: 0 };
  const mirror = mmu.mirror;
  const direct = mirror === undefined ? filter : filter === 'private' ? undefined : 'both';
  if (direct !== undefined) {
    if (scope !== 'leafs' && direct === 'both') mmu.direct.zapTables(start, end, out, scope === 'emptied-tables');
    else mmu.direct.zap(start, end, direct, out);
  }
  if (mirror !== undefined && filter !== 'shared') mirror.zap(start, end, 'both', out);
  const n = out.byLevel[0] + out.byLevel[1] + out.byLevel[2];
  if (n === 0) return 0;
  for (let l = 0; l < 3; l++) mmu.stats.zapped[l]! += out.byLevel[l]!;
  mmu.stats.zaps++;
  mmu.sim.charge('mmu.spte_zap', n);
  mmu.flushTlbs();
  if (mmu.sim.trace.enabled) mmu.sim.trace.emit('mmu.zap', { start, end: Math.min(end, Number.MAX_SAFE_INTEGER), sptes: n, filter, reason });
  return n;
}

/**
 * What kvm_arch_flush_shadow_memslot takes down when a slot is deleted or moved. A default VM
 * (kvm_memslot_flush_zap_all: KVM_X86_DEFAULT_VM with KVM_X86_QUIRK_SLOT_ZAP_ALL, on by default)
 * runs kvm_mmu_zap_all_fast, which makes every root obsolete and frees its tables; the model zaps
 * the slot's range only and frees the direct root's tables that held nothing else. Every other VM
 * type zaps the slot's leaf SPTEs and keeps the tables (kvm_mmu_zap_memslot_leafs), which a TD's
 * mirror root must.
 */
export function memslotFlushScope(mmu: Mmu): ZapScope {
  return mmu.arch === undefined && !mmu.privateMem ? 'emptied-tables' : 'leafs';
}
