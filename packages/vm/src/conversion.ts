/**
 * The conversion engine (issue 6): one engine behind both ways a range changes between private and
 * shared — the VM's memory attributes (KVM_SET_MEMORY_ATTRIBUTES, 6.18) and guest_memfd in-place
 * conversion (KVM_SET_MEMORY_ATTRIBUTES2 on the file, PROPOSED-CONV) — in the order the kernel and
 * QEMU take the steps: validate (every refusal of the ioctl, through memslot's and gmem's
 * validate-only entries, so a refused conversion runs no arch hook), skip a request that changes
 * nothing, arch `beforeConvert`, zap + store + mixed-range tracking (inside memslot's / gmem's own
 * ioctl, which invalidate the MMU), arch `afterConvert`, then userspace's optional discard of the
 * side no longer used (QEMU kvm_convert_memory: ram_block_discard_range for the shared copy on
 * to-private, ram_block_discard_guest_memfd_range on to-shared).
 *
 * A request that changes nothing is the kernel's "nothing to do": kvm_vm_set_mem_attributes returns
 * 0 when kvm_range_has_memory_attributes already holds for the whole range (no
 * kvm_arch_pre_set_memory_attributes, no zap), and PROPOSED-CONV-v8 __kvm_gmem_set_attributes
 * returns 0 when kvm_gmem_range_has_attributes does (no invalidation). The test is per ioctl: a
 * partly converted range is converted (hooks and zaps) as a whole.
 *
 * The ioctls themselves never discard: discard is a userspace policy, which is what seed 000
 * measured (per-conversion punch-hole made an SNP boot of a 1 GiB guest 1m43s instead of 1m08s).
 */
import { KvmError, PAGE_SIZE, RangeMap, uapi, type ArchVm, type Sim } from '@cocokit/sdk';
import type { GuestMemfd } from '@cocokit/gmem';
import type { HostProcess } from '@cocokit/host';
import { MADV } from '@cocokit/host';
import type { Memslot, Memslots } from '@cocokit/memslot';

/** Where shareability lives: the VM's attributes, or the guest_memfd (in place). */
export type ConversionPath = 'attributes' | 'in-place';

/** What {@link ConversionEngine.convert} did: changed shareability, or found it already so. */
export type ConversionOutcome = 'converted' | 'noop';

/**
 * What userspace discards after a conversion (attributes path only; in place there is no second copy):
 * - `'none'`: nothing; both copies stay allocated (the double allocation the seeds discuss).
 * - `'both'`: QEMU's default: to private, drop the shared copy (madvise DONTNEED on the hva); to
 *   shared, punch a hole in the guest_memfd (the private pages are freed, SNP reclaims them).
 * - `'private-only'`: seed 000's "disable shared discard": only the guest_memfd hole punch.
 * - `'lazy'`: both discards are queued and issued in batches of `lazyBatchPages`; a range that
 *   flips back before its batch is issued is taken out of the queue, so the OVMF pattern of one or
 *   two DMA pages flipping on every transfer costs no discard at all.
 */
export type DiscardPolicy = 'none' | 'both' | 'private-only' | 'lazy';

/** A conversion request. */
export interface ConversionRequest {
  readonly gpa: number;
  readonly size: number;
  readonly toPrivate: boolean;
  readonly path: ConversionPath;
  /** Default `'none'`. */
  readonly discard?: DiscardPolicy;
}

/** Counters of the engine. */
export interface ConversionStats {
  /** Requests that changed shareability (each one ioctl's worth of hooks and zaps). */
  conversions: number;
  /**
   * Requests for a range already entirely in the target state (per ioctl: the whole request, or on
   * the in-place path every file's share of it): the kernel returns 0 at once, so no arch hook, no
   * zap and no page converted. Not counted in `conversions`.
   */
  noopConversions: number;
  toPrivate: number;
  toShared: number;
  pagesConverted: number;
  /** fallocate(PUNCH_HOLE) calls on guest_memfd, and the pages they covered. */
  punchHoles: number;
  punchedPages: number;
  /** madvise(DONTNEED) calls on shared memory, and the pages they dropped. */
  sharedDiscards: number;
  sharedDiscardedPages: number;
  /** Lazy policy: pages queued, pages dropped from the queue by a flip back, batches issued. */
  lazyQueuedPages: number;
  lazyCancelledPages: number;
  lazyBatches: number;
  refused: number;
}

