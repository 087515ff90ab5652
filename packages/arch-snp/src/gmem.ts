/**
 * The guest_memfd hooks of an SNP VM: sev_gmem_prepare, sev_gmem_invalidate and
 * sev_gmem_max_mapping_level (arch/x86/kvm/svm/sev.c), which decide when a page becomes the
 * guest's in the RMP, when it comes back, and how large the nested mapping of it may be.
 */
import { KvmError, type MappingLevel, type PageOrder } from '@cocokit/sdk';
import { PAGES_PER_2M, RMPUPDATE } from './constants.js';
import { rmpMakePrivate, rmpMakeShared, rmptablePsmash, type SnpState } from './state.js';

function checkFrame(n: number, what: string, op: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new KvmError('EINVAL', op, `${what} ${n} is not a frame number`);
}

/**
 * sev_gmem_prepare: assigns the folio `[pfn, pfn + 2^order)` to the guest at `gfn`, not validated
 * (the guest must PVALIDATE it before use, else #VC). A 2M region whose 512 pages are all
 * hypervisor-owned becomes one 2M entry (is_large_rmp_possible); otherwise each page becomes a 4K
 * entry. A page already assigned is left alone, as KVM returns 0 for it without checking its owner.
 *
 * Upstream guest_memfd only has order-0 folios, where this is exactly sev_gmem_prepare. For a huge
 * folio the kernel calls the hook once and, when the 2M entry is not possible, assigns only the
 * first page; the model assigns every page of the folio (what the hook must do once guest_memfd
 * has huge folios), so no page of a prepared folio is left unassigned.
 *
 * Refused with no change: `EINVAL` for a pfn/gfn that is not a frame or not aligned to `order`;
 * `ENOENT` for a folio outside RMP coverage (snp_lookup_rmpentry fails: -ENOENT).
 */
export function gmemPrepare(s: SnpState, pfn: number, gfn: number, order: PageOrder): void {
  const op = 'sev_gmem_prepare';
  checkFrame(pfn, 'pfn', op);
  checkFrame(gfn, 'gfn', op);
  if (order !== 0 && order !== 9 && order !== 18) throw new KvmError('EINVAL', op, `order ${String(order)} is not 0, 9 or 18`);
  const n = 2 ** order;
  if (pfn % n !== 0 || gfn % n !== 0) {
    throw new KvmError('EINVAL', op, `folio pfn 0x${pfn.toString(16)} / gfn 0x${gfn.toString(16)} is not aligned to its order ${order}`);
  }
  if (pfn + n > s.rmp.nrFrames) {
    throw new KvmError('ENOENT', op, `pfn 0x${pfn.toString(16)} + ${n} pages is outside RMP coverage [0, 0x${s.rmp.nrFrames.toString(16)})`);
  }
  if (order === 0) {
    if (s.rmp.isAssigned(pfn)) return;
    mustSucceed(rmpMakePrivate(s, pfn, gfn, '4K', false, op), op, pfn);
    return;
  }
  for (let base = pfn; base < pfn + n; base += PAGES_PER_2M) {
    const g = gfn + (base - pfn);
    if (s.rmp.countAssigned(base, base + PAGES_PER_2M) === 0) {
      mustSucceed(rmpMakePrivate(s, base, g, '2M', false, op), op, base);
      continue;
    }
    for (let p = base; p < base + PAGES_PER_2M; p++) {
      if (!s.rmp.isAssigned(p)) mustSucceed(rmpMakePrivate(s, p, g + (p - base), '4K', false, op), op, p);
    }
  }
}

function mustSucceed(rc: number, op: string, pfn: number): void {
  // The checks above leave RMPUPDATE nothing to refuse; KVM turns a failure into -EINVAL.
  if (rc !== RMPUPDATE.SUCCESS) throw new KvmError('EINVAL', op, `RMPUPDATE of pfn 0x${pfn.toString(16)} failed with ${rc}`);
}

/**
 * sev_gmem_invalidate: every assigned page of `[start, end)` goes back to the hypervisor (and
 * loses its Validated bit). A 2M entry fully inside the range is returned with one 2M RMPUPDATE;
 * a 2M entry the range only partly covers is PSMASHed first and returned page by page. Each
 * returned range is flushed from the caches (clflush_cache_range). Failures are not refusals:
 * KVM WARNs and leaks the page (snp_leak_pages), counted in `leakedPages`.
 */
