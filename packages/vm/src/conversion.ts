/**
 * The conversion engine (issue 6): one engine behind both ways a range changes between private and
 * shared — the VM's memory attributes (KVM_SET_MEMORY_ATTRIBUTES, 6.18) and guest_memfd in-place
 * conversion (KVM_SET_MEMORY_ATTRIBUTES2 on the file, PROPOSED-CONV) — in the order the kernel and
 * QEMU take the steps: validate, arch `beforeConvert`, zap + store + mixed-range tracking (inside
 * memslot's / gmem's own ioctl, which invalidate the MMU), arch `afterConvert`, then userspace's
 * optional discard of the side no longer used (QEMU kvm_convert_memory: ram_block_discard_range for
 * the shared copy on to-private, ram_block_discard_guest_memfd_range on to-shared).
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
  conversions: number;
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
   * Converts `[gpa, gpa + size)`. Refusals (EINVAL for a bad range, a range not covered by
   * guest_memfd slots on the in-place path; the arch's refusal from `beforeConvert`; EAGAIN from
   * guest_memfd for a page the host still references) change nothing; the in-place path over
   * several slots converts slot by slot, as userspace issuing one ioctl per file would.
   */
  convert(req: ConversionRequest): void {
    const op = req.path === 'attributes' ? 'KVM_SET_MEMORY_ATTRIBUTES' : 'KVM_SET_MEMORY_ATTRIBUTES2';
    const { gpa, size, toPrivate } = req;
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(size) || gpa < 0 || size <= 0 || gpa % PAGE !== 0 || size % PAGE !== 0) {
      this.stats.refused++;
      throw new KvmError('EINVAL', op, `[0x${gpa.toString(16)}, +0x${size.toString(16)}) is not a non-empty page-aligned range`);
    }
    const start = gpa / PAGE;
    const end = start + size / PAGE;
    const pieces = this.pieces(start, end);
    if (req.path === 'in-place') {
      if (!this.vm.inPlace()) {
        this.stats.refused++;
        throw new KvmError('ENOTTY', op, 'in-place conversion (gmem_in_place_conversion) is off');
      }
      let covered = start;
      for (const p of pieces) {
        if (p.start !== covered || this.vm.fileOf(p.slot) === undefined) break;
        covered = p.end;
      }
      if (covered !== end) {
        this.stats.refused++;
        throw new KvmError('EINVAL', op, `gfn 0x${covered.toString(16)} of the range is not in a guest_memfd memslot`);
      }
    }
    const range = { start: start as never, end: end as never };
    const arch = this.vm.arch;
    try {
      arch?.beforeConvert?.(range, toPrivate);
    } catch (e) {
      this.stats.refused++;
      throw e;
    }
    try {
      if (req.path === 'attributes') {
        this.vm.memslots.setMemoryAttributes({ address: gpa, size, attributes: toPrivate ? uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0 });
      } else {
        for (const p of pieces) {
          const b = this.vm.fileOf(p.slot)!;
          const offset = (b.pgoff + (p.start - p.slot.baseGfn)) * PAGE;
          b.file.setMemoryAttributes2({ offset, size: (p.end - p.start) * PAGE, attributes: toPrivate ? uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0 });
        }
      }
    } catch (e) {
      this.stats.refused++;
      throw e;
    }
    arch?.afterConvert?.(range, toPrivate);
    this.stats.conversions++;
    if (toPrivate) this.stats.toPrivate++;
    else this.stats.toShared++;
    this.stats.pagesConverted += end - start;
    const sim = this.vm.sim;
    if (sim.trace.enabled) sim.trace.emit('vm.convert', { gfn: start, npages: end - start, private: toPrivate, path: req.path });
    if (req.path === 'attributes') {
      // The copy the range uses now must not be discarded by a request queued before the flip,
      // whatever this conversion's own policy.
      for (const p of pieces) this.cancelQueued(p, toPrivate);
      this.discard(pieces, toPrivate, req.discard ?? 'none');
    }
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