/** What the engine needs from the VM. */
export interface ConversionHost {
  readonly sim: Sim;
  readonly memslots: Memslots;
  readonly arch: ArchVm | undefined;
  readonly process: HostProcess;
  /** The guest_memfd file a slot is bound to, and the slot's first page in it. */
  fileOf(slot: Memslot): { file: GuestMemfd; pgoff: number } | undefined;
  /** Whether KVM_SET_MEMORY_ATTRIBUTES2 exists (the gmem_in_place_conversion module parameter). */
  inPlace(): boolean;
}

/** One memslot's share of a range. */
interface Piece {
  readonly slot: Memslot;
  readonly start: number;
  readonly end: number;
}

const PAGE = PAGE_SIZE;

/** Options of {@link ConversionEngine}. */
export interface ConversionEngineOptions {
  /** Lazy policy: issue queued discards once this many pages are pending. Default 512 (2 MiB). */
  readonly lazyBatchPages?: number;
}

/** The conversion engine of one VM. */
export class ConversionEngine {
  readonly stats: ConversionStats = {
    conversions: 0,
    noopConversions: 0,
    toPrivate: 0,
    toShared: 0,
    pagesConverted: 0,
    punchHoles: 0,
    punchedPages: 0,
    sharedDiscards: 0,
    sharedDiscardedPages: 0,
    lazyQueuedPages: 0,
    lazyCancelledPages: 0,
    lazyBatches: 0,
    refused: 0,
  };
  private readonly vm: ConversionHost;
  private readonly lazyBatchPages: number;
  /** Lazy: private ranges whose shared copy may be dropped; shared ranges whose gmem may be punched. */
  private readonly pendingShared = new RangeMap<true>();
  private readonly pendingPrivate = new RangeMap<true>();
  private pendingPages = 0;

  constructor(vm: ConversionHost, options: ConversionEngineOptions = {}) {
    this.vm = vm;
    this.lazyBatchPages = options.lazyBatchPages ?? 512;
  }

