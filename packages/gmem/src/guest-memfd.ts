/**
 * One guest_memfd file (virt/kvm/guest_memfd.c): the page cache of folios, fallocate, host mmap
 * and faults, bindings to memslots, get_pfn, shareability with in-place conversion, huge-folio
 * split/merge, direct-map removal with temporary restoration, populate, and release.
 *
 * The model keeps the kernel's split between inode (pages, shareability) and file (one VM's view,
 * bindings) in one object: a guest_memfd inode has exactly one file in every kernel and proposal
 * modelled here.
 */
import {
  EnumRangeMap,
  KvmError,
  ModelInvariantError,
  NumberRangeMap,
  PAGE_SIZE,
  RangeMap,
  alignDown,
  alignUp,
  gfn as toGfn,
  pfn as toPfn,
  pgoff as toPgoff,
  toByteCount,
  uapi,
} from '@cocokit/sdk';
import type { Gfn, KvmGmemConvert, KvmMemoryAttributes2, PageSource, Pfn, PgOff, TraceEventMap, TraceFields } from '@cocokit/sdk';
import type { FileFaultAccess, FileFaultResult, FileMmapRequest, FileProvider, Host } from '@cocokit/host';
import { FOLIO_PREPARED, FOLIO_UPTODATE, encodeFolio, folioDelta, folioFlags, folioOrder, withFlags } from './folio-map.js';
import type { GmemInvalidateFilter, GmemInvalidateRange, GmemInvalidateReason, GmemSlotView } from './invalidation.js';
import type { GmemContext } from './context.js';

/** Who may fault a page: only the guest, or host userspace too (seed 003's SHAREABILITY_GUEST/ALL). */
export const SHAREABILITY = { GUEST: 'guest', ALL: 'all' } as const;
/** A page's shareability. */
export type Shareability = (typeof SHAREABILITY)[keyof typeof SHAREABILITY];

/**
 * Huge-folio policies of seed 003. `'split-eager'` is the 1G RFC v2's: a huge folio whose range
 * becomes mixed is split at once, straight to 4 KiB folios (a HugeTLB page is split to small
 * folios, never to an intermediate order), and merged back only when its whole range is uniform
 * again. `'split-on-fault'` is Michael Roth's lpage_info-like alternative: the folio stays whole,
 * the mixed range only lowers the mapping order, and a host fault splits it no further than its
 * uniform sub-blocks ("if 1G is mixed but 2M is all-shared, we can still leave the folio as 2M").
 */
export type HugeFolioPolicy = 'split-eager' | 'split-on-fault';

/** How {@link GuestMemfd} reshapes a mixed huge block: not at all, straight to 4 KiB, or to its uniform sub-blocks. */
type SplitTo = 'none' | 'base' | 'uniform';

/** What `kvm_gmem_get_pfn` answers. */
export interface GmemPfn {
  readonly pfn: Pfn;
  /** The largest order the gfn may be mapped at as far as guest_memfd is concerned (folio, binding alignment, mixed shareability). */
  readonly maxOrder: number;
  /** Whether the page had already been prepared before this call (6.18's folio_test_uptodate). */
  readonly prepared: boolean;
  /** Whether the page is private (SHAREABILITY_GUEST). */
  readonly isPrivate: boolean;
}

/** `fstat` of a guest_memfd. */
export interface GmemStat {
  readonly st_size: number;
  readonly st_blksize: number;
  readonly st_blocks: number;
  readonly isRegularFile: true;
  readonly st_ino: number;
}

/** Counters of one file. */
export interface GmemFileStats {
  readonly pages: number;
  readonly allocatedPages: number;
  readonly folioRuns: number;
  readonly shareabilityRuns: number;
  readonly splits: number;
  readonly merges: number;
  readonly conversions: number;
  readonly refusedConversions: number;
  readonly punchedPages: number;
  readonly hostFaults: number;
  readonly sigbus: number;
  /**
   * Pages KVM's own accesses (kernelRead/kernelWrite, pfn caches) really put back into the direct
   * map of a NO_DIRECT_MAP file: an access to a page already mapped (a pfn cache holds it) is not a
   * remap. The same count as the host's `DirectMapStats.tempRemaps` for this file's pages.
   */
  readonly remaps: number;
}

/** A long-term kernel user of a page (a gfn_to_pfn_cache): valid until the page is punched or converted. */
export interface GmemPfnCache {
  readonly index: PgOff;
  readonly pfn: Pfn;
  /** False once punched, converted or released, or after `release()`. */
  readonly valid: boolean;
  /** Drops the cache's sharing reference (restores the page's removal from the direct map). */
  release(): void;
}

/** `populate` arguments (kvm_gmem_populate). */
export interface GmemPopulateArgs {
  readonly slot: GmemSlotView;
  readonly gfn: Gfn | number;
  readonly npages: number;
  /** Per-page source contents, or null (PROPOSED-CONV-v8: data already in the page). */
  readonly src?: ReadonlyArray<PageSource | null> | null;
  /** The arch's page type (SNP 'normal', TDX 'measured', ...). */
  readonly kind?: string;
  /** The post_populate callback; default the arch's `populate` hook. */
  readonly callback?: (gfn: Gfn, pfn: Pfn, src: PageSource | null, kind: string) => void;
}

interface Binding {
  readonly slot: GmemSlotView;
  readonly pgoff: number;
  readonly npages: number;
}

interface CacheEntry {
  readonly index: number;
  readonly pfn: number;
  valid: boolean;
  unmap: (() => void) | undefined;
}

let nextIno = 1;

/** What `invalidateBegin` returns when no range is bound or nobody listens (never mutated). */
const NO_RANGES: readonly GmemInvalidateRange[] = [];

/** Bytes → page count from the ioctl surface, EINVAL when not page aligned. */
function pagesOf(bytes: number, op: string, what: string): number {
  if (bytes % PAGE_SIZE !== 0) throw new KvmError('EINVAL', op, `${what} = ${bytes} is not a multiple of ${PAGE_SIZE}`);
  return bytes / PAGE_SIZE;
}

/**
 * A guest_memfd file. Create it with `GmemVm.createGuestMemfd`. It is also the `FileProvider`
 * host processes mmap.
 */
export class GuestMemfd implements FileProvider {
  /** The fd it was created with (others may be made with `dup`). */
  readonly fd: number;
  readonly name: string;
  /** i_size in pages: fixed at creation. */
  readonly nrPages: number;
  readonly writable = true;
  /** Creation flags. */
  readonly flags: number;
  /** Folio order of the file: 0, or 9 / 18 with the HugeTLB proposal. */
  readonly hugeOrder: number;
  /** Whether folios leave the direct map (seed 002), once zeroed on first use. */
  readonly noDirectMap: boolean;
  /** Inode number (distinct per file, as the selftest checks). */
  readonly ino: number;

  private readonly ctx: GmemContext;
  private readonly host: Host;
  private readonly invalidateLockName: string;
  /** The page cache (folio-map.ts packs the values); typed arrays, as it holds a run per scattered folio. */
  private readonly folios = new NumberRangeMap();
  private readonly share = new EnumRangeMap<Shareability>([SHAREABILITY.GUEST, SHAREABILITY.ALL]);
  private readonly bindings = new RangeMap<Binding>();
  /**
   * The binding {@link GuestMemfd.getPfn} found last (a binding's run is exactly its
   * `[pgoff, pgoff + npages)`): faults come slot after slot, page after page, so this spares a tree
   * lookup per fault. Dropped whenever a binding changes.
   */
  private lastBinding: Binding | undefined;
  private readonly poisoned = new RangeMap<true>();
  /** lpage_info-like records: blocks of order 9 / 18 whose shareability is mixed. */
  private readonly mixed = new Map<number, RangeMap<true>>();
  private readonly caches = new Set<CacheEntry>();
  private allocated = 0;
  private released = false;
  private fdClosed = false;
  private counters = { splits: 0, merges: 0, conversions: 0, refused: 0, punched: 0, faults: 0, sigbus: 0, remaps: 0 };

  /** @internal Use `GmemVm.createGuestMemfd`. */
  constructor(ctx: GmemContext, fd: number, nrPages: number, flags: number, hugeOrder: number, initial: Shareability, noDirectMap: boolean) {
    this.ctx = ctx;
    this.host = ctx.host;
    this.fd = fd;
    this.ino = nextIno++;
    this.name = `guest_memfd:${this.ino}`;
    this.invalidateLockName = `${this.name}.invalidate_lock`;
    this.nrPages = nrPages;
    this.flags = flags;
    this.hugeOrder = hugeOrder;
    this.noDirectMap = noDirectMap;
    this.share.set(0, nrPages, initial);
    for (const o of [9, 18]) if (o <= hugeOrder) this.mixed.set(o, new RangeMap<true>());
  }

  // -------------------------------------------------------------------------------------------
  // State queries

  /** Whether the file is still alive (not released). */
  get alive(): boolean {
    return !this.released;
  }

  /** Whether `GUEST_MEMFD_FLAG_MMAP` was given. */
  get mmapSupported(): boolean {
    return (this.flags & uapi.GUEST_MEMFD_FLAG_MMAP) !== 0;
  }

