/**
 * The buddy allocator over host physical frames (mm/page_alloc.c), orders 0..18.
 *
 * Memory of the model scales with what is allocated, never with the host's size: each order's free
 * list is a {@link NumberRangeMap} of free block starts (adjacent free blocks of one order coalesce
 * into a run, so a freshly booted 1 TiB host is one run of 1024 order-18 blocks), and allocated
 * blocks are one more NumberRangeMap keyed by frame whose value encodes the block's order and
 * purpose (the purpose interned as a small integer; sequentially allocated 4 KiB pages of one
 * purpose coalesce too). There is no per-frame array anywhere. Each order also remembers its lowest
 * free block, so an allocation takes the head of its list without searching, and the hot paths
 * allocate no objects. An order whose free list holds a single block keeps that block in a field
 * instead of its map (see `lone`): carving a big block from its low end, as sequential order-0
 * allocation does, only ever puts and takes such lone blocks, so it touches no free-list map.
 *
 * Policy, deterministic and explainable: take the smallest order that has a free block (as
 * `__rmqueue_smallest` does) and, within that order, the lowest address (our free lists are sorted,
 * so "head of the list" is the lowest block). Splitting hands the upper halves back to the lower
 * orders (`expand()`); freeing merges with the buddy while the buddy is free at the same order
 * (`__free_one_page()`). Both are O(orders + log n).
 *
 * Errors: argument-shape mistakes (a non-integer pfn, an order outside 0..18, a pfn beyond the
 * host) are `KvmError('EINVAL')` so a value that came from a user can be refused cleanly; state
 * misuse (freeing a block that is not allocated, or with the wrong order, a double free) can only
 * come from a bug in the caller's bookkeeping and is a `ModelInvariantError`. Running out is
 * `KvmError('ENOMEM')`; asking for a specific block that is in use is `KvmError('EBUSY')`
 * (`alloc_contig_range()`'s answer). A refused call changes nothing.
 */
import { KvmError, ModelInvariantError, NumberRangeMap, pfn as toPfn } from '@cocokit/sdk';
import type { Pfn } from '@cocokit/sdk';

/** The largest order the allocator hands out: 1 GiB blocks (the kernel's MAX_PAGE_ORDER is 10; gigantic folios come from CMA/hugetlb, which this model folds in). */
export const MAX_ORDER = 18;

/**
 * What an allocation is for; accounting is kept per purpose. The well-known ones are listed; any
 * other string is accepted (a plugin may account its own pages).
 */
export type PagePurpose = 'guest_memfd' | 'anon' | 'page_table' | 'kernel' | (string & {});

/** One allocated run as the allocator stores it: every block in the run has this order and purpose. */
export interface AllocatedBlockInfo {
  /** The order of each block of the run (blocks are aligned to it). */
  readonly order: number;
  /** What the pages are for. */
  readonly purpose: PagePurpose;
}

/** A snapshot of the allocator's accounting. */
export interface BuddyStats {
  /** Frames the allocator manages. */
  readonly totalFrames: number;
  /** Frames on the free lists. */
  readonly freeFrames: number;
  /** Frames allocated (`totalFrames - freeFrames`). */
  readonly usedFrames: number;
  /** Allocated frames per purpose (purposes with zero frames are omitted). */
  readonly usedByPurpose: Readonly<Record<string, number>>;
  /**
   * The most frames ever allocated at once since the allocator was created (the high-water mark
   * of `usedFrames`, like cgroup v2's memory.peak): what a host must have had free for the run.
   */
  readonly peakUsedFrames: number;
  /** Free blocks per order, index = order (like /proc/buddyinfo). */
  readonly freeBlocksByOrder: readonly number[];
}

/** Block sizes by order (`2 ** o` costs a call on the hot path). */
const SIZE: readonly number[] = Array.from({ length: MAX_ORDER + 1 }, (_, o) => 2 ** o);

/**
 * An allocated run's value in the allocated map: `purposeId * CODE_STRIDE + order`, the purpose
 * interned per allocator (so equal codes mean equal `{order, purpose}` and runs coalesce as before).
 */
const CODE_STRIDE = 32;