  /**
   * Converts `[gpa, gpa + size)`. Every refusal comes before the arch's `beforeConvert` and changes
   * nothing: EINVAL for a bad range, for PRIVATE where the VM's attributes do not support it (with
   * in-place conversion on: kvm_supported_vm_mem_attributes is 0), for a range not covered by
   * guest_memfd slots on the in-place path; EAGAIN from guest_memfd for a page the host still
   * references (its validate-only `checkConvert`); then the arch's own refusal from `beforeConvert`.
   * A range already in the target state is a no-op (`'noop'`: no hook, no zap; userspace's discard
   * policy still runs, as QEMU discards after the ioctl whatever it did). The in-place path over
   * several slots converts slot by slot, as userspace issuing one ioctl per file would.
   */
  convert(req: ConversionRequest): ConversionOutcome {
    const op = req.path === 'attributes' ? 'KVM_SET_MEMORY_ATTRIBUTES' : 'KVM_SET_MEMORY_ATTRIBUTES2';
    const { gpa, size, toPrivate } = req;
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(size) || gpa < 0 || size <= 0 || gpa % PAGE !== 0 || size % PAGE !== 0) {
      this.stats.refused++;
      throw new KvmError('EINVAL', op, `[0x${gpa.toString(16)}, +0x${size.toString(16)}) is not a non-empty page-aligned range`);
    }
    const start = gpa / PAGE;
    const end = start + size / PAGE;
    const pieces = this.pieces(start, end);
    const attributes = toPrivate ? uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
    // The pieces whose ioctl changes something (the in-place path: one ioctl per file).
    let active: Piece[] = pieces;
    try {
      if (req.path === 'attributes') {
        // kvm_vm_ioctl_set_mem_attributes' validation, then kvm_vm_set_mem_attributes' "nothing to do".
        if (!this.vm.memslots.checkMemoryAttributes({ address: gpa, size, attributes })) active = [];
      } else {
        if (!this.vm.inPlace()) throw new KvmError('ENOTTY', op, 'in-place conversion (gmem_in_place_conversion) is off');
        let covered = start;
        for (const p of pieces) {
          if (p.start !== covered || this.vm.fileOf(p.slot) === undefined) break;
          covered = p.end;
        }
        if (covered !== end) throw new KvmError('EINVAL', op, `gfn 0x${covered.toString(16)} of the range is not in a guest_memfd memslot`);
        active = pieces.filter((p) => {
          const b = this.vm.fileOf(p.slot)!;
          const first = b.pgoff + (p.start - p.slot.baseGfn);
          return b.file.checkConvert(first, first + (p.end - p.start), toPrivate);
        });
      }
    } catch (e) {
      this.stats.refused++;
      throw e;
    }
    this.apply(req, pieces, active, toPrivate, attributes);
    if (req.path === 'attributes') {
      // The copy the range uses now must not be discarded by a request queued before the flip,
      // whatever this conversion's own policy.
      for (const p of pieces) this.cancelQueued(p, toPrivate);
      this.discard(pieces, toPrivate, req.discard ?? 'none');
    }
    return active.length === 0 ? 'noop' : 'converted';
  }

  /**
   * The arch hooks and the ioctl(s) of a validated conversion; `active` are the pieces it changes.
   * The ioctls are issued either way (userspace does not know; the kernel returns 0 for a range
   * already in the state and pays only the ioctl's entry), the hooks only around a change.
   */
  private apply(req: ConversionRequest, pieces: readonly Piece[], active: readonly Piece[], toPrivate: boolean, attributes: number): void {
    const arch = this.vm.arch;
    // One hook call per changing ioctl: the whole range on the attributes path (kvm_handle_gfn_range
    // over [start, end)), each changing file's share in place.
    const ranges =
      active.length === 0
        ? []
        : req.path === 'attributes'
          ? [{ start: (req.gpa / PAGE) as never, end: ((req.gpa + req.size) / PAGE) as never }]
          : active.map((p) => ({ start: p.start as never, end: p.end as never }));
    try {
      for (const r of ranges) arch?.beforeConvert?.(r, toPrivate);
      if (req.path === 'attributes') {
        this.vm.memslots.setMemoryAttributes({ address: req.gpa, size: req.size, attributes });
      } else {
        for (const p of pieces) {
          const b = this.vm.fileOf(p.slot)!;
          const offset = (b.pgoff + (p.start - p.slot.baseGfn)) * PAGE;
          b.file.setMemoryAttributes2({ offset, size: (p.end - p.start) * PAGE, attributes });
        }
      }
    } catch (e) {
      this.stats.refused++;
      throw e;
    }
    if (active.length === 0) {
      this.stats.noopConversions++;
      return;
    }
    for (const r of ranges) arch?.afterConvert?.(r, toPrivate);
    let pages = req.size / PAGE;
    if (req.path === 'in-place') {
      pages = 0;
      for (const p of active) pages += p.end - p.start;
    }
    this.stats.conversions++;
    if (toPrivate) this.stats.toPrivate++;
    else this.stats.toShared++;
    this.stats.pagesConverted += pages;
    const sim = this.vm.sim;
    if (sim.trace.enabled) sim.trace.emit('vm.convert', { gfn: req.gpa / PAGE, npages: pages, private: toPrivate, path: req.path });
  }

  /**
   * Drops what backs `[gpa, gpa + size)` without changing its shareability: the guest gave the
   * range back (pKVM MEM_RELINQUISH, a balloon). Both copies go, as a VMM frees a page the guest no
   * longer uses: fallocate(PUNCH_HOLE) on guest_memfd (which zaps the mappings and, through
   * kvm_arch_gmem_invalidate, tells the arch) and madvise(DONTNEED) on the shared copy. Queued lazy
   * discards of the range are issued by this one. EINVAL for a range that is not page-aligned, with
   * nothing changed; gfns outside any memslot are skipped. Returns the pages freed.
   */
  discardRange(gpa: number, size: number): number {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(size) || gpa < 0 || size <= 0 || gpa % PAGE !== 0 || size % PAGE !== 0) {
      throw new KvmError('EINVAL', 'discard', `[0x${gpa.toString(16)}, +0x${size.toString(16)}) is not a non-empty page-aligned range`);
    }
    const pieces = this.pieces(gpa / PAGE, (gpa + size) / PAGE);
    for (const p of pieces) {
      this.cancelQueued(p, true);
      this.cancelQueued(p, false);
    }
    return this.punchPrivate(pieces) + this.discardShared(pieces);
  }

  /** Issues every queued lazy discard now; returns the pages discarded. */
  flushDiscards(): number {
    let pages = 0;
    const shared = [...this.pendingShared.runs()];
    const priv = [...this.pendingPrivate.runs()];
    this.pendingShared.clearAll();
    this.pendingPrivate.clearAll();
    this.pendingPages = 0;
    if (shared.length + priv.length === 0) return 0;
    this.stats.lazyBatches++;
    for (const r of shared) pages += this.discardShared(this.pieces(r.start, r.end));
    for (const r of priv) pages += this.punchPrivate(this.pieces(r.start, r.end));
    return pages;
  }

  /** Pages queued by the lazy policy and not yet discarded. */
  get pendingDiscardPages(): number {
    return this.pendingPages;
  }

  private pieces(start: number, end: number): Piece[] {
    const out: Piece[] = [];
    for (const slot of this.vm.memslots.slotsInRange(0, start, end)) {
      out.push({ slot, start: Math.max(start, slot.baseGfn), end: Math.min(end, slot.endGfn) });
    }
    return out;
  }

  private discard(pieces: readonly Piece[], toPrivate: boolean, policy: DiscardPolicy): void {
    switch (policy) {
      case 'none':
        return;
      case 'both':
        if (toPrivate) this.discardShared(pieces);
        else this.punchPrivate(pieces);
        return;
      case 'private-only':
        if (!toPrivate) this.punchPrivate(pieces);
        return;
      case 'lazy':
        for (const p of pieces) this.queue(p, toPrivate);
        if (this.pendingPages >= this.lazyBatchPages) this.flushDiscards();
        return;
    }
  }

  /** Takes `p` out of the queued discards of the side that `toPrivate` makes live again. */
  private cancelQueued(p: Piece, toPrivate: boolean): void {
    const cancel = toPrivate ? this.pendingPrivate : this.pendingShared;
    const cancelled = cancel.count(p.start, p.end);
    if (cancelled === 0) return;
    cancel.clear(p.start, p.end);
    this.pendingPages -= cancelled;
    this.stats.lazyCancelledPages += cancelled;
  }

  private queue(p: Piece, toPrivate: boolean): void {
    const add = toPrivate ? this.pendingShared : this.pendingPrivate;
    const already = add.count(p.start, p.end);
    add.set(p.start, p.end, true);
    this.pendingPages += p.end - p.start - already;
    this.stats.lazyQueuedPages += p.end - p.start - already;
  }

  /** ram_block_discard_range on the shared copy: madvise(DONTNEED) of hva-backed slots. */
  private discardShared(pieces: readonly Piece[]): number {
    let pages = 0;
    for (const p of pieces) {
      if (p.slot.gmem?.gmemOnly === true || p.slot.userspaceAddr === 0) continue;
      const hva = p.slot.userspaceAddr + (p.start - p.slot.baseGfn) * PAGE;
      const vma = this.vm.process.findVma(hva);
      if (vma === undefined || vma.file !== undefined) continue;
      this.stats.sharedDiscards++;
      this.vm.sim.charge('vm.discard_syscall');
      const n = this.vm.process.madvise(hva, (p.end - p.start) * PAGE, MADV.DONTNEED);
      this.stats.sharedDiscardedPages += n;
      pages += n;
    }
    return pages;
  }

  /** ram_block_discard_guest_memfd_range: fallocate(PUNCH_HOLE | KEEP_SIZE) on the slot's file. */
  private punchPrivate(pieces: readonly Piece[]): number {
    let pages = 0;
    for (const p of pieces) {
      const b = this.vm.fileOf(p.slot);
      if (b === undefined) continue;
      const offset = (b.pgoff + (p.start - p.slot.baseGfn)) * PAGE;
      const before = b.file.allocatedPages;
      this.stats.punchHoles++;
      this.vm.sim.charge('vm.discard_syscall');
      b.file.fallocate(uapi.FALLOC_FL_PUNCH_HOLE | uapi.FALLOC_FL_KEEP_SIZE, offset, (p.end - p.start) * PAGE);
      const n = before - b.file.allocatedPages;
      this.stats.punchedPages += n;
      pages += n;
    }
    return pages;
  }
}