  /** Pages in the page cache. */
  get allocatedPages(): number {
    return this.allocated;
  }

  /** The shareability of file page `index`. */
  shareability(index: number): Shareability {
    const s = this.share.get(index);
    if (s === undefined) throw new KvmError('EINVAL', 'shareability', `index ${index} is outside the file's ${this.nrPages} pages`);
    return s;
  }

  /** Runs of shareability over `[start, end)` (default the whole file). */
  shareabilityRuns(start = 0, end = this.nrPages): Array<{ start: number; end: number; value: Shareability }> {
    return [...this.share.runs(start, end)].map((r) => ({ start: r.start, end: r.end, value: r.value }));
  }

  /** The pfn and order of the folio holding `index`, or `undefined` for a hole. */
  folioAt(index: number): { pfn: Pfn; order: number; index: PgOff; uptodate: boolean; prepared: boolean } | undefined {
    const v = this.folios.get(index);
    if (v === undefined) return undefined;
    const order = folioOrder(v);
    const start = alignDown(index, order);
    const f = folioFlags(v);
    return { pfn: toPfn(start + folioDelta(v)), order, index: toPgoff(start), uptodate: (f & FOLIO_UPTODATE) !== 0, prepared: (f & FOLIO_PREPARED) !== 0 };
  }

  /** Folios of `[start, end)` as runs of one order: `{ start, end, pfn, order }` (pfn of `start`). */
  folioRuns(start = 0, end = this.nrPages): Array<{ start: number; end: number; pfn: Pfn; order: number }> {
    return [...this.folios.runs(start, end)].map((r) => ({ start: r.start, end: r.end, pfn: toPfn(r.start + folioDelta(r.value)), order: folioOrder(r.value) }));
  }

  /** Whether the huge block of `order` containing `index` has mixed shareability (lpage_info's KVM_LPAGE_MIXED_FLAG). */
  isMixed(index: number, order: number): boolean {
    const s = alignDown(index, order);
    return this.share.uniformValue(s, Math.min(s + 2 ** order, this.nrPages)) === undefined;
  }

  /** Blocks of `order` (9 or 18) recorded as mixed, as index ranges (kept when the file has folios of that order). */
  mixedRanges(order: number): Array<{ start: number; end: number }> {
    const m = this.mixed.get(order);
    return m === undefined ? [] : [...m.runs()].map((r) => ({ start: r.start, end: r.end }));
  }

  /**
   * The largest order `index` could be mapped at as far as the file is concerned: its folio's
   * order, lowered while the surrounding block is mixed. A hole answers the file's folio order
   * lowered the same way (what a fault would allocate).
   */
  maxMappingOrder(index: number): number {
    const v = this.folios.get(index);
    let order = v === undefined ? this.hugeOrder : folioOrder(v);
    while (order > 0 && this.isMixed(index, order)) order = order === 18 ? 9 : 0;
    return order;
  }

  /** Counters. */
  stats(): GmemFileStats {
    const c = this.counters;
    return {
      pages: this.nrPages,
      allocatedPages: this.allocated,
      folioRuns: this.folios.runCount,
      shareabilityRuns: this.share.runCount,
      splits: c.splits,
      merges: c.merges,
      conversions: c.conversions,
      refusedConversions: c.refused,
      punchedPages: c.punched,
      hostFaults: c.faults,
      sigbus: c.sigbus,
      remaps: c.remaps,
    };
  }

  /** Runs the model keeps for this file (its memory, to compare with its size). */
  get modelRuns(): number {
    let n = this.folios.runCount + this.share.runCount + this.bindings.runCount + this.poisoned.runCount;
    for (const m of this.mixed.values()) n += m.runCount;
    return n;
  }

  // -------------------------------------------------------------------------------------------
  // Syscalls other than fallocate and mmap

  /** read(2): guest_memfd has no read method → EINVAL. */
  read(): never {
    this.checkOpen('read');
    throw new KvmError('EINVAL', 'read', 'guest_memfd has no read method; mmap it (GUEST_MEMFD_FLAG_MMAP) instead');
  }

  /** write(2): EINVAL, as read. */
  write(): never {
    this.checkOpen('write');
    throw new KvmError('EINVAL', 'write', 'guest_memfd has no write method; mmap it (GUEST_MEMFD_FLAG_MMAP) instead');
  }

  /** pread(2): the file is not seekable → ESPIPE. */
  pread(): never {
    this.checkOpen('pread');
    throw new KvmError('ESPIPE', 'pread', 'guest_memfd is opened without FMODE_PREAD');
  }

  /** pwrite(2): ESPIPE. */
  pwrite(): never {
    this.checkOpen('pwrite');
    throw new KvmError('ESPIPE', 'pwrite', 'guest_memfd is opened without FMODE_PWRITE');
  }

  /** lseek(2): ESPIPE. */
  lseek(): never {
    this.checkOpen('lseek');
    throw new KvmError('ESPIPE', 'lseek', 'guest_memfd is not seekable');
  }

  /** ftruncate(2): the size is immutable (kvm_gmem_setattr) → EINVAL. */
  ftruncate(): never {
    this.checkOpen('ftruncate');
    throw new KvmError('EINVAL', 'ftruncate', 'the size of a guest_memfd is fixed at creation');
  }

  /** fstat(2). `st_blocks` stays 0 as probed on 6.18 (guest_memfd does not account blocks). */
  fstat(): GmemStat {
    this.checkOpen('fstat');
    return { st_size: this.nrPages * PAGE_SIZE, st_blksize: PAGE_SIZE, st_blocks: 0, isRegularFile: true, st_ino: this.ino };
  }

  /** close(2) of this file's creation fd (see `GmemVm.close` for any fd). */
  close(): void {
    this.ctx.closeFd(this.fd);
  }

  // -------------------------------------------------------------------------------------------
  // fallocate

  /**
   * fallocate(2) (kvm_gmem_fallocate, after the VFS checks). Modes: `KEEP_SIZE` allocates,
   * `KEEP_SIZE|PUNCH_HOLE` frees; anything else is EOPNOTSUPP. Allocation leaves present pages as
   * they are and is all-or-nothing here (ENOMEM frees what this call allocated).
   */
  fallocate(mode: number, offset: number | bigint, len: number | bigint): void {
    const op = 'fallocate';
    this.checkOpen(op);
    // vfs_fallocate: offset < 0 || len <= 0 → EINVAL comes before any mode check [PROBE].
    const off = toByteCount(offset, op, 'offset');
    const length = toByteCount(len, op, 'len');
    if (length <= 0) throw new KvmError('EINVAL', op, 'len must be positive');
    const { FALLOC_FL_KEEP_SIZE: KEEP, FALLOC_FL_PUNCH_HOLE: PUNCH } = uapi;
    if (!Number.isInteger(mode) || mode < 0) throw new KvmError('EINVAL', op, `mode ${mode} is not a bit mask`);
    if ((mode & PUNCH) !== 0 && (mode & KEEP) === 0) throw new KvmError('EOPNOTSUPP', op, 'PUNCH_HOLE requires KEEP_SIZE');
    if ((mode & KEEP) === 0) throw new KvmError('EOPNOTSUPP', op, 'guest_memfd cannot change its size: KEEP_SIZE is required');
    if ((mode & ~(KEEP | PUNCH)) !== 0) throw new KvmError('EOPNOTSUPP', op, `mode 0x${mode.toString(16)}: only KEEP_SIZE and PUNCH_HOLE are supported`);
    const start = pagesOf(off, op, 'offset');
    const n = pagesOf(length, op, 'len');
    if (this.hugeOrder > 0 && (start % 2 ** this.hugeOrder !== 0 || n % 2 ** this.hugeOrder !== 0)) {
      // PROPOSED-CONV-v2: HugeTLB-backed files allocate and truncate whole huge pages.
      throw new KvmError('EINVAL', op, `offset and len must be multiples of the file's ${2 ** this.hugeOrder * PAGE_SIZE}-byte folios`);
    }
    if ((mode & PUNCH) !== 0) {
      this.punchHole(start, Math.min(start + n, this.nrPages));
      return;
    }
    if (start + n > this.nrPages) throw new KvmError('EINVAL', op, `[${off}, +${length}) extends past i_size ${this.nrPages * PAGE_SIZE}`);
    this.allocateRange(start, start + n, 'fallocate');
  }

  // -------------------------------------------------------------------------------------------
  // Host mmap (FileProvider)

  /**
   * kvm_gmem_mmap. Refusals in the order a 6.18 kernel gives them [PROBE]: PROT_EXEC → EPERM (the
   * noexec pseudo-fs mount, checked in do_mmap), no `GUEST_MEMFD_FLAG_MMAP` → ENODEV, MAP_PRIVATE
   * → EINVAL (no copy-on-write of guest memory). Mapping past EOF is allowed; faults there SIGBUS.
   */
  mmap(req: FileMmapRequest): void {
    // mmap(2) takes an fd: a file whose fds are all closed cannot be mapped again.
    this.checkOpen('mmap');
    if ((req.prot & uapi.PROT_EXEC) !== 0) throw new KvmError('EPERM', 'mmap', 'guest_memfd lives on a noexec mount: PROT_EXEC is refused');
    if (!this.mmapSupported) throw new KvmError('ENODEV', 'mmap', `${this.name} was created without GUEST_MEMFD_FLAG_MMAP`);
    if (!req.shared) throw new KvmError('EINVAL', 'mmap', 'guest_memfd mappings must be MAP_SHARED (no copy-on-write)');
  }