/** The start of `block`'s buddy at `order` (block XOR 2^order, in arithmetic: frames exceed 2^31). */
function buddyOf(block: number, order: number): number {
  const size = 2 ** order;
  return (block / size) % 2 === 0 ? block + size : block - size;
}

/**
 * A buddy allocator over `[0, nrFrames)`.
 *
 * @example
 * const buddy = new BuddyAllocator(2 ** 24);       // 64 GiB
 * const p = buddy.alloc(9, 'guest_memfd');          // one 2 MiB block, lowest address first
 * buddy.free(p, 9);
 */
export class BuddyAllocator {
  /** Frames managed. */
  readonly nrFrames: number;
  /** Free blocks per order: a frame is in `freeLists[o]` iff it belongs to a free block of order `o` (value 1). */
  private readonly freeLists: NumberRangeMap[] = [];
  private readonly freeBlocks: number[] = [];
  /** The lowest free block of each order (the head of its list), -1 when the order has none. */
  private readonly lowest: number[] = [];
  /**
   * The free block of an order whose list holds that block only, -1 otherwise; `freeLists[o]` is
   * empty while `lone[o]` is set, so the free blocks of order `o` are `freeLists[o]` plus
   * `lone[o]`. Why: splitting a block for an order-0 allocation leaves exactly one free block on
   * each lower order, and the next allocations take them again (a binary counter), so sequential
   * allocation would otherwise pay a map insert and a map removal per page. Only the
   * representation differs: every query answers as if the block were in the map.
   */
  private readonly lone: number[] = [];
  /** Allocated frames → `purposeId * CODE_STRIDE + order` of their block. */
  private readonly allocated = new NumberRangeMap();
  /** Interned purposes: id → name, name → id, and frames allocated per id. */
  private readonly purposeNames: string[] = [];
  private readonly purposeIds = new Map<string, number>();
  /** The purpose {@link BuddyAllocator.codeOf} interned last and its id: callers allocate runs of one purpose. */
  private lastPurpose: string | undefined;
  private lastPurposeId = -1;
  private readonly usedById: number[] = [];
  /** One shared, frozen {@link AllocatedBlockInfo} per code, so lookups allocate nothing. */
  private readonly infos: Array<AllocatedBlockInfo | undefined> = [];
  private freeCount = 0;
  /** High-water mark of allocated frames, raised on allocation (frees never lower it). */
  private peakUsed = 0;

  /** Creates an allocator whose every frame is free, carved into the largest aligned blocks. */
  constructor(nrFrames: number) {
    if (!Number.isSafeInteger(nrFrames) || nrFrames <= 0 || nrFrames > 2 ** 40) {
      throw new KvmError('EINVAL', 'BuddyAllocator', `nrFrames = ${nrFrames} is not an integer in [1, 2^40]`);
    }
    this.nrFrames = nrFrames;
    for (let o = 0; o <= MAX_ORDER; o++) {
      this.freeLists.push(new NumberRangeMap());
      this.freeBlocks.push(0);
      this.lowest.push(-1);
      this.lone.push(-1);
    }
    // memblock hands memory to the buddy allocator in the largest aligned blocks that fit
    // (memblock_free_pages → __free_pages_core); a size that is not a multiple of 1 GiB leaves a
    // tail of smaller blocks.
    let cursor = 0;
    while (cursor < nrFrames) {
      let o = MAX_ORDER;
      while (o > 0 && (cursor % SIZE[o]! !== 0 || cursor + SIZE[o]! > nrFrames)) o--;
      const size = SIZE[o]!;
      // Consecutive blocks of one order coalesce into one run: O(orders) runs in total.
      const runEnd = o === MAX_ORDER ? alignDownTo(nrFrames, size) : cursor + size;
      this.freeLists[o]!.set(cursor, runEnd, 1);
      this.freeBlocks[o]! += (runEnd - cursor) / size;
      if (this.lowest[o]! < 0) this.lowest[o] = cursor;
      cursor = runEnd;
    }
    this.freeCount = nrFrames;
  }

  /** Frames on the free lists. */
  get freeFrames(): number {
    return this.freeCount;
  }

  /** Frames allocated. */
  get usedFrames(): number {
    return this.nrFrames - this.freeCount;
  }

  /** The most frames allocated at once so far (see {@link BuddyStats.peakUsedFrames}). */
  get peakUsedFrames(): number {
    return this.peakUsed;
  }

