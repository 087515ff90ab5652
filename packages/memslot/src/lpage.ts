/**
 * x86 "mixed attributes" huge-page tracking (`lpage_info` + `KVM_LPAGE_MIXED_FLAG`,
 * arch/x86/kvm/mmu/mmu.c): for each memslot and each huge level (2M, 1G), which huge pages fully
 * inside the slot hold non-uniform memory attributes, so the fault path maps them smaller.
 *
 * Sparse: only mixed huge pages are stored, as runs of huge-page indices (gfn / pages-per-hugepage)
 * in a RangeMap per level. A 1 TiB slot whose attributes are uniform stores nothing, and the
 * "every huge page fully inside the range is not mixed" step of a set is one `clear`.
 */
import { RangeMap } from '@cocokit/sdk';
import type { FrameRange } from '@cocokit/sdk';

/** Huge levels tracked: 1 = 2M, 2 = 1G (the arch contract's MappingLevel numbering). */
export type HugeLevel = 1 | 2;
/** Huge levels in the order the kernel processes them (1G consumes the 2M results). */
export const HUGE_LEVELS: readonly HugeLevel[] = [1, 2];
/** `KVM_PAGES_PER_HPAGE(level)`. */
export const pagesPerHugepage = (level: HugeLevel): number => (level === 1 ? 512 : 512 * 512);

/** The memory attributes the tracking reads: a gfn → attributes map (0 = none). */
export interface AttributeSource {
  /** `kvm_get_memory_attributes` */
  get(gfn: number): number;
  /** Runs of non-zero attributes in `[start, end)`. */
  runs(start: number, end: number): Iterable<{ readonly start: number; readonly end: number; readonly value: number }>;
  /** `kvm_range_has_memory_attributes(kvm, start, end, ~0, attrs)` */
  uniform(start: number, end: number, attrs: number): boolean;
}

/** @internal The mixed flags of one slot. */
export class LpageMixed {
  /** Per level, runs of mixed huge-page indices. Index 0 is 2M, 1 is 1G. */
  readonly mixed: [RangeMap<true>, RangeMap<true>] = [new RangeMap<true>(), new RangeMap<true>()];

  readonly baseGfn: number;
  readonly npages: number;

  constructor(baseGfn: number, npages: number) {
    this.baseGfn = baseGfn;
    this.npages = npages;
  }

  private map(level: HugeLevel): RangeMap<true> {
    return this.mixed[level - 1] as RangeMap<true>;
  }

  /** `hugepage_test_mixed(slot, gfn, level)` */
  test(gfn: number, level: HugeLevel): boolean {
    return this.map(level).has(Math.floor(gfn / pagesPerHugepage(level)));
  }

  private setMixed(gfn: number, level: HugeLevel, mixed: boolean): void {
    const i = Math.floor(gfn / pagesPerHugepage(level));
    if (mixed) this.map(level).set(i, i + 1, true);
    else this.map(level).clear(i, i + 1);
  }

  /** Whether the huge page at `gfn` (aligned) lies fully inside the slot, i.e. is tracked at all. */
  private inside(gfn: number, level: HugeLevel): boolean {
    return gfn >= this.baseGfn && gfn + pagesPerHugepage(level) <= this.baseGfn + this.npages;
  }

  /**
   * `hugepage_has_attrs`: 2M → every gfn has `attrs`; 1G → every 2M sub-page is not mixed and its
   * first gfn has `attrs` (so 1G consumes the 2M results, as in the kernel).
   */
  hugepageHasAttrs(attrs: AttributeSource, gfn: number, level: HugeLevel, value: number): boolean {
    const n = pagesPerHugepage(level);
    const start = gfn - (gfn % n);
    if (level === 1) return attrs.uniform(start, start + n, value);
    // The kernel walks the 512 2M sub-pages: none mixed, and each one's first gfn has `value`.
    // With no 2M sub-page mixed, "every first gfn has value" is "the 1G range is uniformly
    // value", so both halves are answered from runs: O(log runs) instead of 1024 lookups.
    if (this.map(1).firstWith(start / 512, (start + n) / 512) !== undefined) return false;
    return attrs.uniform(start, start + n, value);
  }