export function gmemInvalidate(s: SnpState, start: number, end: number): void {
  const op = 'sev_gmem_invalidate';
  checkFrame(start, 'start', op);
  checkFrame(end, 'end', op);
  if (end < start) throw new KvmError('EINVAL', op, `end 0x${end.toString(16)} is below start 0x${start.toString(16)}`);
  const last = Math.min(end, s.rmp.nrFrames);
  let pfn = start;
  while (pfn < last) {
    // Jump over hypervisor-owned pages: the kernel's loop looks each up and skips it.
    const next = firstAssigned(s, pfn, last);
    if (next === undefined) break;
    pfn = next;
    const e = s.rmp.lookup(pfn);
    const use2m = pfn % PAGES_PER_2M === 0 && end >= pfn + PAGES_PER_2M && e.size === '2M';
    if (!use2m && e.size === '2M') rmptablePsmash(s, pfn, op);
    const rc = rmpMakeShared(s, pfn, use2m ? '2M' : '4K', op);
    const n = use2m ? PAGES_PER_2M : 1;
    if (rc !== RMPUPDATE.SUCCESS) s.leakedPages += n;
    else s.sim.charge('snp.clflush_page', n);
    pfn += n;
  }
}

function firstAssigned(s: SnpState, from: number, to: number): number | undefined {
  for (const r of s.rmp.assignedRuns(from, to)) return r.start;
  return undefined;
}

/**
 * sev_gmem_max_mapping_level: a private page may be mapped no larger than its RMP entry (4K when
 * unassigned or outside coverage). Shared pages get no SNP limit (level 2). This is what keeps a
 * 2M nested mapping off a 4K RMP entry; the opposite case (a 4K mapping over a 2M entry) is
 * resolved on the fault by {@link handleRmpFault}.
 */
export function maxMappingLevel(s: SnpState, pfn: number, isPrivate: boolean): MappingLevel {
  if (!isPrivate) return 2;
  if (!s.rmp.covers(pfn)) return 0;
  const e = s.rmp.lookup(pfn);
  return e.assigned && e.size === '2M' ? 1 : 0;
}

/** What KVM did about an #NPF with the RMP bit set ({@link handleRmpFault}). */
export type RmpFaultAction =
  /** The 2M entry was PSMASHed: zap `[zapStart, zapEnd)` so the range is re-faulted at 4K. */
  | { readonly action: 'psmash'; readonly zapStart: number; readonly zapEnd: number; readonly rc: number }
  /** The entry is already 4K: a race with a concurrent PSMASH; nothing to do. */
  | { readonly action: 'spurious' }
  /** The page is not assigned: KVM warns and ignores the fault. */
  | { readonly action: 'ignored'; readonly reason: string };

/**
 * sev_handle_rmp_fault for an RMP #NPF on a private gfn backed by `pfn` (what kvm_gmem_get_pfn
 * gives; the plugin passes the pfn the core's nested tables map, from guestAccess or PVALIDATE, see
 * resolveRmpNpf in access.ts): an RMP #NPF caused by a 4K PVALIDATE/RMPADJUST under a 2M entry
 * (SIZEM), or by a 4K nested mapping of a page whose RMP entry is 2M, is resolved by PSMASHing the
 * 2M entry and zapping `[gfn, gfn + 512)` (KVM passes the unaligned gfn; the zap takes the huge
 * mapping containing it) so the guest re-faults at 4K and retries. Like KVM, it checks neither the
 * entry's owner nor its GPA.
 */
export function handleRmpFault(s: SnpState, gfn: number, pfn: number): RmpFaultAction {
  const op = 'sev_handle_rmp_fault';
  checkFrame(gfn, 'gfn', op);
  checkFrame(pfn, 'pfn', op);
  const trace = (action: 'psmash' | 'spurious' | 'ignored'): void => {
    if (s.sim.trace.enabled) s.sim.trace.emit('snp.rmp_fault', { gfn, pfn, action });
  };
  if (!s.rmp.isAssigned(pfn)) {
    trace('ignored');
    return { action: 'ignored', reason: `no assigned RMP entry for pfn 0x${pfn.toString(16)}` };
  }
  if (s.rmp.lookup(pfn).size === '4K') {
    trace('spurious');
    return { action: 'spurious' };
  }
  const rc = rmptablePsmash(s, pfn, op);
  trace('psmash');
  return { action: 'psmash', zapStart: gfn, zapEnd: gfn + PAGES_PER_2M, rc };
}
