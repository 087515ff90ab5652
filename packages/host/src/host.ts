/**
 * The host kernel's memory: physical frames (the buddy allocator), page contents, per-pfn
 * reference counts and long-term pins, the direct map, and the processes whose address spaces map
 * those frames. `Host` implements the sdk's `HostMemoryView`, which is what arch plugins see.
 *
 * References. An allocated block carries one reference per page, the *allocation reference*
 * (alloc_pages returns a page with refcount 1); `getPages`/`putPages` add and drop extra ones
 * (a mapping in a process page table, GUP, a guest_memfd lookup), `pinPages` adds a long-term pin
 * that also raises the refcount (FOLL_PIN|FOLL_LONGTERM; the kernel biases the refcount by
 * GUP_PIN_COUNTING_BIAS, the model by 1 and keeps the pin count apart). `freePages` drops the
 * allocation reference: with no extra references the block goes back to the buddy allocator at
 * once, otherwise it is freed when the last extra reference is put (put_page → free), so a page a
 * process has pinned survives its munmap or truncation as it does in Linux.
 *
 * Only exceptions are stored: extra references, pins and pending frees are RangeMaps over the
 * pages that have them, so the model's memory follows what is in use, never the host's size.
 */
import {
  KvmError,
  ModelInvariantError,
  RangeMap,
  checkFrameRange,
  bytesToFrames,
  pfn as toPfn,
} from '@cocokit/sdk';
import type { HostMemoryView, PageContents, Pfn, Sim } from '@cocokit/sdk';
import { BuddyAllocator } from './buddy.js';
import type { BuddyStats, PagePurpose } from './buddy.js';
import { PageContentsStore } from './contents.js';
import type { ContentsFootprint } from './contents.js';
import { registerHostCosts } from './costs.js';
import type { HostCostName } from './costs.js';
import { DirectMap } from './direct-map.js';
import type { DirectMapHandle, DirectMapStats } from './direct-map.js';
import type { HostFault } from '@cocokit/sdk';
import type { HostAccessCheck } from './fault.js';
import type { FileProvider } from './file.js';
import { HostProcess } from './process.js';
import type { ProcessKernel, Vma } from './process.js';

/** Default host size: 64 GiB of frames (no real memory behind them). */
export const DEFAULT_HOST_BYTES = 64 * 2 ** 30;

/** Options of {@link createHost}. */
export interface CreateHostOptions {
  /** Host size in 4 KiB frames. Give this or `bytes`, not both. */
  readonly frames?: number;
  /** Host size in bytes (page-aligned). Default {@link DEFAULT_HOST_BYTES}. */
  readonly bytes?: number | bigint;
  /** The simulation the host charges its costs to and traces into; without one, nothing is charged. */
  readonly sim?: Sim;
}

/** Options of an allocation. */
export interface AllocOptions {
  /** Zero the pages (__GFP_ZERO), charging `host.page_zero` per page. */
  readonly zero?: boolean;
}

/** A snapshot of the host's memory accounting. */
export interface HostStats extends BuddyStats {
  /** Frames whose allocation reference was dropped but that other references keep in use. */
  readonly pendingFreeFrames: number;
  /** The contents store's footprint. */
  readonly contents: ContentsFootprint;
  /** The direct map's history and state. */
  readonly directMap: DirectMapStats;
  /** Runs stored by every structure of the host: its memory, to compare against its size. */
  readonly modelRuns: number;
}

interface PendingBlock {
  readonly start: number;
  readonly order: number;
  readonly purpose: PagePurpose;
}

/**
 * Creates a host with `frames` (or `bytes`) of physical memory, all free, default 64 GiB. Nothing
 * proportional to the size is allocated.
 *
 * @example
 * const host = createHost({ bytes: 2 ** 40, sim });          // 1 TiB, costs charged to sim
 * const p = host.allocPages(9, 'guest_memfd', { zero: true });
 * host.removeFromDirectMap(p, p + 512);
 */
export function createHost(options: CreateHostOptions = {}): Host {
  if (options.frames !== undefined && options.bytes !== undefined) {
    throw new KvmError('EINVAL', 'createHost', 'give frames or bytes, not both');
  }
  const frames =
    options.frames !== undefined ? options.frames : bytesToFrames(options.bytes ?? DEFAULT_HOST_BYTES, 'createHost', 'bytes');
  return new Host(frames, options.sim);
}