  /**
   * kvm_gmem_fault_user_mapping: SIGBUS past EOF, on a private (GUEST) page, or on a poisoned
   * one; otherwise the folio (allocated on first use) zeroed once and mapped. With the
   * split-on-fault policy a huge folio whose range is mixed is split here.
   */
  fault(index: PgOff, _access: FileFaultAccess): FileFaultResult {
    this.counters.faults++;
    this.charge('gmem.filemap_lookup');
    if (index >= this.nrPages) return this.sigbus(`index ${index} is at or past i_size (${this.nrPages} pages)`);
    if (this.share.get(index) !== SHAREABILITY.ALL) return this.sigbus(`page ${index} is private to the guest`);
    if (this.poisoned.has(index)) return this.sigbus(`page ${index} is hwpoisoned`);
    if (!this.folios.has(index)) {
      const ok = this.tryAllocate(index, 'host_fault') !== undefined;
      if (!ok) return this.sigbus('VM_FAULT_OOM: no free folio');
    }
    let v = this.folios.get(index) as number;
    if (this.ctx.hugePolicy === 'split-on-fault' && folioOrder(v) > 0 && this.isMixed(index, folioOrder(v))) {
      this.fixBlock(alignDown(index, this.hugeOrder), this.hugeOrder, 'uniform', 'host_fault');
      v = this.folios.get(index) as number;
    }
    this.ensureUptodate(index, v);
    return { pfn: toPfn(index + folioDelta(v)) };
  }

  /** GUP on the file's pages: refused for NO_DIRECT_MAP files (seed 002, like secretmem). */
  gupAllowed(): boolean {
    return !this.noDirectMap;
  }

  // -------------------------------------------------------------------------------------------
  // Bindings (driven by the VM's binder) and get_pfn

  /** @internal Whether `[start, end)` overlaps a binding. */
  isBound(start: number, end: number): boolean {
    return !this.bindings.isUniform(start, end, undefined);
  }

  /** @internal Records `[pgoff, pgoff + npages)` → slot (kvm_gmem_bind). */
  bindRange(slot: GmemSlotView, pgoff: number, npages: number): void {
    this.lastBinding = undefined;
    this.bindings.set(pgoff, pgoff + npages, { slot, pgoff, npages });
    this.trace('gmem.bind', { file: this.name, start: pgoff, end: pgoff + npages, op: 'bind' });
  }

  /** @internal Removes the binding of `slot` (kvm_gmem_unbind); a no-op once released. */
  unbindRange(slot: GmemSlotView, pgoff: number, npages: number): void {
    if (this.released) return;
    const b = this.bindings.get(pgoff);
    if (b === undefined || b.slot !== slot) return;
    this.lastBinding = undefined;
    this.bindings.clear(pgoff, pgoff + npages);
    this.trace('gmem.bind', { file: this.name, start: pgoff, end: pgoff + npages, op: 'unbind' });
  }

  /** The binding holding `index` (the bindings map's `get`, through {@link GuestMemfd.lastBinding}). */
  private bindingAt(index: number): Binding | undefined {
    const c = this.lastBinding;
    // Number.isInteger: a malformed index still goes to the map, for its EINVAL.
    if (c !== undefined && index >= c.pgoff && index < c.pgoff + c.npages && Number.isInteger(index)) return c;
    const b = this.bindings.get(index);
    if (b !== undefined) this.lastBinding = b;
    return b;
  }

  /** The slots bound to the file, with their index ranges. */
  bindingList(): Array<{ slot: GmemSlotView; start: number; end: number }> {
    return [...this.bindings.runs()].map((r) => ({ slot: r.value.slot, start: r.start, end: r.end }));
  }

  /**
   * @internal kvm_gmem_get_pfn for a slot bound to this file (the VM resolves slot → file). EIO
   * when the gfn is outside the binding, EHWPOISON on a poisoned page, ENOMEM when no folio can be
   * allocated. Allocates and zeroes on first use; runs the arch prepare hook on private pages not
   * yet prepared (every time when preparation is not tracked, as post-6.18 kernels do).
   */
  getPfn(slot: GmemSlotView, gfnIn: Gfn | number, pgoff: number): GmemPfn {
    const op = 'kvm_gmem_get_pfn';
    this.charge('gmem.get_pfn');
    const g = gfnIn as number;
    if (!(g >= slot.baseGfn && g < slot.baseGfn + slot.npages)) throw new KvmError('EIO', op, `gfn 0x${g.toString(16)} is not in the slot`);
    const index = pgoff + (g - slot.baseGfn);
    const b = this.bindingAt(index);
    if (b === undefined || b.slot !== slot) throw new KvmError('EIO', op, `index ${index} is not bound to this slot`);
    if (this.poisoned.runCount !== 0 && this.poisoned.has(index)) throw new KvmError('EHWPOISON', op, `page ${index} is hwpoisoned`);
    const isPrivate = this.share.get(index) === SHAREABILITY.GUEST;
    const tracking = this.ctx.preparedTracking;
    let v = this.folios.get(index);
    let wasPrepared: boolean;
    // Whether the PREPARED flag went in with the folio's insertion (see below).
    let flagged = false;
    if (v === undefined) {
      // A fresh 4 KiB private folio with no arch prepare hook is prepared by its flag alone: insert
      // it with the flag, one page-cache write instead of an insert and then a rewrite; same state,
      // same trace. Huge folios keep the two steps (split-eager may split the folio at insertion,
      // and the flag belongs to the piece holding `index` only), as does any arch hook, which runs
      // before the flag is set.
      flagged = isPrivate && tracking && this.hugeOrder === 0 && this.ctx.arch?.gmemPrepare === undefined;
      const fresh = this.tryAllocate(index, 'get_pfn', flagged ? FOLIO_PREPARED : 0);
      if (fresh === undefined) throw new KvmError('ENOMEM', op, 'no free folio');
      v = fresh;
      wasPrepared = false;
    } else {
      v = this.ensureUptodate(index, v);
      wasPrepared = (folioFlags(v) & FOLIO_PREPARED) !== 0;
    }
    const order = folioOrder(v);
    if (isPrivate && (!wasPrepared || !tracking)) {
      // kvm_gmem_prepare_folio: the hook gets the folio's head pfn and gfn, aligned to the folio.
      // A huge folio left whole over a mixed range (split-on-fault) is prepared only as far as
      // the uniform, private sub-block holding `index`: its shared pages must not become the
      // guest's (an SNP RMP assignment of a page the host may still map).
      let po = order;
      while (po > 0 && this.isMixed(index, po)) po = po === 18 ? 9 : 0;
      const pStart = alignDown(index, po);
      const pPfn = pStart + folioDelta(v);
      const headGfn = g - (index - pStart);
      this.ctx.arch?.gmemPrepare?.(toPfn(pPfn), toGfn(headGfn), po as 0 | 9 | 18);
      if (this.tracing) this.trace('gmem.prepare', { file: this.name, index: pStart, pfn: pPfn, order: po });
      if (tracking && !flagged) this.setFlags(pStart, pStart + 2 ** po, FOLIO_PREPARED, 0);
    }
    // The mapping order: folio order, lowered while the block is mixed or the gfn↔index alignment
    // or the slot/binding does not cover the whole block.
    let maxOrder = order;
    while (maxOrder > 0) {
      const n = 2 ** maxOrder;
      const blockGfn = alignDown(g, maxOrder);
      const ok =
        (g - index) % n === 0 &&
        blockGfn >= slot.baseGfn &&
        blockGfn + n <= slot.baseGfn + slot.npages &&
        !this.isMixed(index, maxOrder);
      if (ok) break;
      maxOrder = maxOrder === 18 ? 9 : 0;
    }
    return { pfn: toPfn(index + folioDelta(v)), maxOrder, prepared: wasPrepared, isPrivate };
  }

  // -------------------------------------------------------------------------------------------
  // In-place conversion

  /**
   * PROPOSED-CONV-v8: `KVM_SET_MEMORY_ATTRIBUTES2` on the guest_memfd. ENOTTY unless the VM enables
   * the proposal. Validation in the proposal's order; EAGAIN with `error_offset` (also copied back
   * into `req`) when a folio is still referenced by the host on a conversion to private.
   */
  setMemoryAttributes2(req: KvmMemoryAttributes2): void {
    const { start, end, toPrivate } = this.attributes2Range(req);
    try {
      this.convert(start, end, toPrivate, 'memory_attributes2');
    } catch (e) {
      const off = (e as KvmError).data?.['error_offset'];
      if (off !== undefined) req.error_offset = off as number;
      throw e;
    }
  }