  /** Frames allocated for `purpose`. */
  usedBy(purpose: PagePurpose): number {
    const id = this.purposeIds.get(purpose);
    return id === undefined ? 0 : this.usedById[id]!;
  }

  /** Free blocks of `order` (one line of /proc/buddyinfo). */
  freeBlockCount(order: number): number {
    return this.freeBlocks[order] ?? 0;
  }

  /** Runs stored across the free lists and the allocated map: the model's memory, not the host's. */
  get runCount(): number {
    let n = this.allocated.runCount;
    for (let o = 0; o <= MAX_ORDER; o++) n += this.freeLists[o]!.runCount + (this.lone[o]! >= 0 ? 1 : 0);
    return n;
  }

  /**
   * Whether a block of `order` could be allocated now (a free block of `order` or above exists).
   * {@link BuddyAllocator.alloc} throws ENOMEM exactly when this is false.
   */
  canAlloc(order: number): boolean {
    checkOrder(order, 'canAlloc');
    for (let o = order; o <= MAX_ORDER; o++) if (this.freeBlocks[o]! > 0) return true;
    return false;
  }

  /**
   * Allocates a block of 2^order frames aligned to its size (alloc_pages): the lowest block of the
   * smallest order that has one, split down to `order`. ENOMEM when no block of `order` can be
   * formed; nothing changes then. O(orders + log n).
   */
  alloc(order: number, purpose: PagePurpose): Pfn {
    checkOrder(order, 'alloc_pages');
    let o = order;
    while (o <= MAX_ORDER && this.freeBlocks[o] === 0) o++;
    if (o > MAX_ORDER) {
      throw new KvmError(
        'ENOMEM',
        'alloc_pages',
        `no free block of order ${order} (${this.freeCount} frames free, fragmented or exhausted)`,
      );
    }
    const block = this.lowest[o]!;
    if (block < 0) throw new ModelInvariantError('host.buddy-free-count', `order ${o} counted free but its list is empty`);
    const code = this.codeOf(order, purpose);
    this.takeFree(block, o);
    // expand(): the upper half of each split goes back on the next lower free list.
    while (o > order) {
      o--;
      this.putFree(block + SIZE[o]!, o);
    }
    this.markAllocated(block, order, code);
    return toPfn(block);
  }

  /**
   * Allocates the specific block `[pfn, pfn + 2^order)` (as `alloc_contig_range()` does for a
   * gigantic folio at a chosen place), splitting whatever free block contains it. EBUSY when any
   * frame of it is in use; EINVAL when it is unaligned or outside the host. O(orders + log n).
   */
  allocAt(pfn: number, order: number, purpose: PagePurpose): Pfn {
    checkOrder(order, 'alloc_contig_range');
    this.checkBlockShape(pfn, order, 'alloc_contig_range');
    // In a buddy allocator every fully free aligned block is inside one free block of its order
    // or above (buddies always merge), so looking up the containing block is enough.
    let o = order;
    let block = -1;
    for (; o <= MAX_ORDER; o++) {
      const s = alignDownTo(pfn, SIZE[o]!);
      if (this.freeBlocks[o]! > 0 && this.isFreeIn(o, s)) {
        block = s;
        break;
      }
    }
    if (block < 0) {
      throw new KvmError('EBUSY', 'alloc_contig_range', `frames [${pfn}, ${pfn + SIZE[order]!}) are not all free`);
    }
    const code = this.codeOf(order, purpose);
    this.takeFree(block, o);
    while (o > order) {
      o--;
      const half = SIZE[o]!;
      if (pfn >= block + half) {
        this.putFree(block, o);
        block += half;
      } else {
        this.putFree(block + half, o);
      }
    }
    this.markAllocated(block, order, code);
    return toPfn(block);
  }