/**
 * The host kernel's memory. Create it with {@link createHost}.
 */
export class Host implements HostMemoryView {
  /** Frames of host physical memory. */
  readonly nrFrames: number;
  /** The Sim costs are charged to, if any. */
  readonly sim: Sim | undefined;
  /** The buddy allocator (read its accounting; allocate through the host so references are kept). */
  readonly buddy: BuddyAllocator;
  private readonly store = new PageContentsStore();
  private readonly dm: DirectMap;
  /** Extra references per page (beyond the allocation reference). */
  private readonly refs = new RangeMap<number>();
  /** Long-term pins per page. */
  private readonly pins = new RangeMap<number>();
  /** Blocks whose allocation reference is gone, kept by extra references. */
  private readonly pending = new RangeMap<PendingBlock>();
  private pendingFrames = 0;
  private readonly procs = new Map<number, HostProcess>();
  private nextPid = 1;
  /** Reverse map: which VMAs map each file (sized by mappings, not by files). */
  private readonly rmap = new Map<FileProvider, Set<Vma>>();
  /** Nesting of address-space operations in progress (`ProcessKernel.mmOp`). */
  private mmDepth = 0;
  /** Files whose last VMA went during the current address-space operation. */
  private readonly unmappedFiles = new Set<FileProvider>();
  private readonly accessChecks: HostAccessCheck[] = [];
  private readonly kernel: ProcessKernel;