  /**
   * Validate-only `KVM_SET_MEMORY_ATTRIBUTES2`: every refusal {@link setMemoryAttributes2} makes
   * (the request's fields, then {@link checkConvert}), nothing changed and `req` left as it is.
   * Returns whether the request would change anything (`false`: the range already has the value).
   */
  checkMemoryAttributes2(req: KvmMemoryAttributes2): boolean {
    const { start, end, toPrivate } = this.attributes2Range(req);
    return this.checkConvert(start, end, toPrivate);
  }

  /** kvm_gmem_set_attributes' validation of the request, in the proposal's order; returns the pages and the direction. */
  private attributes2Range(req: KvmMemoryAttributes2): { start: number; end: number; toPrivate: boolean } {
    const op = 'KVM_SET_MEMORY_ATTRIBUTES2';
    this.checkOpen(op);
    if (!this.ctx.proposals.memoryAttributes2) throw new KvmError('ENOTTY', op, 'in-place conversion (gmem_in_place_conversion) is off');
    // The common shapes (number fields, no reserved array) skip the BigInt conversions; anything
    // else takes the general path, with the same refusals.
    const flags = req.flags;
    if (!(flags === undefined || flags === 0) && BigInt(flags) !== 0n) throw new KvmError('EINVAL', op, 'flags must be 0');
    const reserved = req.reserved;
    if (reserved !== undefined && reserved.some((r) => BigInt(r) !== 0n)) throw new KvmError('EINVAL', op, 'reserved fields must be 0');
    if (!this.ctx.privateMem) throw new KvmError('EINVAL', op, 'the VM has no private memory');
    const a = req.attributes;
    let toPrivate: boolean;
    if (a === 0 || a === uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) {
      toPrivate = a !== 0;
    } else {
      const attrs = BigInt(a);
      if ((attrs & ~BigInt(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)) !== 0n) throw new KvmError('EINVAL', op, `attributes 0x${attrs.toString(16)} other than PRIVATE`);
      toPrivate = attrs !== 0n;
    }
    const start = this.convertStart(req.offset, req.size, op, true);
    const end = start + (toByteCount(req.size, op, 'size') / PAGE_SIZE);
    return { start, end, toPrivate };
  }

  /** PROPOSED-CONV-v2: `KVM_GMEM_CONVERT_SHARED`, the first generation's entry point over the same engine. */
  convertShared(req: KvmGmemConvert): number {
    return this.gen1Convert(req, false, 'KVM_GMEM_CONVERT_SHARED');
  }

  /** PROPOSED-CONV-v2: `KVM_GMEM_CONVERT_PRIVATE`. */
  convertPrivate(req: KvmGmemConvert): number {
    return this.gen1Convert(req, true, 'KVM_GMEM_CONVERT_PRIVATE');
  }

  private gen1Convert(req: KvmGmemConvert, toPrivate: boolean, op: string): number {
    this.checkOpen(op);
    if (!this.ctx.proposals.gmemConvert) throw new KvmError('ENOTTY', op, 'the KVM_GMEM_CONVERT_* ioctls (conversion RFC v2) are not enabled');
    if (BigInt(req.error_offset ?? 0) !== 0n) throw new KvmError('EINVAL', op, 'error_offset must be 0 on input');
    if (BigInt(req.size) === 0n) return 0;
    const start = this.convertStart(req.offset, req.size, op, false);
    const end = start + toByteCount(req.size, op, 'size') / PAGE_SIZE;
    try {
      this.convert(start, end, toPrivate, op === 'KVM_GMEM_CONVERT_SHARED' ? 'convert_shared' : 'convert_private');
    } catch (e) {
      const off = (e as KvmError).data?.['error_offset'];
      if (off !== undefined) req.error_offset = off as number;
      throw e;
    }
    return 0;
  }

  /** Validates a conversion's `offset`/`size` (EINVAL unless page aligned and inside the file); returns the first page. */
  private convertStart(offset: number | bigint, size: number | bigint, op: string, zeroSizeInvalid: boolean): number {
    const off = toByteCount(offset, op, 'offset');
    const sz = toByteCount(size, op, 'size');
    if (sz === 0 && zeroSizeInvalid) throw new KvmError('EINVAL', op, 'size is 0');
    const start = pagesOf(off, op, 'offset');
    const n = pagesOf(sz, op, 'size');
    if (start >= this.nrPages || start + n > this.nrPages) throw new KvmError('EINVAL', op, `[${off}, +${sz}) is not inside the file`);
    return start;
  }