  /**
   * Returns the block at `pfn` of `order` to the free lists, merging it with its buddy for as long
   * as the buddy is free at the same order (`__free_one_page()`). Freeing a block that is not
   * allocated, or with an order other than the one it has, is a ModelInvariantError.
   */
  free(pfn: number, order: number): void {
    const code = this.checkAllocatedCode(pfn, order, '__free_pages');
    const size = SIZE[order]!;
    this.allocated.clear(pfn, pfn + size);
    this.usedById[(code - order) / CODE_STRIDE]! -= size;
    let block = pfn;
    let o = order;
    while (o < MAX_ORDER) {
      if (this.freeBlocks[o] === 0) break;
      const buddy = buddyOf(block, o);
      // The buddy of a block at the end of a host whose size is not a multiple of 2^(o+1) lies
      // outside it: nothing to merge with (the kernel checks pfn_valid / zone span likewise).
      if (buddy + SIZE[o]! > this.nrFrames || !this.isFreeIn(o, buddy)) break;
      this.takeFree(buddy, o);
      if (buddy < block) block = buddy;
      o++;
    }
    this.putFree(block, o);
  }

  /**
   * Splits the allocated block at `pfn` of `order` into allocated blocks of `newOrder`, keeping the
   * purpose (guest_memfd's huge-folio split: the pages stay in use, only their folio size changes).
   * O(log n): the pieces are one run.
   */
  splitAllocated(pfn: number, order: number, newOrder: number): void {
    checkOrder(newOrder, 'split_folio');
    const code = this.checkAllocatedCode(pfn, order, 'split_folio');
    if (newOrder >= order) {
      throw new KvmError('EINVAL', 'split_folio', `new order ${newOrder} is not below the folio's order ${order}`);
    }
    this.allocated.set(pfn, pfn + SIZE[order]!, code - order + newOrder);
  }

  /**
   * Merges the allocated blocks that tile `[pfn, pfn + 2^newOrder)` into one allocated block of
   * `newOrder` (the reverse of {@link BuddyAllocator.splitAllocated}). EINVAL unless every frame is
   * allocated, with one purpose, in blocks of a lower order; nothing changes then.
   */
  mergeAllocated(pfn: number, newOrder: number): void {
    checkOrder(newOrder, 'merge_folio');
    this.checkBlockShape(pfn, newOrder, 'merge_folio');
    const end = pfn + SIZE[newOrder]!;
    const hole = this.allocated.firstWithout(pfn, end);
    if (hole !== undefined) {
      throw new KvmError('EINVAL', 'merge_folio', `frame ${hole} of [${pfn}, ${end}) is not allocated`);
    }
    let purposeId = -1;
    for (const r of this.allocated.runs(pfn, end)) {
      const order = r.value % CODE_STRIDE;
      const id = (r.value - order) / CODE_STRIDE;
      if (order >= newOrder) {
        throw new KvmError('EINVAL', 'merge_folio', `frame ${r.start} is already in a block of order ${order}`);
      }
      if (purposeId >= 0 && id !== purposeId) {
        throw new KvmError('EINVAL', 'merge_folio', `frames of [${pfn}, ${end}) have different purposes`);
      }
      purposeId = id;
    }
    this.allocated.set(pfn, end, purposeId * CODE_STRIDE + newOrder);
  }

  /** Whether `pfn` is allocated. O(log n). */
  isAllocated(pfn: number): boolean {
    return this.allocated.has(pfn);
  }

  /** Whether `pfn` is on a free list. O(orders · log n). */
  isFree(pfn: number): boolean {
    return this.freeOrderOf(pfn) !== undefined;
  }

  /** The order of the free block containing `pfn`, or `undefined` when `pfn` is not free. */
  freeOrderOf(pfn: number): number | undefined {
    for (let o = 0; o <= MAX_ORDER; o++) if (this.isFreeIn(o, pfn)) return o;
    return undefined;
  }

  /**
   * The allocated block containing `pfn`: its first frame, order and purpose, or `undefined` if
   * `pfn` is free. O(log n).
   */
  blockOf(pfn: number): { readonly pfn: Pfn; readonly order: number; readonly purpose: PagePurpose } | undefined {
    const code = this.allocated.get(pfn);
    if (code === undefined) return undefined;
    const order = code % CODE_STRIDE;
    return { pfn: toPfn(alignDownTo(pfn, SIZE[order]!)), order, purpose: this.purposeNames[(code - order) / CODE_STRIDE]! };
  }

  /** Whether every frame of `[start, end)` is allocated. O(log n + runs). */
  isRangeAllocated(start: number, end: number): boolean {
    // One lookup when a single run covers the range (a page, a folio): the common case, with no
    // iterator; runs of different blocks may touch, so a shorter run still needs the scan.
    if (start < end && start >= 0 && Number.isSafeInteger(start) && this.allocated.endOfRunAt(start) >= end) return true;
    return this.allocated.firstWithout(start, end) === undefined;
  }