  /** Use {@link createHost}. */
  constructor(nrFrames: number, sim?: Sim) {
    this.buddy = new BuddyAllocator(nrFrames);
    this.nrFrames = nrFrames;
    this.sim = sim;
    if (sim !== undefined) registerHostCosts(sim);
    this.dm = new DirectMap({
      charge: (name, units) => this.charge(name, units),
      now: () => (this.sim === undefined ? 0 : this.sim.now),
      trace: (op, start, end, pages) => {
        if (this.sim?.trace.enabled) this.sim.trace.emit('host.direct_map', { op, start, end, pages });
      },
    });
    this.kernel = {
      host: this,
      charge: (name, units) => this.charge(name, units),
      rmapAdd: (vma) => {
        if (vma.file === undefined) return;
        let set = this.rmap.get(vma.file);
        if (set === undefined) this.rmap.set(vma.file, (set = new Set()));
        set.add(vma);
      },
      rmapRemove: (vma) => {
        if (vma.file === undefined) return;
        const set = this.rmap.get(vma.file);
        set?.delete(vma);
        if (set?.size === 0) {
          this.rmap.delete(vma.file);
          if (vma.file.release !== undefined) {
            this.unmappedFiles.add(vma.file);
            if (this.mmDepth === 0) this.mmOp(() => undefined);
          }
        }
      },
      mmOp: (f) => this.mmOp(f),
      checkAccess: (p, write) => this.checkHostAccess(p, write),
      exited: (pid) => void this.procs.delete(pid),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Physical pages

  /**
   * Allocates a block of 2^order pages for `purpose` (alloc_pages): lowest address of the smallest
   * order that has a free block. ENOMEM when none can be formed (nothing changes). Contents are
   * whatever the pages last held unless `zero` is set.
   */
  allocPages(order: number, purpose: PagePurpose, options?: AllocOptions): Pfn {
    const p = this.buddy.alloc(order, purpose);
    this.afterAlloc(p, order, purpose, options);
    return p;
  }

  /**
   * Allocates the specific block `[pfn, pfn + 2^order)` (alloc_contig_range). EBUSY when any page
   * of it is in use, EINVAL when unaligned or outside the host; nothing changes then.
   */
  allocPagesAt(pfn: number, order: number, purpose: PagePurpose, options?: AllocOptions): Pfn {
    const p = this.buddy.allocAt(pfn, order, purpose);
    this.afterAlloc(p, order, purpose, options);
    return p;
  }

  /**
   * Drops the allocation reference of the block at `pfn` (__free_pages). Returns `'freed'` when the
   * block went back to the buddy allocator, `'deferred'` when extra references keep it in use
   * until they are put. The block must be allocated with exactly `order`, not already freed, and
   * fully in the direct map with no temporary restoration outstanding (guest_memfd restores the
   * direct map before freeing a folio; the page allocator assumes it): anything else is a
   * ModelInvariantError.
   */
  freePages(pfn: number, order: number): 'freed' | 'deferred' {
    const block = this.buddy.checkAllocatedBlock(pfn, order, '__free_pages');
    const end = pfn + 2 ** order;
    if (this.pending.has(pfn)) {
      throw new ModelInvariantError('host.double-free', `block at pfn ${pfn} (order ${order}) was already freed`);
    }
    if (!this.dm.isPristine(pfn, end)) {
      throw new ModelInvariantError(
        'host.free-not-direct-mapped',
        `block [${pfn}, ${end}) is freed while removed from (or temporarily restored to) the direct map`,
      );
    }
    const deferred = !this.refs.isUniform(pfn, end, undefined);
    if (deferred) {
      this.pending.set(pfn, end, { start: pfn, order, purpose: block.purpose });
      this.pendingFrames += end - pfn;
    } else {
      this.buddy.free(pfn, order);
      this.charge('host.page_free', 1);
    }
    if (this.sim?.trace.enabled) this.sim.trace.emit('host.free', { pfn, order, purpose: block.purpose, deferred });
    return deferred ? 'deferred' : 'freed';
  }

  /**
   * Splits the allocated block at `pfn` of `order` into blocks of `newOrder` that stay allocated
   * (split_folio: guest_memfd's huge-folio split). EINVAL unless `newOrder < order`.
   */
  splitFolio(pfn: number, order: number, newOrder: number): void {
    this.checkNotPending(pfn, 'split_folio');
    this.buddy.splitAllocated(pfn, order, newOrder);
  }

  /**
   * Merges the allocated blocks tiling `[pfn, pfn + 2^newOrder)` into one block of `newOrder`
   * (the reverse of {@link Host.splitFolio}). EINVAL unless every page is allocated, with one
   * purpose, in smaller blocks, none of them freed already.
   */
  mergeFolio(pfn: number, newOrder: number): void {
    if (this.buddy.isRangeAllocated(pfn, pfn + 2 ** newOrder) && !this.pending.isUniform(pfn, pfn + 2 ** newOrder, undefined)) {
      throw new KvmError('EINVAL', 'merge_folio', `part of [${pfn}, ${pfn + 2 ** newOrder}) was freed and is only kept by references`);
    }
    this.buddy.mergeAllocated(pfn, newOrder);
  }

  /** Whether `pfn` is in use (allocated, including blocks kept by references after their free). */
  isInUse(pfn: number): boolean {
    return this.buddy.isAllocated(pfn);
  }

  // ---------------------------------------------------------------------------------------------
  // References and pins

  /** The page's reference count: 1 for its allocation (until freed) plus extra references; 0 when free. */
  refcount(pfn: Pfn | number): number {
    if (!this.buddy.isAllocated(pfn)) return 0;
    return (this.pending.has(pfn) ? 0 : 1) + (this.refs.get(pfn) ?? 0);
  }

  /** Long-term pins on the page (FOLL_LONGTERM). */
  pinCount(pfn: Pfn | number): number {
    return this.pins.get(pfn) ?? 0;
  }

  /**
   * Takes one extra reference on each page of `[pfn, pfn + npages)` (folio_get). Every page must
   * be in use: taking a reference on a free page is a ModelInvariantError (get_page's VM_BUG_ON).
   */
  getPages(pfn: number, npages = 1): void {
    this.checkInUse(pfn, npages, 'get_page');
    this.refs.update(pfn, pfn + npages, (v) => (v ?? 0) + 1);
  }

  /**
   * Drops one extra reference from each page of `[pfn, pfn + npages)` (put_page). Dropping below
   * the allocation reference is a ModelInvariantError (the allocation reference is dropped by
   * {@link Host.freePages}). A freed block whose last extra reference goes returns to the buddy
   * allocator here.
   */
  putPages(pfn: number, npages = 1): void {
    const end = pfn + npages;
    if (this.refs.count(pfn, end, (v) => v >= 1) !== npages) {
      throw new ModelInvariantError('host.refcount-underflow', `put_page on [${pfn}, ${end}): some page holds no extra reference`);
    }
    this.refs.update(pfn, end, (v) => (v === 1 ? undefined : (v as number) - 1));
    this.releasePending(pfn, end);
  }

  /** Pins each page of `[pfn, pfn + npages)` long-term: pin count +1 and refcount +1. */
  pinPages(pfn: number, npages = 1): void {
    this.checkInUse(pfn, npages, 'pin_user_pages');
    this.refs.update(pfn, pfn + npages, (v) => (v ?? 0) + 1);
    this.pins.update(pfn, pfn + npages, (v) => (v ?? 0) + 1);
  }

  /** Drops a long-term pin from each page (unpin_user_pages); unpinning an unpinned page is a ModelInvariantError. */
  unpinPages(pfn: number, npages = 1): void {
    const end = pfn + npages;
    if (this.pins.count(pfn, end, (v) => v >= 1) !== npages) {
      throw new ModelInvariantError('host.pin-underflow', `unpin_user_page on [${pfn}, ${end}): some page is not pinned`);
    }
    this.pins.update(pfn, end, (v) => (v === 1 ? undefined : (v as number) - 1));
    this.putPages(pfn, npages);
  }

  /**
   * The first page of `[start, end)` that someone other than its owner holds (an extra reference
   * or a pin), or `undefined`. guest_memfd's conversion to private uses this for its refcount
   * check (EAGAIN with the offending offset). O(log n + runs).
   */
  firstElevated(start: number, end: number): Pfn | undefined {
    const f = this.refs.firstWith(start, end);
    return f === undefined ? undefined : toPfn(f);
  }

  // ---------------------------------------------------------------------------------------------
  // Contents (HostMemoryView)

  /** The contents of `pfn` (a snapshot; byte arrays are copies). */
  contents(pfn: Pfn | number): PageContents {
    return this.store.contents(pfn);
  }

  /** The tag of `pfn`, or `undefined` when it holds zeros or bytes. */
  tagAt(pfn: Pfn | number): bigint | undefined {
    return this.store.tagAt(pfn);
  }

  /** `length` bytes of `pfn` from `offset` (tags materialised). */
  readBytes(pfn: Pfn | number, offset?: number, length?: number): Uint8Array {
    this.checkFrame(pfn, 'readBytes');
    return this.store.readBytes(pfn, offset, length);
  }

  /** Writes `data` into `pfn` at `offset`. Writing a free page is a ModelInvariantError (use after free). */
  writeBytes(pfn: Pfn | number, offset: number, data: Uint8Array): void {
    this.checkInUse(pfn, 1, 'writeBytes');
    this.store.writeBytes(pfn, offset, data);
  }

  /** Replaces the whole page's contents with the page derived from `tag`. */
  writeTag(pfn: Pfn | number, tag: bigint): void {
    this.checkInUse(pfn, 1, 'writeTag');
    this.store.writeTag(pfn, tag);
  }

  /** Tags `[start, end)` with `first, first + 1, ...` in O(log n + runs): a 1 TiB range is one run. */
  tagSequence(start: number, end: number, first: bigint): void {
    this.checkInUse(start, end - start, 'tagSequence');
    this.store.tagSequence(start, end, first);
  }

  /** Tags every page of `[start, end)` with `tag`, in O(log n + runs). */
  fillTag(start: number, end: number, tag: bigint): void {
    this.checkInUse(start, end - start, 'fillTag');
    this.store.fillTag(start, end, tag);
  }

  /** Zeroes `[pfn, pfn + npages)` (clear_highpage), charging `host.page_zero` per page. */
  zero(pfn: Pfn | number, npages = 1): void {
    this.checkInUse(pfn, npages, 'zero');
    this.store.zero(pfn, pfn + npages);
    this.charge('host.page_zero', npages);
  }

  /** Copies page `src` to page `dst` (copy_highpage), charging `host.page_copy`. */
  copyPage(dst: Pfn | number, src: Pfn | number): void {
    this.checkInUse(dst, 1, 'copyPage');
    this.checkFrame(src, 'copyPage');
    this.store.copyPage(dst, src);
    this.charge('host.page_copy', 1);
  }

  /** Whether `[start, end)` reads as zeros everywhere (never written, or zeroed). */
  isZero(start: number, end: number): boolean {
    return this.store.isZero(start, end);
  }

  // ---------------------------------------------------------------------------------------------
  // The direct map

  /** Whether the kernel's direct map currently maps the page. */
  isDirectMapped(pfn: Pfn | number): boolean {
    return this.dm.isMapped(pfn);
  }

  /**
   * Removes `[start, end)` from the direct map (set_direct_map_invalid_noflush + flush), as
   * guest_memfd does for a `NO_DIRECT_MAP` file's folios. The pages must be in use. Returns the
   * number of pages newly removed.
   */
  removeFromDirectMap(start: number, end: number): number {
    this.checkInUse(start, end - start, 'set_direct_map_invalid');
    return this.dm.remove(start, end);
  }

  /** Puts `[start, end)` back into the direct map (set_direct_map_default_noflush). Returns pages restored. */
  restoreDirectMap(start: number, end: number): number {
    this.checkRange(start, end, 'set_direct_map_default');
    return this.dm.restore(start, end);
  }

  /**
   * Temporarily restores `pfn` to the direct map for a kernel access, refcounted (seed 002's
   * "sharing refcount"); the handle's `unmap()` ends it. The page must be in use.
   */
  tempMap(pfn: Pfn | number): DirectMapHandle {
    this.checkInUse(pfn, 1, 'tempMap');
    return this.dm.tempMap(pfn);
  }

  /** Outstanding temporary restorations of `pfn`. */
  tempMapCount(pfn: Pfn | number): number {
    return this.dm.tempCount(pfn);
  }

  /**
   * Frames of `[start, end)` taken out of the direct map, temporarily restored ones included: lets
   * an owner check a whole folio run at once (guest_memfd's NO_DIRECT_MAP invariant).
   */
  directMapRemovedCount(start: number, end: number): number {
    checkFrameRange(start, end, 'directMapRemovedCount');
    return this.dm.removedCount(start, end);
  }

  /** Direct-map statistics: removals, temporary remaps, bytes exposed, exposure time, shootdowns. */
  directMapStats(): DirectMapStats {
    return this.dm.stats();
  }

  // ---------------------------------------------------------------------------------------------
  // Processes and file mappings

  /** Creates a process with an empty address space. */
  createProcess(name: string): HostProcess {
    const pid = this.nextPid++;
    const p = new HostProcess(pid, name, this.kernel);
    this.procs.set(pid, p);
    return p;
  }

  /** The live process with `pid`, or `undefined`. */
  process(pid: number): HostProcess | undefined {
    return this.procs.get(pid);
  }

  /** Every live process, by pid. */
  processes(): HostProcess[] {
    return [...this.procs.values()];
  }

  /**
   * Zaps the user mappings of file pages `[startIndex, endIndex)` in every process that maps them
   * (unmap_mapping_range): the next access faults and asks the file again. guest_memfd calls this
   * on conversion to private and on punch-hole. Copy-on-write copies in private mappings are kept
   * (they are anonymous pages, no longer the file's). Returns the number of pages unmapped.
   * O(mappings of the file + runs zapped).
   */
  unmapFileRange(file: FileProvider, startIndex: number, endIndex: number): number {
    this.checkRange(startIndex, endIndex, 'unmap_mapping_range');
    const set = this.rmap.get(file);
    let pages = 0;
    if (set !== undefined && startIndex < endIndex) {
      for (const vma of [...set]) pages += vma.process.zapFileIndexRange(vma, startIndex, endIndex);
    }
    if (this.sim?.trace.enabled) this.sim.trace.emit('host.zap_file', { file: file.name, start: startIndex, end: endIndex, pages });
    return pages;
  }

  /** How many VMAs map `file` right now (the reverse map's size for it). */
  mappingsOf(file: FileProvider): number {
    return this.rmap.get(file)?.size ?? 0;
  }

  // ---------------------------------------------------------------------------------------------
  // The arch host-access hook

  /**
   * Installs a check asked before every user access touches a page (the VM layer installs one per
   * VM from its arch plugin's `hostAccess`). Checks run in installation order; the first refusal
   * wins. Returns a function that removes the check.
   */
  addHostAccessCheck(check: HostAccessCheck): () => void {
    this.accessChecks.push(check);
    return () => {
      const i = this.accessChecks.indexOf(check);
      if (i >= 0) this.accessChecks.splice(i, 1);
    };
  }

  /** What the installed checks answer for an access to `pfn`. */
  checkHostAccess(pfn: Pfn, write: boolean): 'ok' | HostFault {
    for (const c of this.accessChecks) {
      const r = c(pfn, write);
      if (r !== 'ok') return r;
    }
    return 'ok';
  }

  // ---------------------------------------------------------------------------------------------
  // Accounting and invariants

  /** A snapshot of the accounting. */
  stats(): HostStats {
    const c = this.store.footprint();
    let runs = this.buddy.runCount + this.refs.runCount + this.pins.runCount + this.pending.runCount + this.dm.runCount;
    runs += c.bytePages + c.tagRuns;
    for (const p of this.procs.values()) runs += p.runCount;
    return {
      ...this.buddy.stats(),
      pendingFreeFrames: this.pendingFrames,
      contents: c,
      directMap: this.dm.stats(),
      modelRuns: runs,
    };
  }

  /**
   * Checks every invariant of the host (see {@link checkInvariants}); throws ModelInvariantError.
   */
  checkInvariants(): void {
    const fail = (name: string, detail: string): never => {
      throw new ModelInvariantError(`host.${name}`, detail);
    };
    this.buddy.checkInvariants();
    this.store.checkInvariants();
    this.dm.checkInvariants();
    this.refs.checkInvariants();
    this.pins.checkInvariants();
    this.pending.checkInvariants();
    for (const r of this.refs.runs()) {
      if (!(r.value > 0)) fail('refcount-negative', `pfns [${r.start}, ${r.end}) hold ${r.value} extra references`);
      if (!this.buddy.isRangeAllocated(r.start, r.end)) fail('ref-on-free-page', `pfns [${r.start}, ${r.end}) are referenced but free`);
    }
    for (const r of this.pins.runs()) {
      if (!(r.value > 0)) fail('pin-negative', `pfns [${r.start}, ${r.end}) hold ${r.value} pins`);
      if (this.refs.count(r.start, r.end, (v) => v >= r.value) !== r.end - r.start) {
        fail('pin-without-ref', `pfns [${r.start}, ${r.end}) are pinned ${r.value} times without as many references`);
      }
    }
    let pendingFrames = 0;
    for (const r of this.pending.runs()) {
      const b = r.value;
      const bEnd = b.start + 2 ** b.order;
      if (r.start !== b.start || r.end !== bEnd) fail('pending-free', `pending block ${b.start}/${b.order} is stored as [${r.start}, ${r.end})`);
      const blk = this.buddy.blockOf(b.start);
      if (blk === undefined || blk.pfn !== b.start || blk.order !== b.order) fail('pending-free', `pending block ${b.start}/${b.order} is not an allocated block`);
      if (this.refs.isUniform(b.start, bEnd, undefined)) fail('pending-free', `pending block ${b.start}/${b.order} has no reference left and was not freed`);
      pendingFrames += bEnd - b.start;
    }
    if (pendingFrames !== this.pendingFrames) fail('pending-free', `${pendingFrames} frames pending, counter says ${this.pendingFrames}`);
    for (const r of this.dm.removedRuns()) {
      if (!this.buddy.isRangeAllocated(r.start, r.end)) fail('direct-map-free-page', `free pfns in [${r.start}, ${r.end}) are out of the direct map`);
    }
    for (const r of this.dm.tempRuns()) {
      if (!this.buddy.isRangeAllocated(r.start, r.end)) fail('direct-map-free-page', `free pfns in [${r.start}, ${r.end}) are temporarily mapped`);
    }
    for (const p of this.procs.values()) {
      p.checkInvariants();
      for (const m of p.mappedRuns()) {
        if (!this.buddy.isRangeAllocated(m.pfn, m.pfn + m.npages)) {
          fail('pte-to-free-page', `process ${p.pid} maps free pfns in [${m.pfn}, ${m.pfn + m.npages})`);
        }
        if (!m.anon && this.refs.count(m.pfn, m.pfn + m.npages, (v) => v >= 1) !== m.npages) {
          fail('pte-without-ref', `process ${p.pid} maps file pfns [${m.pfn}, ${m.pfn + m.npages}) without holding references`);
        }
        if (m.anon && this.buddy.blockOf(m.pfn)?.purpose !== 'anon') {
          fail('anon-purpose', `process ${p.pid} maps anonymous pfn ${m.pfn} that is not accounted as anon`);
        }
      }
    }
    for (const [file, set] of this.rmap) {
      for (const vma of set) {
        if (vma.file !== file || !vma.process.hasVma(vma)) fail('rmap', `reverse map of ${file.name} holds a stale vma`);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // internals

  private charge(name: HostCostName, units: number): void {
    if (this.sim !== undefined && units > 0) this.sim.charge(name, units);
  }

  /** `options` may be absent (no `= {}` default: that would build an object per allocation). */
  private afterAlloc(p: Pfn, order: number, purpose: PagePurpose, options: AllocOptions | undefined): void {
    this.charge('host.page_alloc', 1);
    if (options?.zero === true) {
      this.store.zero(p, p + 2 ** order);
      this.charge('host.page_zero', 2 ** order);
    }
    if (this.sim?.trace.enabled) this.sim.trace.emit('host.alloc', { pfn: p, order, purpose });
  }

  /**
   * Runs one address-space operation; when the outermost one ends, every file whose last VMA went
   * during it and that no VMA maps again gets its `release` hook (the fput of the last vm_file).
   */
  private mmOp<T>(f: () => T): T {
    this.mmDepth++;
    try {
      return f();
    } finally {
      if (--this.mmDepth === 0 && this.unmappedFiles.size > 0) {
        const files = [...this.unmappedFiles];
        this.unmappedFiles.clear();
        for (const file of files) if (!this.rmap.has(file)) file.release?.();
      }
    }
  }

  private releasePending(start: number, end: number): void {
    if (this.pending.isUniform(start, end, undefined)) return;
    const blocks: PendingBlock[] = [];
    for (const r of this.pending.runs(start, end)) blocks.push(r.value);
    for (const b of blocks) {
      const bEnd = b.start + 2 ** b.order;
      if (this.refs.isUniform(b.start, bEnd, undefined)) {
        this.pending.clear(b.start, bEnd);
        this.pendingFrames -= bEnd - b.start;
        this.pins.clear(b.start, bEnd);
        this.buddy.free(b.start, b.order);
        this.charge('host.page_free', 1);
      }
    }
  }

  private checkNotPending(pfn: number, op: string): void {
    if (this.pending.has(pfn)) throw new KvmError('EINVAL', op, `pfn ${pfn} was freed and is only kept by references`);
  }

  private checkFrame(pfn: number, op: string): void {
    if (!Number.isSafeInteger(pfn) || pfn < 0 || pfn >= this.nrFrames) {
      throw new KvmError('EINVAL', op, `pfn ${pfn} is outside the host's ${this.nrFrames} frames`);
    }
  }

  private checkRange(start: number, end: number, op: string): void {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new KvmError('EINVAL', op, `[${start}, ${end}) is not a range of frames`);
    }
  }

  private checkInUse(pfn: number, npages: number, op: string): void {
    if (!Number.isSafeInteger(npages) || npages < 0) throw new KvmError('EINVAL', op, `npages = ${npages} is not a count`);
    this.checkFrame(pfn, op);
    if (pfn + npages > this.nrFrames) throw new KvmError('EINVAL', op, `[${pfn}, ${pfn + npages}) is past the host's ${this.nrFrames} frames`);
    if (npages > 0 && !this.buddy.isRangeAllocated(pfn, pfn + npages)) {
      throw new ModelInvariantError('host.access-free-page', `${op} on [${pfn}, ${pfn + npages}): a page is free (use after free)`);
    }
  }
}

/**
 * Checks every invariant of `host` (O(runs) of every structure): no pfn both free and used, free
 * buddies merged, accounting adding up (free + used = total, per purpose, per order), refcounts
 * and pins positive and only on pages in use, pins backed by references, pending frees still
 * referenced, direct-map exceptions only on pages in use, page tables pointing at pages in use
 * (file pages with a reference held, anonymous pages accounted as anon), VMAs non-overlapping and
 * the reverse map current. Throws ModelInvariantError naming the invariant.
 */
export function checkInvariants(host: Host): void {
  host.checkInvariants();
}