  /**
   * Validate-only conversion of pages `[start, end)`: every refusal {@link convert} makes, in its
   * order, with nothing changed (no unmap, no invalidation, no arch hook, no cost, no counter).
   * EBADF on a closed file; EINVAL unless `0 <= start < end <= size` in pages; EAGAIN (with
   * `error_offset`) on a conversion to private while a folio of the range holds a reference other
   * than the page cache's and this file's own user mappings (the kernel unmaps those first, so they
   * never block: kvm_gmem_is_safe_for_conversion runs after unmap_mapping_pages). Returns `false`
   * when the range already has the value (the ioctl returns 0 without invalidating), `true` when the
   * conversion would change it. `convert` runs the same checks, so the two cannot disagree; a
   * caller (the VM's conversion engine) asks first so that a refusal runs no arch hook.
   */
  checkConvert(start: number, end: number, toPrivate: boolean): boolean {
    this.checkOpen('convert');
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start >= end || end > this.nrPages) {
      throw new KvmError('EINVAL', 'convert', `pages [${start}, ${end}) are not a non-empty range inside the file (${this.nrPages} pages)`);
    }
    if (this.share.uniformValue(start, end) === (toPrivate ? SHAREABILITY.GUEST : SHAREABILITY.ALL)) return false;
    if (toPrivate) {
      const bad = this.heldFolio(start, end, false);
      if (bad !== undefined) throw this.convertRefusal(start, end, bad, false);
    }
    return true;
  }

  /**
   * The conversion engine both generations share (kvm_gmem_set_attributes / kvm_gmem_convert_range),
   * under the invalidate lock: no-op when the range already has the value; to private, zap host
   * userspace mappings and refuse with EAGAIN (error_offset = first still-referenced folio) before
   * anything else changes; invalidate guest mappings with the filter the current values give; on
   * to-shared, let the arch reclaim the pages; store; re-shape huge folios; end the invalidation.
   * The refusals are {@link checkConvert}'s (one implementation: `heldFolio`, `convertRefusal`).
   */
  convert(start: number, end: number, toPrivate: boolean, entry: string): void {
    const target: Shareability = toPrivate ? SHAREABILITY.GUEST : SHAREABILITY.ALL;
    // One lookup answers both the no-op test and the invalidation filter: runs coalesce, so the
    // range is uniform exactly when the run at `start` reaches `end`.
    const now = this.share.uniformValue(start, end);
    if (now === target) return;
    const filter: GmemInvalidateFilter = now === undefined ? 'both' : now === SHAREABILITY.GUEST ? 'private' : 'shared';
    const sim = this.ctx.sim;
    if (sim === undefined) this.convertLocked(start, end, toPrivate, target, filter, entry);
    else sim.rwlock(this.invalidateLockName).write(() => this.convertLocked(start, end, toPrivate, target, filter, entry));
  }

  /** `convert` under the invalidate lock, `filter` being what the range held before (kvm_gmem_get_invalidate_filter). */
  private convertLocked(start: number, end: number, toPrivate: boolean, target: Shareability, filter: GmemInvalidateFilter, entry: string): void {
    const hasFolios = this.allocated > 0 && !this.folios.isUniform(start, end, undefined);
    this.invalidateCaches(start, end);
    if (toPrivate && hasFolios) {
      if (this.host.mappingsOf(this) > 0) this.unmapFoliosForConvert(start, end);
      const bad = this.heldFolio(start, end, true);
      if (bad !== undefined) throw this.convertRefusal(start, end, bad, true);
    }
    this.charge('gmem.convert');
    const ranges = this.invalidateBegin(start, end, filter, 'convert');
    if (!toPrivate && hasFolios) {
      const inval = this.ctx.arch?.gmemInvalidate;
      if (inval !== undefined) {
        for (const r of this.folios.runs(start, end)) {
          const d = folioDelta(r.value);
          inval.call(this.ctx.arch, toPfn(r.start + d), toPfn(r.end + d));
        }
      }
      // Pages leave the guest: they must be prepared again once private.
      if (this.ctx.preparedTracking) this.setFlags(start, end, 0, FOLIO_PREPARED);
    }
    this.share.set(start, end, target);
    this.counters.conversions++;
    if (this.mixed.size > 0) this.updateMixed(start, end);
    if (this.hugeOrder > 0 && hasFolios) this.reshapeAfterConvert(start, end);
    this.invalidateEnd(ranges);
    if (this.tracing) this.trace('gmem.convert', { file: this.name, start, end, to: target, entry });
  }

  // -------------------------------------------------------------------------------------------
  // populate

  /**
   * kvm_gmem_populate: for each page of `[gfn, gfn + npages)` clipped to the slot, check the page is
   * private in the file (EINVAL), not yet prepared (EEXIST, with preparation tracking) and private in
   * the VM's memory attributes when they track private/shared (EINVAL), allocate (ENOMEM), run the
   * post_populate callback (default the arch's `populate` hook), and mark it prepared. Returns the
   * pages done if at least one succeeded, else throws the first error; a refused page changes
   * nothing.
   */
  populate(args: GmemPopulateArgs, pgoff: number): number {
    const op = 'kvm_gmem_populate';
    if (!Number.isSafeInteger(args.npages) || args.npages <= 0) throw new KvmError('EINVAL', op, 'npages must be positive');
    const slot = args.slot;
    const g0 = args.gfn as number;
    if (!(g0 >= slot.baseGfn && g0 < slot.baseGfn + slot.npages)) throw new KvmError('EINVAL', op, 'gfn is outside the slot');
    const n = Math.min(args.npages, slot.baseGfn + slot.npages - g0);
    const kind = args.kind ?? 'normal';
    const cb = args.callback ?? this.ctx.arch?.populate?.bind(this.ctx.arch);
    let done = 0;
    let firstError: unknown;
    this.withInvalidateLock(() => {
      for (let i = 0; i < n; i++) {
        const g = g0 + i;
        const index = pgoff + (g - slot.baseGfn);
        try {
          if (this.share.get(index) !== SHAREABILITY.GUEST) throw new KvmError('EINVAL', op, `gfn 0x${g.toString(16)} is not private`);
          // 6.18 refuses a prepared folio (EEXIST) before it looks at the attributes; a folio not
          // yet allocated is never prepared, so both checks can come before the allocation.
          const had = this.folios.get(index);
          if (this.ctx.preparedTracking && had !== undefined && (folioFlags(had) & FOLIO_PREPARED) !== 0) throw new KvmError('EEXIST', op, `page ${index} is already prepared`);
          // kvm_gmem_populate: kvm_range_has_memory_attributes(kvm, gfn, gfn + (1 << max_order),
          // PRIVATE, PRIVATE), max_order shrinking to 0 before -EINVAL: page by page, as here, that
          // is the gfn's own attribute. (The kernel has already got the folio by then; the model
          // refuses first, so a refused page leaves no folio behind.)
          const attrs = this.ctx.vmAttributes;
          if (attrs !== undefined && !attrs.rangeHasAttributes(g, g + 1, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)) {
            throw new KvmError('EINVAL', op, `gfn 0x${g.toString(16)} is not private in the VM's memory attributes (KVM_SET_MEMORY_ATTRIBUTES)`);
          }
          if (had === undefined && this.tryAllocate(index, 'populate') === undefined) throw new KvmError('ENOMEM', op, 'no free folio');
          let v = this.folios.get(index) as number;
          v = this.ensureUptodate(index, v);
          const p = toPfn(index + folioDelta(v));
          const src = args.src?.[i] ?? null;
          cb?.(toGfn(g), p, src, kind);
          if (cb === undefined && src !== null) this.kernelWrite(index, src);
          if (this.ctx.preparedTracking) this.setFlags(index, index + 1, FOLIO_PREPARED, 0);
          if (this.tracing) this.trace('gmem.populate', { file: this.name, index, gfn: g, pfn: p });
          done++;
        } catch (e) {
          firstError = e;
          break;
        }
      }
    });
    if (done === 0 && firstError !== undefined) throw firstError;
    return done;
  }

  // -------------------------------------------------------------------------------------------
  // KVM-internal access and pfn caches (direct-map removal, seed 002)

  /**
   * A KVM-internal write of `src` into page `index` (allocating it), bytes from `offset` (a partial
   * kvm_write_guest_page): for NO_DIRECT_MAP files the page is put back in the direct map for the
   * access and removed again (remap → access → unmap).
   */
  kernelWrite(index: number, src: PageSource, offset = 0): void {
    const p = this.kernelPage(index);
    this.withDirectMap(index, p, 1, 'kernel_write', () => {
      if (src.kind === 'bytes') this.host.writeBytes(p, offset, src.bytes);
      else if (src.kind === 'tag') this.host.writeTag(p, src.tag);
      else this.host.zero(p);
    });
  }

  /** A KVM-internal read of `length` bytes of page `index` from `offset` (allocating it), restoring the direct map meanwhile. */
  kernelRead(index: number, offset = 0, length = PAGE_SIZE): Uint8Array {
    const p = this.kernelPage(index);
    return this.withDirectMap(index, p, 1, 'kernel_read', () => this.host.readBytes(p, offset, length));
  }

  /**
   * A long-term kernel user of page `index` (a gfn_to_pfn_cache): takes a sharing reference on the
   * direct map for NO_DIRECT_MAP files, and is invalidated when the page is punched, converted or
   * the file released.
   */
  pfnCache(index: number): GmemPfnCache {
    const p = this.kernelPage(index);
    const entry: CacheEntry = { index, pfn: p, valid: true, unmap: undefined };
    if (this.noDirectMap) {
      if (!this.host.isDirectMapped(p)) this.counters.remaps++;
      const h = this.host.tempMap(p);
      entry.unmap = () => h.unmap();
      this.trace('gmem.remap', { file: this.name, index, pfn: p, op: 'map', user: 'pfn_cache' });
    }
    this.caches.add(entry);
    const drop = (): void => {
      if (!entry.valid) return;
      entry.valid = false;
      this.caches.delete(entry);
      if (entry.unmap !== undefined) {
        entry.unmap();
        this.trace('gmem.remap', { file: this.name, index, pfn: p, op: 'unmap', user: 'pfn_cache' });
      }
    };
    return {
      index: toPgoff(index),
      pfn: p,
      get valid() {
        return entry.valid;
      },
      release: drop,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Memory failure and release

  /**
   * memory_failure on page `index` (kvm_gmem_error_folio): guest mappings are invalidated, the page
   * stays in the file, and later get_pfn answers EHWPOISON, host faults SIGBUS.
   */
  memoryFailure(index: number): void {
    if (!this.folios.has(index)) throw new KvmError('EINVAL', 'memory_failure', `page ${index} is not in the page cache`);
    this.withInvalidateLock(() => {
      const r = this.invalidateBegin(index, index + 1, this.filterOf(index, index + 1), 'memory_failure');
      this.poisoned.set(index, index + 1, true);
      this.invalidateEnd(r);
    });
  }

  /**
   * The host's `FileProvider.release`: the last VMA mapping the file went (its vm_file reference
   * was the last one). Releases the file when no fd refers to it any more; otherwise the fds keep
   * it alive and closing the last of them releases it.
   */
  release(): void {
    if (this.fdClosed && !this.released && this.host.mappingsOf(this) === 0) this.evict();
  }

  /**
   * @internal kvm_gmem_release plus inode eviction (the last fput): every binding is invalidated
   * (shared and private) and dropped, then every folio is freed. Slots keep pointing at nothing
   * (get_pfn → EFAULT).
   */
  private evict(): void {
    const nb = this.bindings.runCount;
    const pages = this.allocated;
    this.withInvalidateLock(() => {
      const r = this.invalidateBegin(0, this.nrPages, 'both', 'release');
      this.invalidateCaches(0, this.nrPages);
      this.lastBinding = undefined;
      this.bindings.clearAll();
      this.truncate(0, this.nrPages);
      this.invalidateEnd(r);
    });
    this.released = true;
    this.ctx.released(this);
    if (this.tracing) this.trace('gmem.release', { file: this.name, pages, bindings: nb });
  }

  /**
   * @internal The last fd referring to the file was closed: the file is released now, or, while a
   * host VMA still maps it, when the last such VMA goes (the host's `release` hook).
   */
  markFdClosed(): void {
    this.fdClosed = true;
    this.release();
  }

  /** @internal Whether no fd refers to the file any more. */
  get fdsClosed(): boolean {
    return this.fdClosed;
  }

  // -------------------------------------------------------------------------------------------
  // Invariants

  /**
   * Checks the file's invariants: shareability covers exactly the file; folio runs inside the file,
   * aligned, backed by host blocks of the same order used for guest_memfd; the accounting; no
   * private page referenced or mapped by the host; the direct map as the flags say; huge folios
   * consistent with the policy and the mixed records; bindings inside the file.
   */
  checkInvariants(): void {
    const fail = (name: string, detail: string): never => {
      throw new ModelInvariantError(`gmem.${name}`, `${this.name}: ${detail}`);
    };
    this.share.checkInvariants();
    this.folios.checkInvariants();
    this.bindings.checkInvariants();
    if (!this.released) {
      if (this.share.firstWithout(0, this.nrPages) !== undefined) fail('shareability-coverage', 'a page has no shareability');
      const last = this.share.lastRun();
      if (last !== undefined && last.end !== this.nrPages) fail('shareability-coverage', `shareability ends at ${last.end}, not ${this.nrPages}`);
    }
    let count = 0;
    for (const r of this.folios.runs()) {
      const order = folioOrder(r.value);
      const d = folioDelta(r.value);
      if (order !== 0 && order !== 9 && order !== 18) fail('folio-order', `run [${r.start}, ${r.end}) has order ${order}`);
      if (order > this.hugeOrder) fail('folio-order', `folio order ${order} above the file's ${this.hugeOrder}`);
      // Page flags may differ inside a folio, so runs need not be folio-aligned; every folio must be whole.
      const b0 = alignDown(r.start, order);
      const b1 = alignUp(r.end, order);
      if (this.folios.count(b0, b1, (x) => folioOrder(x) === order && folioDelta(x) === d) !== b1 - b0) {
        fail('folio-alignment', `run [${r.start}, ${r.end}) leaves part of an order-${order} folio`);
      }
      if (r.end > this.nrPages) fail('folio-past-eof', `run [${r.start}, ${r.end}) passes i_size`);
      if ((folioFlags(r.value) & FOLIO_PREPARED) !== 0 && (folioFlags(r.value) & FOLIO_UPTODATE) === 0) fail('prepared-not-zeroed', `[${r.start}, ${r.end})`);
      for (let s = b0; s < r.end; s += 2 ** order) {
        // folio_test_uptodate is one flag per folio: a huge folio partly uptodate is one whose
        // first use would zero (or whose use would expose unzeroed) pages of the others.
        if (order > 0) {
          const up = this.folios.count(s, s + 2 ** order, (x) => (folioFlags(x) & FOLIO_UPTODATE) !== 0);
          if (up !== 0 && up !== 2 ** order) fail('folio-uptodate', `folio at index ${s} of order ${order} has ${up} of its ${2 ** order} pages uptodate`);
        }
        const blk = this.host.buddy.blockOf(s + d);
        if (blk === undefined || blk.pfn !== s + d || blk.order !== order || blk.purpose !== 'guest_memfd') {
          fail('folio-host-block', `folio at index ${s} (pfn ${s + d}, order ${order}) is not an allocated guest_memfd block of that order`);
        }
        if (this.hugeOrder > 0 && order > 0 && this.ctx.hugePolicy === 'split-eager' && this.isMixed(s, order)) {
          fail('folio-mixed', `folio at index ${s} of order ${order} spans mixed shareability under split-eager`);
        }
        if (this.ctx.hugePolicy === 'split-on-fault' && order > 0 && this.isMixed(s, order)) {
          for (const sr of this.share.runs(s, s + 2 ** order)) {
            if (sr.value === SHAREABILITY.ALL && this.host.firstElevated(sr.start + d, sr.end + d) !== undefined) {
              fail('folio-mixed', `mixed folio at ${s} has host references on its shared pages but was not split`);
            }
          }
        }
      }
      for (const sr of this.share.runs(r.start, r.end)) {
        if (sr.value !== SHAREABILITY.GUEST) continue;
        const e = this.host.firstElevated(sr.start + d, sr.end + d);
        if (e !== undefined) fail('private-referenced', `private page at pfn ${e} holds host references`);
      }
      // Removal persists while a page is temporarily restored, so "removed" is the whole condition:
      // every zeroed (uptodate) page of a NO_DIRECT_MAP folio is removed, and no other page is (a
      // folio leaves the direct map once zeroed, see zeroFolio).
      const removed = this.host.directMapRemovedCount(r.start + d, r.end + d);
      const zeroed = (folioFlags(r.value) & FOLIO_UPTODATE) !== 0;
      if (this.noDirectMap && removed !== (zeroed ? r.end - r.start : 0)) {
        fail('direct-map', `pfns [${r.start + d}, ${r.end + d}) of a NO_DIRECT_MAP file, ${zeroed ? 'zeroed' : 'not yet zeroed'}: ${removed} out of the direct map`);
      } else if (!this.noDirectMap && removed !== 0) {
        fail('direct-map', `pfns [${r.start + d}, ${r.end + d}): ${removed} left the direct map`);
      }
      count += r.end - r.start;
    }
    if (count !== this.allocated) fail('accounting', `${count} pages in the page cache, counter says ${this.allocated}`);
    for (const [order, m] of this.mixed) {
      m.checkInvariants();
      // A block is mixed exactly when a shareability run boundary falls strictly inside it, so the
      // expected record is built from the boundaries: O(runs), however large the file.
      const expected = new RangeMap<true>();
      const n = 2 ** order;
      for (const sr of this.share.runs(0, this.nrPages)) {
        if (sr.start === 0 || sr.start % n === 0) continue;
        const b = alignDown(sr.start, order);
        expected.set(b, Math.min(b + n, this.nrPages), true);
      }
      const got = [...m.runs()];
      const want = [...expected.runs()];
      if (got.length !== want.length || got.some((g, i) => g.start !== want[i]?.start || g.end !== want[i]?.end)) {
        const at = got.find((g, i) => g.start !== want[i]?.start || g.end !== want[i]?.end) ?? want[got.length];
        fail('mixed-record', `order-${order} mixed record differs from the shareability near index ${at?.start ?? '?'}`);
      }
    }
    for (const r of this.bindings.runs()) {
      if (r.end > this.nrPages) fail('binding-past-eof', `binding [${r.start}, ${r.end})`);
    }
    // No private page in any host page table.
    for (const proc of this.host.processes()) {
      const vmas = proc.vmaList().filter((v) => v.file === this);
      if (vmas.length === 0) continue;
      for (const m of proc.mappedRuns()) {
        if (m.anon) continue;
        for (const v of vmas) {
          const lo = Math.max(m.hfn, v.start);
          const hi = Math.min(m.hfn + m.npages, v.end);
          if (lo >= hi) continue;
          const i0 = v.pgoff + (lo - v.start);
          const i1 = i0 + (hi - lo);
          if (this.share.count(i0, i1, (s) => s === SHAREABILITY.ALL) !== i1 - i0) {
            fail('private-mapped', `process ${proc.pid} maps private pages of [${i0}, ${i1})`);
          }
        }
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // internals

  private checkOpen(op: string): void {
    if (this.released || this.fdClosed) throw new KvmError('EBADF', op, `${this.name} is closed`);
  }

  private charge(name: 'gmem.filemap_lookup' | 'gmem.folio_insert' | 'gmem.folio_remove' | 'gmem.invalidate' | 'gmem.convert' | 'gmem.refcount_check' | 'gmem.folio_split' | 'gmem.folio_merge' | 'gmem.get_pfn', units = 1): void {
    const sim = this.ctx.sim;
    if (sim !== undefined && units > 0) sim.charge(name, units);
  }

  /** Emits `name` when tracing. Per-page sites test {@link GuestMemfd.tracing} first, so the fields object is never built with tracing off. */
  private trace<K extends keyof TraceEventMap & `gmem.${string}`>(name: K, fields: TraceFields<K>): void {
    const sim = this.ctx.sim;
    if (sim?.trace.enabled) sim.trace.emit(name, fields);
  }

  private sigbus(reason: string): FileFaultResult {
    this.counters.sigbus++;
    return { signal: 'SIGBUS', reason };
  }

  /** Whether trace events are recorded: callers test it before building an event's fields. */
  private get tracing(): boolean {
    return this.ctx.sim?.trace.enabled === true;
  }

  private withInvalidateLock<T>(f: () => T): T {
    const sim = this.ctx.sim;
    return sim === undefined ? f() : sim.rwlock(this.invalidateLockName).write(f);
  }

  /** The filter for zapping `[start, end)`: from the shareability it holds (kvm_gmem_get_invalidate_filter). */
  private filterOf(start: number, end: number): GmemInvalidateFilter {
    const s = this.share.uniformValue(start, Math.min(end, this.nrPages));
    if (s !== undefined) return s === SHAREABILITY.GUEST ? 'private' : 'shared';
    return 'both';
  }

  private invalidateBegin(start: number, end: number, filter: GmemInvalidateFilter, reason: GmemInvalidateReason): readonly GmemInvalidateRange[] {
    if (this.bindings.runCount === 0) return NO_RANGES;
    const sim = this.ctx.sim;
    // Without listeners and without a sim nothing can observe the ranges: skip building them.
    if (this.ctx.listeners.length === 0 && sim === undefined) return NO_RANGES;
    let out: GmemInvalidateRange[];
    const b0 = this.bindings.runAt(start);
    if (b0 !== undefined && b0.end >= end) {
      // The common case: one binding covers the whole range.
      const b = b0.value;
      const g = b.slot.baseGfn + (start - b.pgoff);
      out = [{ file: this, slot: b.slot, start: toGfn(g), end: toGfn(g + (end - start)), index: toPgoff(start), filter, reason }];
    } else {
      out = [];
      for (const r of this.bindings.runs(start, end)) {
        const b = r.value;
        const g = b.slot.baseGfn + (r.start - b.pgoff);
        out.push({ file: this, slot: b.slot, start: toGfn(g), end: toGfn(g + (r.end - r.start)), index: toPgoff(r.start), filter, reason });
      }
      if (out.length === 0) return NO_RANGES;
    }
    this.charge('gmem.invalidate', out.length);
    if (sim?.trace.enabled) sim.trace.emit('gmem.invalidate', { file: this.name, start, end, filter, reason, slots: out.length });
    const ls = this.ctx.listeners;
    for (let i = 0; i < ls.length; i++) for (let j = 0; j < out.length; j++) ls[i]!.invalidateBegin(out[j]!);
    return out;
  }

  private invalidateEnd(ranges: readonly GmemInvalidateRange[]): void {
    if (ranges.length === 0) return;
    const ls = this.ctx.listeners;
    for (let i = 0; i < ls.length; i++) for (let j = 0; j < ranges.length; j++) ls[i]!.invalidateEnd(ranges[j]!);
  }

  private invalidateCaches(start: number, end: number): void {
    if (this.caches.size === 0) return;
    for (const c of [...this.caches]) {
      if (c.index >= start && c.index < end) {
        c.valid = false;
        this.caches.delete(c);
        if (c.unmap !== undefined) {
          c.unmap();
          this.trace('gmem.remap', { file: this.name, index: c.index, pfn: c.pfn, op: 'unmap', user: 'pfn_cache' });
        }
      }
    }
  }

  /**
   * Conversion to private: zaps host userspace mappings before the refcount check. The kernel zaps
   * the range (unmap_mapping_pages) and then checks whole folios (kvm_gmem_has_safe_refcount:
   * folio_ref_count == folio_nr_pages + 1). In the 1G RFC v2 a HugeTLB folio holding any shared
   * page is split to 4 KiB folios as soon as it is allocated, so the range's folios are its pages.
   * A huge folio left whole while shared (split-on-fault, seed 003's lpage_info-like policy; and
   * this model's split-eager, which splits only mixed folios) also carries the references of the
   * host's mappings of its other, still-shared pages, and would refuse the conversion until the
   * VMM unmapped them all. So the user mappings of every folio the range touches go: only real
   * references (GUP pins) still make it EAGAIN, and the host refaults the shared pages on its next
   * access, which splits the now mixed folio first (`fault`).
   */
  private unmapFoliosForConvert(start: number, end: number): void {
    const head = this.folios.get(start);
    const tail = this.folios.get(end - 1);
    const s = head === undefined ? start : alignDown(start, folioOrder(head));
    const e = tail === undefined ? end : Math.min(alignUp(end, folioOrder(tail)), this.nrPages);
    this.host.unmapFileRange(this, s, e);
  }

  /**
   * The first folio of `[start, end)` (file index, folio aligned) holding a reference that the
   * unmap before the kernel's refcount check would not drop, or `undefined`. References from this
   * file's own user mappings (a PTE of a process mapping the file, pointing at the file's page) are
   * counted out, so the answer is the same before and after `unmapFileRange`. `charge`: the
   * conversion pays for the check; the validate-only {@link checkConvert} does not.
   */
  private heldFolio(start: number, end: number, charge: boolean): number | undefined {
    const bad = this.firstReferencedFolio(start, end, charge);
    if (bad === undefined || this.host.mappingsOf(this) === 0) return bad;
    const vmas = this.host.processes().flatMap((p) => p.vmaList().filter((v) => v.file === this));
    const h = this.hugeOrder;
    for (const r of this.folios.runs(alignDown(bad, h), Math.min(alignUp(end, h), this.nrPages))) {
      const order = folioOrder(r.value);
      const d = folioDelta(r.value);
      let i = r.start;
      for (;;) {
        const p = this.host.firstElevated(i + d, r.end + d);
        if (p === undefined) break;
        const index = p - d;
        let mapped = 0;
        for (const v of vmas) {
          if (index < v.pgoff || index >= v.pgoff + (v.end - v.start)) continue;
          if (v.process.pfnAt((v.start + (index - v.pgoff)) * PAGE_SIZE) === p) mapped++;
        }
        if (this.host.refcount(p) - 1 > mapped) return alignDown(index, order);
        i = index + 1;
      }
    }
    return undefined;
  }

  /** The EAGAIN of a conversion to private refused at folio `bad`; `record` counts and traces it. */
  private convertRefusal(start: number, end: number, bad: number, record: boolean): KvmError {
    const errorOffset = Math.max(start, bad) * PAGE_SIZE;
    if (record) {
      this.counters.refused++;
      if (this.tracing) this.trace('gmem.convert_refused', { file: this.name, start, end, errorOffset });
    }
    return new KvmError('EAGAIN', 'convert', `folio at index ${bad} is still referenced (pinned or mapped) by the host`, { error_offset: errorOffset });
  }

  private firstReferencedFolio(start: number, end: number, charge = true): number | undefined {
    let checked = 0;
    let found: number | undefined;
    const h = this.hugeOrder;
    for (const r of this.folios.runs(alignDown(start, h), Math.min(alignUp(end, h), this.nrPages))) {
      const order = folioOrder(r.value);
      const d = folioDelta(r.value);
      // Whole folios: a huge folio straddling the range counts with all its pages.
      const fs = alignDown(r.start, order);
      const fe = alignUp(r.end, order);
      const s = Math.max(fs, alignDown(start, order));
      const e = Math.min(fe, alignUp(end, order));
      if (s >= e) continue;
      checked += (e - s) / 2 ** order;
      const p = this.host.firstElevated(s + d, e + d);
      if (p !== undefined) {
        found = alignDown(p - d, order);
        break;
      }
    }
    if (charge) this.charge('gmem.refcount_check', checked);
    return found;
  }

  /**
   * Allocates the folio around `index` (kvm_gmem_get_folio) for a user that zeroes it at once (a
   * fault, get_pfn, populate, a kernel access): it goes into the page cache already zeroed and
   * uptodate, one write, with `flags` besides. Returns the page cache's entry for `index`, or
   * `undefined` on ENOMEM (nothing changed).
   */
  private tryAllocate(index: number, cause: string, flags = 0): number | undefined {
    const order = this.hugeOrder;
    if (!this.host.buddy.canAlloc(order)) return undefined;
    const v = this.insertFolio(alignDown(index, order), cause, true, flags);
    // A huge folio may have been split at once (split-eager, mixed block): read back its piece.
    return order === 0 ? v : (this.folios.get(index) as number);
  }

  /**
   * Allocates a folio at `start`; fallocate leaves it unzeroed (`zero` false) until first use, as
   * 6.18 does. Returns the entry written (before any split-eager reshaping).
   */
  private insertFolio(start: number, cause: string, zero = false, flags = 0): number {
    const order = this.hugeOrder;
    const p = this.host.allocPages(order, 'guest_memfd');
    const n = 2 ** order;
    if (zero) this.zeroFolio(p, n);
    const v = encodeFolio(p - start, order, (zero ? FOLIO_UPTODATE : 0) | flags);
    this.folios.set(start, start + n, v);
    this.allocated += n;
    this.charge('gmem.folio_insert');
    if (this.tracing) this.trace('gmem.alloc', { file: this.name, index: start, pfn: p, order, cause });
    if (order > 0 && this.ctx.hugePolicy === 'split-eager') this.fixBlock(start, order, 'base', 'alloc');
    return v;
  }

  private allocateRange(start: number, end: number, cause: string): void {
    const order = this.hugeOrder;
    const n = 2 ** order;
    const done: number[] = [];
    let cursor = alignDown(start, order);
    const holes: Array<[number, number]> = [];
    for (const r of this.folios.runs(cursor, end)) {
      if (r.start > cursor) holes.push([cursor, r.start]);
      cursor = r.end;
    }
    if (cursor < end) holes.push([cursor, end]);
    try {
      for (const [hs, he] of holes) {
        for (let i = alignDown(hs, order); i < he; i += n) {
          if (!this.host.buddy.canAlloc(order)) throw new KvmError('ENOMEM', 'fallocate', 'no free folio');
          this.insertFolio(i, cause);
          done.push(i);
        }
      }
    } catch (e) {
      for (const i of done) this.truncate(i, i + n);
      throw e;
    }
  }

  /**
   * Zeroes the folio holding `index` on first use (clear_highpage while !folio_test_uptodate) and
   * marks it uptodate. Only the pages whose flag is clear are zeroed: a huge folio's pages share
   * one flag (a merge settles it, see {@link GuestMemfd.zeroForMerge}), but zeroing page by page
   * can never wipe a page that already holds data.
   */
  private ensureUptodate(index: number, v: number): number {
    if ((folioFlags(v) & FOLIO_UPTODATE) !== 0) return v;
    const order = folioOrder(v);
    const s = alignDown(index, order);
    if (order === 0) {
      this.zeroFolio(s + folioDelta(v), 1);
      this.setFlags(s, s + 1, FOLIO_UPTODATE, 0);
    } else {
      this.zeroNotUptodate(s, s + 2 ** order);
    }
    return this.folios.get(index) as number;
  }

  /** Zeroes, and marks uptodate, the pages of `[start, end)` not yet uptodate; returns how many. */
  private zeroNotUptodate(start: number, end: number): number {
    const todo: Array<[number, number, number]> = [];
    for (const r of this.folios.runs(start, end)) {
      if ((folioFlags(r.value) & FOLIO_UPTODATE) === 0) todo.push([r.start, r.end, folioDelta(r.value)]);
    }
    let pages = 0;
    for (const [s, e, d] of todo) {
      this.zeroFolio(s + d, e - s);
      this.setFlags(s, e, FOLIO_UPTODATE, 0);
      pages += e - s;
    }
    return pages;
  }

  /**
   * Settles the uptodate flag of the folio a merge of the pieces tiling `[start, start + n)`
   * makes: the flag is one per folio, but pieces zeroed (or written) while the folio was split
   * sit beside pieces never touched. The 1G RFC v2 merges by prep_compound_page on the first
   * piece (guestmem_hugetlb_merge_folio), so the merged folio keeps the first piece's flag: a
   * folio whose first page was never touched is zeroed whole on its next use, wiping the pages
   * written while split, and one whose first page was touched hands out the untouched pages
   * never zeroed. So when some pieces are uptodate and others not, the others are zeroed here,
   * page by page, and the merged folio is uptodate; when none is, it stays not uptodate (zeroed
   * on first use, as fallocate leaves it). Returns the pages zeroed.
   */
  private zeroForMerge(start: number, n: number): number {
    const uptodate = this.folios.count(start, start + n, (x) => (folioFlags(x) & FOLIO_UPTODATE) !== 0);
    return uptodate === 0 || uptodate === n ? 0 : this.zeroNotUptodate(start, start + n);
  }

  private setFlags(start: number, end: number, set: number, clear: number): void {
    if (end - start === 1) {
      // An order-0 folio: one entry, rewritten in place (the 4 KiB fault path).
      const v = this.folios.get(start);
      if (v !== undefined) this.folios.set(start, end, withFlags(v, (folioFlags(v) | set) & ~clear));
      return;
    }
    this.folios.update(start, end, (v) => (v === undefined ? undefined : withFlags(v, (folioFlags(v) | set) & ~clear)));
  }

  private kernelPage(index: number): Pfn {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.nrPages) throw new KvmError('EINVAL', 'kvm_gmem_get_folio', `index ${index} is outside the file`);
    if (!this.folios.has(index) && this.tryAllocate(index, 'kernel') === undefined) throw new KvmError('ENOMEM', 'kvm_gmem_get_folio', 'no free folio');
    const v = this.ensureUptodate(index, this.folios.get(index) as number);
    return toPfn(index + folioDelta(v));
  }

  /**
   * Zeroes a folio (it becomes uptodate); a NO_DIRECT_MAP folio leaves the direct map only now,
   * zeroed through it first: no temporary restoration, so remaps count KVM's own accesses alone.
   * The direct-map removal series zero before they remove: RFC v2 (seed 002) zeroes in
   * kvm_gmem_get_folio (clear_highpage while !folio_test_uptodate) before kvm_gmem_prepare_folio
   * and kvm_gmem_folio_set_private; the later GUEST_MEMFD_FLAG_NO_DIRECT_MAP series calls
   * kvm_gmem_folio_zap_direct_map after kvm_gmem_prepare_folio in kvm_gmem_get_pfn and after
   * folio_mark_uptodate in kvm_gmem_fault_user_mapping. So a folio fallocate allocated, not yet
   * zeroed, is still in the direct map (fallocate zaps nothing).
   */
  private zeroFolio(p: number, pages: number): void {
    this.host.zero(p, pages);
    if (this.noDirectMap) this.host.removeFromDirectMap(p, p + pages);
  }

  private withDirectMap<T>(index: number, p: number, pages: number, user: string, f: () => T): T {
    if (!this.noDirectMap) return f();
    const handles = [];
    for (let i = 0; i < pages; i++) {
      // A page a pfn cache (or another access) keeps mapped is not remapped: count real remaps only.
      if (!this.host.isDirectMapped(p + i)) this.counters.remaps++;
      handles.push(this.host.tempMap(p + i));
    }
    this.trace('gmem.remap', { file: this.name, index, pfn: p, op: 'map', user });
    try {
      return f();
    } finally {
      for (const h of handles) h.unmap();
      this.trace('gmem.remap', { file: this.name, index, pfn: p, op: 'unmap', user });
    }
  }

  private punchHole(start: number, end: number): void {
    if (start >= end) return;
    this.withInvalidateLock(() => {
      const r = this.invalidateBegin(start, end, this.filterOf(start, end), 'punch_hole');
      this.invalidateCaches(start, end);
      if (this.host.mappingsOf(this) > 0) this.host.unmapFileRange(this, start, end);
      const pages = this.truncate(start, end);
      this.poisoned.clear(start, end);
      this.invalidateEnd(r);
      this.counters.punched += pages;
      this.trace('gmem.punch_hole', { file: this.name, start, end, pages });
    });
  }

  /** Frees every folio inside `[start, end)` (truncate_inode_pages_range; ranges are folio-aligned here). */
  private truncate(start: number, end: number): number {
    const runs = [...this.folios.runs(start, end)];
    let pages = 0;
    let freedTo = start;
    for (const r of runs) {
      const order = folioOrder(r.value);
      const d = folioDelta(r.value);
      for (let s = Math.max(alignDown(r.start, order), freedTo); s < r.end; s += 2 ** order) {
        freedTo = s + 2 ** order;
        const p = s + d;
        const n = 2 ** order;
        // kvm_gmem_free_folio: the arch reclaims the pages, the direct map comes back, then the free.
        this.ctx.arch?.gmemInvalidate?.(toPfn(p), toPfn(p + n));
        if (this.noDirectMap) this.host.restoreDirectMap(p, p + n);
        const how = this.host.freePages(p, order);
        this.charge('gmem.folio_remove');
        if (this.tracing) this.trace('gmem.free', { file: this.name, index: s, pfn: p, order, deferred: how === 'deferred' });
        pages += n;
      }
    }
    this.folios.clear(start, end);
    this.allocated -= pages;
    return pages;
  }

  private updateMixed(start: number, end: number): void {
    for (const [order, m] of this.mixed) {
      const inner0 = alignUp(start, order);
      const inner1 = alignDown(end, order);
      if (inner0 < inner1) m.clear(inner0, inner1);
      const first = alignDown(start, order);
      const last = alignDown(end - 1, order);
      this.updateMixedBlock(m, first, order);
      if (last !== first) this.updateMixedBlock(m, last, order);
    }
  }

  private updateMixedBlock(m: RangeMap<true>, b: number, order: number): void {
    if (this.isMixed(b, order)) m.set(b, Math.min(b + 2 ** order, this.nrPages), true);
    else m.clear(b, b + 2 ** order);
  }

  /** After a conversion: split blocks that became mixed (split-eager) and merge those uniform again. */
  private reshapeAfterConvert(start: number, end: number): void {
    const h = this.hugeOrder;
    const blocks = new Set<number>([alignDown(start, h), alignDown(end - 1, h)]);
    for (const r of this.folios.runs(alignDown(start, h), Math.min(alignUp(end, h), this.nrPages))) {
      if (folioOrder(r.value) < h) blocks.add(alignDown(r.start, h));
    }
    const split: SplitTo = this.ctx.hugePolicy === 'split-eager' ? 'base' : 'none';
    for (const b of blocks) if (this.folios.has(b)) this.fixBlock(b, h, split, 'convert');
  }

  /**
   * Brings the folios of block `[start, start + 2^order)` to the shape its shareability asks for:
   * one folio where uniform (merging pieces back), smaller folios where mixed: none (`'none'`),
   * 4 KiB folios at once (`'base'`, split-eager; pieces stay 4 KiB until the whole block is
   * uniform), or the largest uniform sub-blocks (`'uniform'`, a split-on-fault host fault).
   */
  private fixBlock(start: number, order: number, split: SplitTo, cause: string): void {
    const v = this.folios.get(start);
    if (v === undefined) return;
    const cur = folioOrder(v);
    const d = folioDelta(v);
    const n = 2 ** order;
    if (!this.isMixed(start, order)) {
      if (cur < order && this.folios.count(start, start + n, (x) => folioDelta(x) === d) === n) {
        const zeroed = this.zeroForMerge(start, n);
        this.host.mergeFolio(start + d, order);
        this.folios.update(start, start + n, (x) => (x === undefined ? undefined : encodeFolio(d, order, folioFlags(x))));
        this.counters.merges++;
        this.charge('gmem.folio_merge');
        this.trace('gmem.merge', { file: this.name, index: start, order, zeroed });
      }
      return;
    }
    if (order === 0) return;
    const next = split === 'base' || order === 9 ? 0 : 9;
    if (cur === order) {
      if (split === 'none') return;
      this.host.splitFolio(start + d, order, next);
      this.folios.update(start, start + n, (x) => (x === undefined ? undefined : encodeFolio(d, next, folioFlags(x))));
      this.counters.splits++;
      this.charge('gmem.folio_split');
      this.trace('gmem.split', { file: this.name, index: start, order, newOrder: next, cause });
    }
    // 'base' pieces are 4 KiB already and merge only as the whole block; otherwise the 2M
    // sub-blocks of a 1G block are reshaped (split where mixed, merged where uniform again).
    if (split !== 'base' && order === 18) for (let s = start; s < start + n; s += 2 ** 9) this.fixBlock(s, 9, split, cause);
  }
}