  /** The allocated runs intersecting `[start, end)` (default: all), clipped. */
  *allocatedRuns(start?: number, end?: number): IterableIterator<{ start: number; end: number; value: AllocatedBlockInfo }> {
    for (const r of this.allocated.runs(start, end)) yield { start: r.start, end: r.end, value: this.infoOf(r.value) };
  }

  /** The free runs of `order` (each run a sequence of aligned free blocks of that order). */
  freeRuns(order: number): IterableIterator<{ start: number; end: number }> {
    checkOrder(order, 'freeRuns');
    return this.freeRunsOf(order);
  }

  /** A snapshot of the accounting. */
  stats(): BuddyStats {
    const usedByPurpose: Record<string, number> = {};
    for (let id = 0; id < this.usedById.length; id++) {
      const v = this.usedById[id]!;
      if (v > 0) usedByPurpose[this.purposeNames[id]!] = v;
    }
    return {
      totalFrames: this.nrFrames,
      freeFrames: this.freeCount,
      usedFrames: this.nrFrames - this.freeCount,
      usedByPurpose,
      peakUsedFrames: this.peakUsed,
      freeBlocksByOrder: [...this.freeBlocks],
    };
  }

  /**
   * Checks the allocator (O(runs + order-18 blocks)): free blocks aligned and inside the host, no
   * frame both free and allocated or free twice, buddies of free blocks never both free at the
   * same order (they would have merged), each order's remembered lowest block its list's head,
   * allocated runs aligned to their order, and the counters (free frames, free blocks per order,
   * frames per purpose) adding up. Throws ModelInvariantError('host.buddy-*').
   */
  checkInvariants(): void {
    const fail = (name: string, detail: string): never => {
      throw new ModelInvariantError(`host.buddy-${name}`, detail);
    };
    const pieces: Array<{ start: number; end: number; what: string }> = [];
    let freeTotal = 0;
    for (let o = 0; o <= MAX_ORDER; o++) {
      const size = SIZE[o]!;
      let blocks = 0;
      let head = -1;
      this.freeLists[o]!.checkInvariants();
      const lone = this.lone[o]!;
      if (lone >= 0 && this.freeLists[o]!.runCount !== 0) fail('free-list', `order ${o} keeps lone block ${lone} beside ${this.freeLists[o]!.runCount} runs`);
      let runs = 0;
      for (const r of this.freeRunsOf(o)) {
        runs++;
        if (head < 0) head = r.start;
        if (r.value !== 1) fail('free-list', `free run [${r.start}, ${r.end}) of order ${o} holds ${r.value}`);
        if (r.start % size !== 0 || (r.end - r.start) % size !== 0) {
          fail('alignment', `free run [${r.start}, ${r.end}) of order ${o} is not made of aligned blocks`);
        }
        if (r.end > this.nrFrames) fail('range', `free run [${r.start}, ${r.end}) is past the host's ${this.nrFrames} frames`);
        if (o < MAX_ORDER) {
          for (let b = r.start; b < r.end; b += size) {
            const buddy = buddyOf(b, o);
            if (buddy + size <= this.nrFrames && this.isFreeIn(o, buddy)) {
              fail('coalesced', `free blocks ${b} and ${buddy} of order ${o} are buddies and were not merged`);
            }
          }
        }
        blocks += (r.end - r.start) / size;
        freeTotal += r.end - r.start;
        pieces.push({ start: r.start, end: r.end, what: `free order ${o}` });
      }
      if (blocks !== this.freeBlocks[o]) fail('free-count', `order ${o}: ${blocks} free blocks, counter says ${this.freeBlocks[o]}`);
      const stored = this.freeLists[o]!.runCount + (lone >= 0 ? 1 : 0);
      if (runs !== stored) fail('free-list', `order ${o}: ${stored} runs stored, ${runs} of them inside the host`);
      if (head !== this.lowest[o]) fail('free-head', `order ${o}: lowest free block is ${head}, the allocator remembers ${this.lowest[o]}`);
    }
    if (freeTotal !== this.freeCount) fail('free-count', `${freeTotal} frames free, counter says ${this.freeCount}`);
    this.allocated.checkInvariants();
    const byPurpose = new Map<string, number>();
    let usedTotal = 0;
    let runs = 0;
    for (const r of this.allocatedRuns()) {
      runs++;
      const size = SIZE[r.value.order]!;
      if (r.start % size !== 0 || (r.end - r.start) % size !== 0) {
        fail('alignment', `allocated run [${r.start}, ${r.end}) is not made of aligned blocks of order ${r.value.order}`);
      }
      if (r.end > this.nrFrames) fail('range', `allocated run [${r.start}, ${r.end}) is past the host`);
      usedTotal += r.end - r.start;
      byPurpose.set(r.value.purpose, (byPurpose.get(r.value.purpose) ?? 0) + (r.end - r.start));
      pieces.push({ start: r.start, end: r.end, what: `allocated ${r.value.purpose}` });
    }
    if (runs !== this.allocated.runCount) fail('accounting', `${this.allocated.runCount} allocated runs stored, ${runs} of them inside the host`);
    pieces.sort((a, b) => a.start - b.start);
    for (let i = 1; i < pieces.length; i++) {
      const a = pieces[i - 1]!;
      const b = pieces[i]!;
      if (a.end > b.start) fail('pfn-free-and-used', `[${a.start}, ${a.end}) (${a.what}) overlaps [${b.start}, ${b.end}) (${b.what})`);
    }
    if (usedTotal + freeTotal !== this.nrFrames) {
      fail('accounting', `${freeTotal} free + ${usedTotal} used != ${this.nrFrames} frames`);
    }
    if (this.peakUsed < usedTotal) fail('accounting', `peak of ${this.peakUsed} used frames is below the ${usedTotal} in use`);
    for (let id = 0; id < this.usedById.length; id++) {
      const k = this.purposeNames[id]!;
      const v = this.usedById[id]!;
      if (v < 0) fail('accounting', `purpose ${k} counts ${v} frames`);
      if ((byPurpose.get(k) ?? 0) !== v) fail('accounting', `purpose ${k}: ${byPurpose.get(k) ?? 0} frames allocated, counter says ${v}`);
    }
    for (const [k, v] of byPurpose) {
      if (this.usedBy(k) !== v) fail('accounting', `purpose ${k}: ${v} frames allocated, counter says ${this.usedBy(k)}`);
    }
  }

