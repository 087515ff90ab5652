/**
 * The largest level a fault may map at (kvm_mmu_max_mapping_level / kvm_mmu_hugepage_adjust,
 * mmu.c): the minimum of the backing's own level (guest_memfd's max_order or the host mapping
 * level), the memslot's lpage_info (the huge page must lie fully inside the slot, gfn and backing
 * offset aligned alike, and its attributes not mixed, §3.3), dirty logging (4K), an extension's cap
 * (userfault: 4K) and, for private memory, the arch's limit.
 */
import { uapi, type MappingLevel } from '@cocokit/sdk';
import type { Memslot } from '@cocokit/memslot';
import type { Mmu } from './mmu.js';

const SPAN = [1, 512, 512 * 512] as const;

/** x86's order → level mapping: ≥ 18 → 1G, ≥ 9 → 2M, else 4K. */
export function orderLevel(order: number): MappingLevel {
  return order >= 18 ? 2 : order >= 9 ? 1 : 0;
}

/**
 * The slot-side limit for `gfn` (lpage_info's disallow_lpage plus the mixed flag): the largest
 * level ≤ `start` whose huge page lies inside `slot`, whose backing offset (`backingBase`, in
 * frames: the hva frame or the file index of the slot's first gfn) is aligned like the gfn, and
 * whose attributes are not mixed.
 */
export function slotMaxLevel(mmu: Mmu, slot: Memslot, gfn: number, start: MappingLevel, backingBase: number): MappingLevel {
  let level = start;
  while (level > 0) {
    const n = SPAN[level];
    const head = gfn - (gfn % n);
    const ok =
      head >= slot.baseGfn &&
      head + n <= slot.baseGfn + slot.npages &&
      (slot.baseGfn - backingBase) % n === 0 &&
      !(mmu.privateMem && mmu.memslots.isMixed(slot, gfn, level as 1 | 2));
    if (ok) break;
    level = (level - 1) as MappingLevel;
  }
  return level;
}

/** Whether the slot logs dirty pages or is read-only with respect to huge mappings. */
export function dirtyLogging(slot: Memslot): boolean {
  return (slot.flags & uapi.KVM_MEM_LOG_DIRTY_PAGES) !== 0;
}

/**
 * The full limit for a fault on `gfn` backed by `pfn`: `backingLevel` (from guest_memfd's
 * max_order or host_pfn_mapping_level), the slot's limit, dirty logging, `extensionCap` and the
 * arch's private limit (capabilities.maxPrivateLevel and the `maxMappingLevel` hook).
 */
export function maxMappingLevel(
  mmu: Mmu,
  slot: Memslot,
  gfn: number,
  pfn: number,
  isPrivate: boolean,
  backingLevel: MappingLevel,
  backingBase: number,
  extensionCap: MappingLevel,
): MappingLevel {
  if (dirtyLogging(slot)) return 0;
  let level = Math.min(backingLevel, extensionCap) as MappingLevel;
  if (level === 0) return 0;
  if (isPrivate && mmu.arch !== undefined) {
    level = Math.min(level, mmu.arch.capabilities.maxPrivateLevel) as MappingLevel;
    const hook = mmu.arch.maxMappingLevel;
    if (hook !== undefined && level > 0) level = Math.min(level, hook.call(mmu.arch, gfn as never, pfn as never, true)) as MappingLevel;
  }
  if (level === 0) return 0;
  return slotMaxLevel(mmu, slot, gfn, level, backingBase);
}

/**
 * The level `gfn` may be mapped at now, from state alone (no pfn is resolved, nothing allocated):
 * for invariant checks and hugepage recovery. Extension caps are not known here.
 */
export function allowedLevel(mmu: Mmu, slot: Memslot, gfn: number): MappingLevel {
  if (dirtyLogging(slot)) return 0;
  const isPrivate = mmu.isPrivateGfn(gfn, slot);
  let level: MappingLevel;
  let base: number;
  if (isPrivate || slot.gmem?.gmemOnly === true) {
    const b = mmu.gmemBinding(slot);
    if (b === undefined) return 0;
    const index = b.pgoff + (gfn - slot.baseGfn);
    level = orderLevel(b.file.maxMappingOrder(index));
    base = b.pgoff;
  } else {
    level = mmu.options.hostMappingLevel?.(slot, gfn as never, slot.userspaceAddr + (gfn - slot.baseGfn) * 4096) ?? 0;
    base = slot.userspaceAddr / 4096;
  }
  if (isPrivate && mmu.arch !== undefined) level = Math.min(level, mmu.arch.capabilities.maxPrivateLevel) as MappingLevel;
  if (level === 0) return 0;
  return slotMaxLevel(mmu, slot, gfn, level, base);
}