  /**
   * `kvm_mmu_init_memslot_memory_attributes`, at slot creation (and move): every huge page fully
   * inside the slot is checked. The kernel loops over every huge page; the model derives the same
   * answer from the attribute run boundaries, O(runs in the slot): a huge page is mixed iff a run
   * boundary falls strictly inside it.
   */
  init(attrs: AttributeSource): void {
    for (const level of HUGE_LEVELS) this.map(level).clearAll();
    const end = this.baseGfn + this.npages;
    for (const level of HUGE_LEVELS) {
      const n = pagesPerHugepage(level);
      const first = Math.ceil(this.baseGfn / n) * n;
      const last = Math.floor(end / n) * n;
      if (first >= last) continue;
      for (const b of boundaries(attrs, first, last)) {
        if (b % n !== 0) this.setMixed(b, level, true);
      }
    }
  }

  /**
   * `kvm_arch_post_set_memory_attributes` for the part `[start, end)` of a set that lies in this
   * slot: head and tail huge pages that straddle the range are recomputed (only if fully inside
   * the slot), huge pages entirely covered become "not mixed". 2M before 1G.
   */
  afterSet(attrs: AttributeSource, start: number, end: number, value: number): void {
    const slotEnd = this.baseGfn + this.npages;
    for (const level of HUGE_LEVELS) {
      const n = pagesPerHugepage(level);
      let g = start - (start % n);
      // Head page, if it straddles the range.
      if (g !== start || g + n > end) {
        if (g >= this.baseGfn && g + n <= slotEnd) {
          this.setMixed(g, level, !this.hugepageHasAttrs(attrs, g, level, value));
        }
        g += n;
      }
      // Pages entirely covered hold only the attributes just set.
      const coveredEnd = end - (end % n);
      if (g < coveredEnd) {
        this.map(level).clear(g / n, coveredEnd / n);
        g = coveredEnd;
      }
      // Tail page, if it straddles the range and is inside the slot.
      if (g < end && g + n <= slotEnd) {
        this.setMixed(g, level, !this.hugepageHasAttrs(attrs, g, level, value));
      }
    }
  }

  /**
   * The head/tail huge pages that `kvm_arch_pre_set_memory_attributes` adds to the invalidation:
   * those straddling `[start, end)`, fully inside the slot and currently not mixed (i.e. they may
   * be mapped huge right now).
   */
  hugepageInvalidations(start: number, end: number): FrameRange[] {
    const out: FrameRange[] = [];
    const slotEnd = this.baseGfn + this.npages;
    for (const level of HUGE_LEVELS) {
      const n = pagesPerHugepage(level);
      const head = start - (start % n);
      const tail = end - 1 - ((end - 1) % n);
      if ((head !== start || head + n > end) && this.inside(head, level) && !this.test(head, level)) {
        out.push({ start: head, end: head + n });
      }
      if (tail === head) continue;
      if (tail + n > end && tail + n <= slotEnd && !this.test(tail, level)) out.push({ start: tail, end: tail + n });
    }
    return out;
  }

  /** Mixed huge pages of `level`, as gfn ranges. */
  mixedRanges(level: HugeLevel): FrameRange[] {
    const n = pagesPerHugepage(level);
    const out: FrameRange[] = [];
    for (const r of this.map(level).runs()) out.push({ start: r.start * n, end: r.end * n });
    return out;
  }

  /** Whether this tracking equals `other` (used by the invariant check against a recomputation). */
  equals(other: LpageMixed): boolean {
    for (const level of HUGE_LEVELS) {
      const a = this.mixedRanges(level);
      const b = other.mixedRanges(level);
      if (a.length !== b.length) return false;
      for (let i = 0; i < a.length; i++) {
        if (a[i]!.start !== b[i]!.start || a[i]!.end !== b[i]!.end) return false;
      }
    }
    return true;
  }
}

/** Frames strictly inside `(start, end)` where the attribute value changes: run starts and ends. */
function* boundaries(attrs: AttributeSource, start: number, end: number): Generator<number> {
  for (const r of attrs.runs(start, end)) {
    if (r.start > start) yield r.start;
    if (r.end < end) yield r.end;
  }
}