  // ---- internals ----

  /** Whether `x` lies in a free block of `order` (the map's `has`, lone block included). */
  private isFreeIn(order: number, x: number): boolean {
    const l = this.lone[order]!;
    // Number.isInteger: a malformed frame must still reach the map's EINVAL below.
    if (l >= 0 && x >= l && x < l + SIZE[order]! && Number.isInteger(x)) return true;
    return this.freeLists[order]!.has(x);
  }

  /** The free runs of `order`, lone block included, as the map would hold them. */
  private *freeRunsOf(order: number): IterableIterator<{ start: number; end: number; value: number }> {
    const l = this.lone[order]!;
    if (l >= 0) yield { start: l, end: l + SIZE[order]!, value: 1 };
    else yield* this.freeLists[order]!.runs();
  }

  /** Removes the free block `block` of `order`, keeping the order's lowest-block hint exact. */
  private takeFree(block: number, order: number): void {
    const size = SIZE[order]!;
    if (this.lone[order] === block) {
      // The order's only free block: its list is empty now.
      this.lone[order] = -1;
      this.freeBlocks[order] = 0;
      this.freeCount -= size;
      this.lowest[order] = -1;
      return;
    }
    const list = this.freeLists[order]!;
    const end = block + size;
    // Looked up before the change: the clear below finds `block` in the map's lookup memo.
    const runEnd = block === this.lowest[order] ? list.endOfRunAt(block) : -1;
    list.clear(block, end);
    const left = --this.freeBlocks[order]!;
    this.freeCount -= size;
    if (block === this.lowest[order]) {
      // The head moves to the next block of its run, else to the next run (the only search).
      this.lowest[order] = left === 0 ? -1 : runEnd > end ? end : firstRunStart(list, end);
    }
  }

  private putFree(block: number, order: number): void {
    const size = SIZE[order]!;
    if (this.freeBlocks[order] === 0) {
      this.lone[order] = block;
    } else {
      // A second block: both go to the map (the first one from `lone`, if it was there).
      const list = this.freeLists[order]!;
      const l = this.lone[order]!;
      if (l >= 0) {
        this.lone[order] = -1;
        list.set(l, l + size, 1);
      }
      list.set(block, block + size, 1);
    }
    this.freeBlocks[order]!++;
    this.freeCount += size;
    const low = this.lowest[order]!;
    if (low < 0 || block < low) this.lowest[order] = block;
  }

  private markAllocated(block: number, order: number, code: number): void {
    const size = SIZE[order]!;
    this.allocated.set(block, block + size, code);
    this.usedById[(code - order) / CODE_STRIDE]! += size;
    // Every allocation ends here with freeCount already final, so one compare keeps the mark exact.
    const used = this.nrFrames - this.freeCount;
    if (used > this.peakUsed) this.peakUsed = used;
  }

  /** The allocated map's value for a block of `order` and `purpose`, interning the purpose. */
  private codeOf(order: number, purpose: string): number {
    if (purpose === this.lastPurpose) return this.lastPurposeId * CODE_STRIDE + order;
    let id = this.purposeIds.get(purpose);
    if (id === undefined) {
      id = this.purposeNames.length;
      this.purposeNames.push(purpose);
      this.purposeIds.set(purpose, id);
      this.usedById.push(0);
    }
    this.lastPurpose = purpose;
    this.lastPurposeId = id;
    return id * CODE_STRIDE + order;
  }

  /** The shared `{order, purpose}` of `code`. */
  private infoOf(code: number): AllocatedBlockInfo {
    let info = this.infos[code];
    if (info === undefined) {
      const order = code % CODE_STRIDE;
      info = Object.freeze({ order, purpose: this.purposeNames[(code - order) / CODE_STRIDE]! });
      this.infos[code] = info;
    }
    return info;
  }

  private checkBlockShape(pfn: number, order: number, op: string): void {
    if (!Number.isSafeInteger(pfn) || pfn < 0) throw new KvmError('EINVAL', op, `pfn ${pfn} is not a non-negative integer`);
    const size = SIZE[order]!;
    if (pfn % size !== 0) throw new KvmError('EINVAL', op, `pfn ${pfn} is not aligned to order ${order}`);
    if (pfn + size > this.nrFrames) {
      throw new KvmError('EINVAL', op, `block [${pfn}, ${pfn + size}) is past the host's ${this.nrFrames} frames`);
    }
  }

  /** {@link BuddyAllocator.checkAllocatedBlock}'s check, answering the block's code. */
  private checkAllocatedCode(pfn: number, order: number, op: string): number {
    checkOrder(order, op);
    this.checkBlockShape(pfn, order, op);
    const code = this.allocated.get(pfn);
    if (code === undefined) {
      throw new ModelInvariantError('host.free-not-allocated', `${op}(${pfn}, ${order}): pfn ${pfn} is not allocated`);
    }
    if (code % CODE_STRIDE !== order) {
      throw new ModelInvariantError(
        'host.free-wrong-order',
        `${op}(${pfn}, ${order}): pfn ${pfn} is in a block of order ${code % CODE_STRIDE}`,
      );
    }
    return code;
  }

  /**
   * The allocation info of the block at `pfn`, which must be allocated with exactly `order`:
   * EINVAL for a malformed pfn/order, ModelInvariantError when no such block is allocated.
   */
  checkAllocatedBlock(pfn: number, order: number, op: string): AllocatedBlockInfo {
    return this.infoOf(this.checkAllocatedCode(pfn, order, op));
  }
}

/** The start of the first run of `list` at or after `from`, -1 when there is none. */
function firstRunStart(list: NumberRangeMap, from: number): number {
  for (const r of list.runs(from)) return r.start;
  return -1;
}

function alignDownTo(frame: number, size: number): number {
  return frame - (frame % size);
}

function checkOrder(order: number, op: string): void {
  if (!Number.isInteger(order) || order < 0 || order > MAX_ORDER) {
    throw new KvmError('EINVAL', op, `order ${order} is not an integer in [0, ${MAX_ORDER}]`);
  }
}
