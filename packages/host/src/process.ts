/**
 * Host process address spaces: VMAs over host virtual frames (anonymous and file-backed), a sparse
 * page table, mmap/munmap/mprotect with Linux's errnos (mm/mmap.c, mm/mprotect.c), page faults
 * that return signals as values, and GUP (mm/gup.c).
 *
 * Addresses at this API are byte addresses (`number`), page-aligned where Linux requires it;
 * inside, VMAs and page-table entries are keyed by host virtual frame (hfn). VMAs are a RangeMap
 * whose values are distinct objects (so two VMAs never coalesce; adjacent compatible VMAs are not
 * merged as vma_merge would, which only changes how many there are). The page table is a RangeMap
 * whose value is `pfn - hfn`, so a contiguous mapping (a 1 GiB folio, or pages faulted in order
 * from one contiguous block) is one run.
 *
 * Anonymous pages are allocated on first touch, zero-filled, purpose `'anon'`
 * (do_anonymous_page). File pages come from the file's `fault`; mapping one takes a reference and
 * unmapping drops it. A write to a file page in a MAP_PRIVATE mapping copies it to an anonymous
 * page (wp_page_copy). Page-table pages themselves are not allocated by the model.
 */
import { KvmError, ModelInvariantError, PAGE_SIZE, RangeMap, hfn as toHfn, pgoff as toPgoff, pfn as toPfn } from '@cocokit/sdk';
import type { Hfn, HostFault, Pfn, PgOff } from '@cocokit/sdk';
import type { HostCostName } from './costs.js';
import { processFault } from './fault.js';
import type { HostAccessResult, ProcessFault } from './fault.js';
import type { FileProvider } from './file.js';
import type { Host } from './host.js';

/** Memory protection bits (include/uapi/asm-generic/mman-common.h). */
export const PROT = { NONE: 0x0, READ: 0x1, WRITE: 0x2, EXEC: 0x4 } as const;

/** mmap flags (include/uapi/asm-generic/mman-common.h, mman.h), with Linux's values. */
export const MAP = {
  SHARED: 0x01,
  PRIVATE: 0x02,
  SHARED_VALIDATE: 0x03,
  FIXED: 0x10,
  ANONYMOUS: 0x20,
  POPULATE: 0x8000,
  FIXED_NOREPLACE: 0x100000,
} as const;

/** madvise advice values the model implements (include/uapi/asm-generic/mman-common.h). */
export const MADV = {
  /** Drop the pages: anonymous memory reads as zeros afterwards, file pages are re-read from the file. */
  DONTNEED: 4,
} as const;

/** Top of the user address space (x86-64 with 4-level paging: 128 TiB, TASK_SIZE_MAX rounded). */
export const TASK_SIZE = 2 ** 47;
/** Lowest address mmap may use (vm.mmap_min_addr default, 64 KiB). */
export const MMAP_MIN_ADDR = 0x10000;
/** Where the top-down search for free address space starts (TASK_SIZE less a 128 MiB stack gap, no randomisation). */
export const MMAP_BASE = TASK_SIZE - 2 ** 27;

const TASK_FRAMES = TASK_SIZE / PAGE_SIZE;
const MIN_FRAME = MMAP_MIN_ADDR / PAGE_SIZE;
const BASE_FRAME = MMAP_BASE / PAGE_SIZE;

/** A virtual memory area: `[start, end)` in host virtual frames, with one protection and backing. */
export interface Vma {
  /** The process whose address space holds it. */
  readonly process: HostProcess;
  readonly start: Hfn;
  readonly end: Hfn;
  /** PROT_* bits. */
  readonly prot: number;
  /** MAP_SHARED (VM_SHARED); false for MAP_PRIVATE. */
  readonly shared: boolean;
  /** The mapped file, or `undefined` for anonymous memory. */
  readonly file: FileProvider | undefined;
  /** File page of `start` (vm_pgoff); 0 for anonymous memory. */
  readonly pgoff: PgOff;
}

/** Arguments of {@link HostProcess.mmap}, as the syscall takes them. */
export interface MmapArgs {
  /** Hint, or the exact address with MAP_FIXED / MAP_FIXED_NOREPLACE. */
  readonly addr?: number;
  /** Bytes; rounded up to whole pages. */
  readonly length: number;
  /** PROT_* bits. */
  readonly prot: number;
  /** MAP_* bits: exactly one of MAP_SHARED, MAP_PRIVATE (or MAP_SHARED_VALIDATE), plus modifiers. */
  readonly flags: number;
  /** The file to map (ignored with MAP_ANONYMOUS, as Linux ignores the fd). */
  readonly file?: FileProvider;
  /** Byte offset into the file; page-aligned. */
  readonly offset?: number;
}

/** Options of {@link HostProcess.gup}. */
export interface GupOptions {
  /** FOLL_WRITE: the pages will be written (breaks copy-on-write; needs a writable VMA). */
  readonly write?: boolean;
  /** FOLL_LONGTERM: a long-term pin (counted by `pinCount`), rather than a short reference. */
  readonly longterm?: boolean;
}

/** One run of the page table, as the invariant checker reads it. */
export interface MappedRun {
  readonly hfn: Hfn;
  readonly pfn: Pfn;
  readonly npages: number;
  /** An anonymous page owned by the process (freed on unmap), rather than a file page it holds a reference on. */
  readonly anon: boolean;
}

/** What a process needs from its host beyond the public API. Internal: built by the host. */
/**
 * A secondary MMU that mirrors this process's page tables (KVM, for hva-backed memslots): told
 * before and after any change that drops or replaces a present PTE, with user byte addresses
 * (struct mmu_notifier_ops' invalidate_range_start/end, include/linux/mmu_notifier.h).
 */
export interface MmuNotifier {
  invalidateRangeStart(start: number, end: number): void;
  invalidateRangeEnd(start: number, end: number): void;
}

export interface ProcessKernel {
  readonly host: Host;
  charge(name: HostCostName, units: number): void;
  rmapAdd(vma: Vma): void;
  rmapRemove(vma: Vma): void;
  /**
   * Runs `f` as one address-space operation: files whose last VMA went during it get their
   * `release` hook once it is over (when no VMA maps them any more).
   */
  mmOp<T>(f: () => T): T;
  checkAccess(pfn: Pfn, write: boolean): 'ok' | HostFault;
  exited(pid: number): void;
}

interface Pte {
  /** pfn - hfn. */
  readonly delta: number;
  readonly anon: boolean;
}

const samePte = (a: Pte, b: Pte): boolean => a.delta === b.delta && a.anon === b.anon;

/**
 * A host process: an address space of VMAs and its page table. Create one with
 * `host.createProcess(name)`.
 *
 * @example
 * const vmm = host.createProcess('vmm');
 * const a = vmm.mmap({ length: 2 << 20, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
 * vmm.write(a, new Uint8Array([1, 2, 3]));   // { ok: true }: page allocated on first touch
 * vmm.read(a + (4 << 20), 1);                 // { ok: false, signal: 'SIGSEGV', ... }
 */
export class HostProcess {
  private readonly vmas = new RangeMap<Vma>();
  private readonly pt = new RangeMap<Pte>({ equals: samePte });
  private live = true;
  private readonly notifiers: MmuNotifier[] = [];

  /** Process id, unique per host. */
  readonly pid: number;
  /** A name for traces. */
  readonly name: string;
  private readonly kernel: ProcessKernel;

  /** Use `host.createProcess`. */
  constructor(pid: number, name: string, kernel: ProcessKernel) {
    this.pid = pid;
    this.name = name;
    this.kernel = kernel;
  }

  /**
   * Registers a secondary MMU (mmu_notifier_register): from now on it hears of every change that
   * drops or replaces a mapped page, before and after it. Returns the function that unregisters it.
   */
  addMmuNotifier(notifier: MmuNotifier): () => void {
    this.notifiers.push(notifier);
    return () => {
      const i = this.notifiers.indexOf(notifier);
      if (i >= 0) this.notifiers.splice(i, 1);
    };
  }

  /** Runs `change` between invalidate_range_start and _end for the frames `[start, end)`. */
  private invalidating<T>(start: number, end: number, change: () => T): T {
    if (this.notifiers.length === 0) return change();
    const [a, b] = [start * PAGE_SIZE, end * PAGE_SIZE];
    for (const n of this.notifiers) n.invalidateRangeStart(a, b);
    try {
      return change();
    } finally {
      for (const n of this.notifiers) n.invalidateRangeEnd(a, b);
    }
  }

  /** Whether the process has not exited. */
  get alive(): boolean {
    return this.live;
  }

  /** Runs stored by the VMAs and the page table (the model's memory for this process). */
  get runCount(): number {
    return this.vmas.runCount + this.pt.runCount;
  }

  /** The VMAs, in address order. */
  vmaList(): Vma[] {
    const out: Vma[] = [];
    for (const r of this.vmas.runs()) out.push(r.value);
    return out;
  }

  /** The VMA containing byte address `addr`, or `undefined`. */
  findVma(addr: number): Vma | undefined {
    if (!Number.isSafeInteger(addr) || addr < 0) return undefined;
    return this.vmas.get(Math.floor(addr / PAGE_SIZE));
  }

  /** Whether `vma` is one of this process's current VMAs (the reverse map's consistency check). */
  hasVma(vma: Vma): boolean {
    return this.vmas.get(vma.start) === vma;
  }

  /** The page currently mapped at `addr` (no fault is taken), or `undefined`. */
  pfnAt(addr: number): Pfn | undefined {
    if (!Number.isSafeInteger(addr) || addr < 0) return undefined;
    const h = Math.floor(addr / PAGE_SIZE);
    const pte = this.pt.get(h);
    return pte === undefined ? undefined : toPfn(h + pte.delta);
  }

  /** Pages currently mapped in the page table (resident set size, in pages). */
  residentPages(): number {
    return this.pt.count(0, TASK_FRAMES);
  }

  /** The page table's runs (for invariant checks and statistics). */
  *mappedRuns(): IterableIterator<MappedRun> {
    for (const r of this.pt.runs()) {
      yield { hfn: toHfn(r.start), pfn: toPfn(r.start + r.value.delta), npages: r.end - r.start, anon: r.value.anon };
    }
  }

  // ---------------------------------------------------------------------------------------------
  // mmap / munmap / mprotect

  /**
   * Maps memory (do_mmap) and returns its byte address. Refusals, checked before anything changes:
   * EINVAL for length 0, an unaligned offset or MAP_FIXED address, neither or both of
   * MAP_SHARED/MAP_PRIVATE; EBADF without MAP_ANONYMOUS and without a file; EACCES for a shared
   * writable mapping of a file opened read-only; ENOMEM when the range leaves the user address
   * space or no gap is large enough; EPERM below mmap_min_addr; EEXIST for MAP_FIXED_NOREPLACE
   * over an existing mapping; whatever the file's `mmap` throws (ENODEV, EINVAL, EPERM...).
   * MAP_FIXED replaces what was mapped there. Without MAP_FIXED the address is the hint if that
   * range is free, else the highest free gap below {@link MMAP_BASE} (top-down, as
   * arch_get_unmapped_area_topdown, without randomisation).
   */
  mmap(args: MmapArgs): number {
    const op = 'mmap';
    this.checkAlive(op);
    const { length, prot, flags } = args;
    if (!Number.isSafeInteger(length) || length <= 0) throw new KvmError('EINVAL', op, `length ${length} is not a positive byte count`);
    if (!Number.isInteger(prot) || prot < 0 || (prot & ~(PROT.READ | PROT.WRITE | PROT.EXEC)) !== 0) {
      throw new KvmError('EINVAL', op, `prot 0x${prot.toString(16)} has unknown bits`);
    }
    if (!Number.isInteger(flags) || flags < 0) throw new KvmError('EINVAL', op, `flags ${flags} are not a bit mask`);
    const type = flags & MAP.SHARED_VALIDATE;
    if (type === 0) throw new KvmError('EINVAL', op, 'flags name neither MAP_SHARED nor MAP_PRIVATE');
    const shared = type !== MAP.PRIVATE;
    const anonymous = (flags & MAP.ANONYMOUS) !== 0;
    const fixed = (flags & (MAP.FIXED | MAP.FIXED_NOREPLACE)) !== 0;
    const offset = args.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % PAGE_SIZE !== 0) {
      throw new KvmError('EINVAL', op, `offset ${offset} is not a page-aligned byte offset`);
    }
    const file = anonymous ? undefined : args.file;
    if (!anonymous && file === undefined) throw new KvmError('EBADF', op, 'no file given and MAP_ANONYMOUS not set');
    // Length is rounded up to pages; a length that overflows the address space is ENOMEM (mm/mmap.c: `if (!len) return -ENOMEM` after PAGE_ALIGN).
    const npages = Math.ceil(length / PAGE_SIZE);
    if (npages > TASK_FRAMES) throw new KvmError('ENOMEM', op, `length ${length} exceeds the user address space`);

    let start: number;
    if (fixed) {
      const addr = args.addr ?? 0;
      if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) {
        throw new KvmError('EINVAL', op, `MAP_FIXED address ${addr} is not page aligned`);
      }
      start = addr / PAGE_SIZE;
      if (start + npages > TASK_FRAMES) throw new KvmError('ENOMEM', op, `[${addr}, +${length}) leaves the user address space`);
      if (start < MIN_FRAME) throw new KvmError('EPERM', op, `address ${addr} is below mmap_min_addr (${MMAP_MIN_ADDR})`);
      if ((flags & MAP.FIXED_NOREPLACE) !== 0 && (flags & MAP.FIXED) === 0 && !this.vmas.isUniform(start, start + npages, undefined)) {
        throw new KvmError('EEXIST', op, `MAP_FIXED_NOREPLACE: [${addr}, +${length}) overlaps an existing mapping`);
      }
    } else {
      start = this.unmappedArea(args.addr, npages);
    }
    if (file !== undefined && shared && (prot & PROT.WRITE) !== 0 && file.writable === false) {
      throw new KvmError('EACCES', op, `${file.name} is not open for writing, so it cannot be mapped shared and writable`);
    }
    const pgoff = toPgoff(offset / PAGE_SIZE);
    // The file's mmap runs before anything is replaced, so its refusal leaves the old mappings.
    file?.mmap?.({ pid: this.pid, addr: start * PAGE_SIZE, length: npages * PAGE_SIZE, prot, shared, pgoff });

    const vma: Vma = { process: this, start: toHfn(start), end: toHfn(start + npages), prot, shared, file, pgoff };
    this.kernel.mmOp(() => {
      if (fixed) this.unmapFrames(start, start + npages);
      this.insertVma(vma);
    });
    const sim = this.kernel.host.sim;
    if (sim?.trace.enabled) {
      sim.trace.emit('host.mmap', { pid: this.pid, hva: start * PAGE_SIZE, length: npages * PAGE_SIZE, prot, flags, file: file?.name ?? null });
    }
    if ((flags & MAP.POPULATE) !== 0) {
      // populate_vma_page_range: write-fault writable private mappings to break COW now, read-fault the rest.
      const write = (prot & PROT.WRITE) !== 0 && !shared;
      for (let h = start; h < start + npages; h++) this.faultIn(h, write, h * PAGE_SIZE);
    }
    return start * PAGE_SIZE;
  }

  /**
   * Unmaps `[addr, addr + length)` (do_munmap), splitting VMAs that straddle its edges. Anonymous
   * pages are freed (deferred while pinned), file pages have their reference dropped. Unmapping
   * a range with nothing mapped is fine. EINVAL for an unaligned address, length 0, or a range
   * leaving the user address space.
   */
  munmap(addr: number, length: number): void {
    const op = 'munmap';
    this.checkAlive(op);
    const [start, end] = this.checkUserRange(addr, length, op);
    const pages = this.kernel.mmOp(() => this.unmapFrames(start, end));
    const sim = this.kernel.host.sim;
    if (sim?.trace.enabled) sim.trace.emit('host.munmap', { pid: this.pid, hva: addr, length: (end - start) * PAGE_SIZE, pages });
  }

  /**
   * madvise(addr, length, MADV_DONTNEED) (zap_page_range_single): drops the PTEs of the range, so
   * anonymous pages are freed (deferred while pinned) and later reads see zeros; file pages lose
   * this mapping's reference. The VMAs stay. This is how QEMU discards shared guest memory backed
   * by anonymous memory on a conversion to private (ram_block_discard_range). Secondary MMUs are
   * notified. EINVAL for an unaligned address, an unknown advice or a range outside the user
   * address space; ENOMEM when part of the range is not mapped. Returns the pages dropped.
   */
  madvise(addr: number, length: number, advice: number): number {
    const op = 'madvise';
    this.checkAlive(op);
    if (advice !== MADV.DONTNEED) throw new KvmError('EINVAL', op, `advice ${advice} is not modelled (only MADV_DONTNEED)`);
    const [start, end] = this.checkUserRange(addr, length, op);
    const hole = this.vmas.firstWithout(start, end);
    if (hole !== undefined) throw new KvmError('ENOMEM', op, `address ${hole * PAGE_SIZE} in the range is not mapped`);
    const pages = this.kernel.mmOp(() => this.zapPtes(start, end, true));
    const sim = this.kernel.host.sim;
    if (sim?.trace.enabled) sim.trace.emit('host.madvise', { pid: this.pid, hva: addr, length: (end - start) * PAGE_SIZE, advice, pages });
    return pages;
  }

  /**
   * Changes the protection of `[addr, addr + length)` (mprotect), splitting VMAs at its edges.
   * ENOMEM when part of the range is not mapped; EACCES when it would make a shared mapping of a
   * read-only file writable; EINVAL for an unaligned address or unknown prot bits.
   */
  mprotect(addr: number, length: number, prot: number): void {
    const op = 'mprotect';
    this.checkAlive(op);
    if (!Number.isInteger(prot) || prot < 0 || (prot & ~(PROT.READ | PROT.WRITE | PROT.EXEC)) !== 0) {
      throw new KvmError('EINVAL', op, `prot 0x${prot.toString(16)} has unknown bits`);
    }
    const [start, end] = this.checkUserRange(addr, length, op);
    const hole = this.vmas.firstWithout(start, end);
    if (hole !== undefined) throw new KvmError('ENOMEM', op, `address ${hole * PAGE_SIZE} in the range is not mapped`);
    const affected = this.vmasIn(start, end);
    for (const v of affected) {
      if (v.file !== undefined && v.shared && (prot & PROT.WRITE) !== 0 && v.file.writable === false) {
        throw new KvmError('EACCES', op, `${v.file.name} is not open for writing`);
      }
    }
    // change_protection notifies secondary MMUs when it changes mapped PTEs (MMU_NOTIFY_PROTECTION_VMA).
    const mapped = this.pt.firstWith(start, end) !== undefined && affected.some((v) => v.prot !== prot);
    const change = () =>
      this.kernel.mmOp(() => {
        for (const v of affected) {
          this.splitVmaAt(v, start, end);
          const inner = this.vmasIn(start, end);
          for (const piece of inner) {
            if (piece.prot === prot) continue;
            this.replaceVma(piece, { ...piece, prot });
          }
        }
      });
    if (mapped) this.invalidating(start, end, change);
    else change();
    this.kernel.charge('host.tlb_flush', 1);
  }

  /** Unmaps everything and marks the process dead (exit_mmap); pinned anonymous pages survive until unpinned. */
  exit(): void {
    if (!this.live) return;
    this.kernel.mmOp(() => this.unmapFrames(0, TASK_FRAMES));
    this.live = false;
    this.kernel.exited(this.pid);
  }

  // ---------------------------------------------------------------------------------------------
  // User accesses

  /**
   * Reads `length` bytes at `addr`, faulting pages in as a user load would. Returns the data, or
   * the first fault: SIGSEGV outside any VMA or without read permission, SIGBUS when the file
   * refuses the page, or whatever an arch host-access check answers.
   */
  read(addr: number, length: number): HostAccessResult {
    const out = new Uint8Array(Math.max(0, Number.isSafeInteger(length) ? length : 0));
    const r = this.access(addr, length, false, 'read', (p, off, at, n) => {
      out.set(this.kernel.host.readBytes(p, off, n), at);
    });
    return r.ok ? { ok: true, data: out } : r;
  }

  /** Writes `data` at `addr`, faulting pages in as a user store would; returns ok or the first fault. */
  write(addr: number, data: Uint8Array): HostAccessResult {
    return this.access(addr, data.length, true, 'write', (p, off, at, n) => {
      this.kernel.host.writeBytes(p, off, data.subarray(at, at + n));
    });
  }

  /**
   * Writes whole tagged pages: page `i` of `[addr, addr + npages pages)` gets `tag + i` (or `tag`
   * with `sequential: false`). `addr` must be page-aligned (EINVAL). For large workloads: no
   * bytes are stored.
   */
  writeTag(addr: number, npages: number, tag: bigint, options: { readonly sequential?: boolean } = {}): HostAccessResult {
    if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) throw new KvmError('EINVAL', 'writeTag', `address ${addr} is not page aligned`);
    const seq = options.sequential ?? true;
    let i = 0n;
    return this.access(addr, npages * PAGE_SIZE, true, 'writeTag', (p) => {
      this.kernel.host.writeTag(p, seq ? tag + i : tag);
      i++;
    });
  }

  /** Faults `[addr, addr + length)` in for `access` without transferring data (a user touch). */
  touch(addr: number, length: number, access: 'read' | 'write'): HostAccessResult {
    return this.access(addr, length, access === 'write', 'touch', () => undefined);
  }

  // ---------------------------------------------------------------------------------------------
  // GUP

  /**
   * Pins `npages` pages from `addr` (rounded down to a page) like pin_user_pages / get_user_pages:
   * faults them in, then raises each page's refcount (and its pin count with `longterm`). Returns
   * their pfns. EFAULT, with no reference taken, when a page has no VMA, lacks the permission, is
   * refused by its file (`gupAllowed`), or faults; pages faulted in before the failure stay mapped,
   * as in Linux. EINVAL for a malformed address or count.
   */
  gup(addr: number, npages: number, options: GupOptions = {}): Pfn[] {
    const op = options.longterm === true ? 'pin_user_pages' : 'get_user_pages';
    this.checkAlive(op);
    if (!Number.isSafeInteger(addr) || addr < 0) throw new KvmError('EINVAL', op, `address ${addr} is not a byte address`);
    if (!Number.isSafeInteger(npages) || npages <= 0) throw new KvmError('EINVAL', op, `npages ${npages} is not a positive count`);
    const write = options.write === true;
    const longterm = options.longterm === true;
    const first = Math.floor(addr / PAGE_SIZE);
    if (first + npages > TASK_FRAMES) throw new KvmError('EFAULT', op, 'the range leaves the user address space');
    // check_vma_flags for every page first, so a refusal there takes nothing.
    for (let h = first; h < first + npages; h++) {
      const vma = this.vmas.get(h);
      if (vma === undefined) throw new KvmError('EFAULT', op, `address ${h * PAGE_SIZE} is not mapped`);
      if (write ? (vma.prot & PROT.WRITE) === 0 : (vma.prot & (PROT.READ | PROT.WRITE)) === 0) {
        throw new KvmError('EFAULT', op, `the vma at ${h * PAGE_SIZE} does not allow ${write ? 'writing' : 'reading'}`);
      }
      if (vma.file?.gupAllowed !== undefined) {
        const index = toPgoff(vma.pgoff + (h - vma.start));
        if (!vma.file.gupAllowed(index, { write, longterm })) {
          throw new KvmError('EFAULT', op, `${vma.file.name} refuses to have page ${index} pinned`);
        }
      }
    }
    const pfns: Pfn[] = [];
    for (let h = first; h < first + npages; h++) {
      const r = this.faultIn(h, write, h * PAGE_SIZE);
      if (typeof r !== 'number') throw new KvmError('EFAULT', op, `faulting in ${h * PAGE_SIZE}: ${r.signal} (${r.reason})`);
      pfns.push(toPfn(r));
    }
    const host = this.kernel.host;
    forEachContiguous(pfns, (p, n) => (longterm ? host.pinPages(p, n) : host.getPages(p, n)));
    this.kernel.charge('host.gup_page', npages);
    const sim = host.sim;
    if (sim?.trace.enabled) sim.trace.emit('host.gup', { pid: this.pid, hva: first * PAGE_SIZE, npages, longterm, op: 'pin' });
    return pfns;
  }

  /** Releases what {@link HostProcess.gup} took (unpin_user_pages / put_page), with the same `longterm`. */
  unpin(pfns: readonly Pfn[], options: { readonly longterm?: boolean } = {}): void {
    const host = this.kernel.host;
    forEachContiguous(pfns, (p, n) => (options.longterm === true ? host.unpinPages(p, n) : host.putPages(p, n)));
    this.kernel.charge('host.gup_page', pfns.length);
    const sim = host.sim;
    if (sim?.trace.enabled) sim.trace.emit('host.gup', { pid: this.pid, hva: -1, npages: pfns.length, longterm: options.longterm === true, op: 'unpin' });
  }

  // ---------------------------------------------------------------------------------------------
  // Called by the host

  /**
   * Zaps this process's file PTEs of `vma` for file pages `[startIndex, endIndex)` (the per-VMA
   * step of unmap_mapping_range). Internal: the host calls it for every VMA of the file.
   * Returns pages unmapped.
   */
  zapFileIndexRange(vma: Vma, startIndex: number, endIndex: number): number {
    const lo = Math.max(startIndex, vma.pgoff);
    const hi = Math.min(endIndex, vma.pgoff + (vma.end - vma.start));
    if (lo >= hi) return 0;
    const hStart = vma.start + (lo - vma.pgoff);
    return this.zapPtes(hStart, hStart + (hi - lo), false);
  }

  /** VMAs non-overlapping and well-formed; PTEs only inside VMAs; anonymous PTEs only in anonymous or private VMAs. */
  checkInvariants(): void {
    const fail = (detail: string): never => {
      throw new ModelInvariantError('host.process', `pid ${this.pid}: ${detail}`);
    };
    this.vmas.checkInvariants();
    this.pt.checkInvariants();
    for (const r of this.vmas.runs()) {
      const v = r.value;
      if (r.start !== v.start || r.end !== v.end) fail(`vma [${v.start}, ${v.end}) is stored as [${r.start}, ${r.end})`);
      if (v.process !== this) fail(`vma [${v.start}, ${v.end}) belongs to another process`);
    }
    for (const r of this.pt.runs()) {
      const hole = this.vmas.firstWithout(r.start, r.end);
      if (hole !== undefined) fail(`hfn ${hole} is mapped outside any vma`);
      if (!r.value.anon) {
        for (const v of this.vmasIn(r.start, r.end)) if (v.file === undefined) fail(`file pte in anonymous vma at hfn ${v.start}`);
      } else {
        for (const v of this.vmasIn(r.start, r.end)) if (v.file !== undefined && v.shared) fail(`anonymous pte in shared file vma at hfn ${v.start}`);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // internals

  private checkAlive(op: string): void {
    if (!this.live) throw new KvmError('ESRCH', op, `process ${this.pid} has exited`);
  }

  /** Validates an (addr, length) pair for munmap/mprotect and returns its frame range. */
  private checkUserRange(addr: number, length: number, op: string): [number, number] {
    if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) throw new KvmError('EINVAL', op, `address ${addr} is not page aligned`);
    if (!Number.isSafeInteger(length) || length <= 0) throw new KvmError('EINVAL', op, `length ${length} is not a positive byte count`);
    const start = addr / PAGE_SIZE;
    const end = start + Math.ceil(length / PAGE_SIZE);
    if (end > TASK_FRAMES) throw new KvmError('EINVAL', op, `[${addr}, +${length}) leaves the user address space`);
    return [start, end];
  }

  /** get_unmapped_area: the hint if free, else the highest gap below MMAP_BASE that fits (top-down). */
  private unmappedArea(hint: number | undefined, npages: number): number {
    if (hint !== undefined && Number.isSafeInteger(hint) && hint > 0) {
      const h = Math.ceil(hint / PAGE_SIZE);
      if (h >= MIN_FRAME && h + npages <= TASK_FRAMES && this.vmas.isUniform(h, h + npages, undefined)) return h;
    }
    let best = -1;
    let cursor = MIN_FRAME;
    for (const r of this.vmas.runs(MIN_FRAME, BASE_FRAME)) {
      if (r.start - cursor >= npages) best = r.start - npages;
      cursor = r.end;
    }
    if (BASE_FRAME - cursor >= npages) best = BASE_FRAME - npages;
    if (best < 0) throw new KvmError('ENOMEM', 'mmap', `no gap of ${npages} pages in the address space`);
    return best;
  }

  private insertVma(vma: Vma): void {
    this.vmas.set(vma.start, vma.end, vma);
    this.kernel.rmapAdd(vma);
  }

  private removeVma(vma: Vma): void {
    this.vmas.clear(vma.start, vma.end);
    this.kernel.rmapRemove(vma);
  }

  private replaceVma(old: Vma, next: Vma): void {
    this.removeVma(old);
    this.insertVma(next);
  }

  /** The distinct VMAs intersecting frames `[start, end)`, in order. */
  private vmasIn(start: number, end: number): Vma[] {
    const out: Vma[] = [];
    for (const r of this.vmas.runs(start, end)) out.push(r.value);
    return out;
  }

  /** Splits `vma` at `start` and `end` where they fall inside it (__split_vma). */
  private splitVmaAt(vma: Vma, start: number, end: number): void {
    const cuts = [start, end].filter((c) => c > vma.start && c < vma.end);
    if (cuts.length === 0) return;
    this.removeVma(vma);
    const edges = [vma.start as number, ...cuts, vma.end as number];
    for (let i = 0; i + 1 < edges.length; i++) {
      const s = edges[i]!;
      const e = edges[i + 1]!;
      this.insertVma({ ...vma, start: toHfn(s), end: toHfn(e), pgoff: toPgoff(vma.pgoff + (s - vma.start)) });
    }
  }

  /** Unmaps frames `[start, end)`: zaps PTEs, splits and removes VMAs. Returns pages unmapped. */
  private unmapFrames(start: number, end: number): number {
    const pages = this.zapPtes(start, end, true);
    for (const v of this.vmasIn(start, end)) {
      this.splitVmaAt(v, start, end);
    }
    for (const v of this.vmasIn(start, end)) this.removeVma(v);
    return pages;
  }

  /**
   * Clears the PTEs of `[start, end)`: anonymous pages are freed (when `anonToo`), file pages
   * have their reference put. One TLB flush if anything was mapped.
   */
  private zapPtes(start: number, end: number, anonToo: boolean): number {
    const runs: Array<{ start: number; end: number; value: Pte }> = [];
    for (const r of this.pt.runs(start, end)) if (anonToo || !r.value.anon) runs.push({ start: r.start, end: r.end, value: r.value });
    if (runs.length === 0) return 0;
    const first = runs[0]!.start;
    const last = runs[runs.length - 1]!.end;
    return this.invalidating(first, last, () => this.clearPtes(runs));
  }

  private clearPtes(runs: ReadonlyArray<{ start: number; end: number; value: Pte }>): number {
    const host = this.kernel.host;
    let pages = 0;
    for (const r of runs) {
      this.pt.clear(r.start, r.end);
      const p = r.start + r.value.delta;
      const n = r.end - r.start;
      if (r.value.anon) {
        for (let i = 0; i < n; i++) host.freePages(p + i, 0);
      } else {
        host.putPages(p, n);
      }
      pages += n;
    }
    this.kernel.charge('host.pte_zap', pages);
    this.kernel.charge('host.tlb_flush', 1);
    return pages;
  }

  /**
   * A user access to `[addr, addr + length)`: for each page, fault in and ask the arch hook, then
   * let `each(pfn, offsetInPage, offsetInData, bytes)` move the data.
   */
  private access(
    addr: number,
    length: number,
    write: boolean,
    op: string,
    each: (pfn: Pfn, offset: number, at: number, n: number) => void,
  ): HostAccessResult {
    if (!Number.isSafeInteger(addr) || addr < 0) throw new KvmError('EINVAL', op, `address ${addr} is not a byte address`);
    if (!Number.isSafeInteger(length) || length < 0) throw new KvmError('EINVAL', op, `length ${length} is not a byte count`);
    if (!this.live) return processFault('SIGSEGV', addr, 'the process has exited');
    const end = addr + length;
    let cur = addr;
    while (cur < end) {
      const h = Math.floor(cur / PAGE_SIZE);
      const off = cur - h * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, end - cur);
      const r = this.faultIn(h, write, cur);
      if (typeof r !== 'number') return r;
      const p = toPfn(r);
      const verdict = this.kernel.checkAccess(p, write);
      if (verdict !== 'ok') return processFault(verdict.signal, cur, verdict.reason, verdict.kind);
      each(p, off, cur - addr, n);
      cur += n;
    }
    return { ok: true };
  }

  /**
   * The page mapped at `h` for an access, faulting it in if needed (handle_mm_fault). Returns its
   * pfn or a fault value.
   */
  private faultIn(h: number, write: boolean, addr: number): number | ProcessFault {
    if (h >= TASK_FRAMES) return processFault('SIGSEGV', addr, 'SEGV_MAPERR: address beyond the user address space');
    const vma = this.vmas.get(h);
    if (vma === undefined) return this.signal('SIGSEGV', addr, write, 'SEGV_MAPERR: no vma at this address');
    const allowed = write ? (vma.prot & PROT.WRITE) !== 0 : (vma.prot & (PROT.READ | PROT.WRITE)) !== 0;
    if (!allowed) return this.signal('SIGSEGV', addr, write, `SEGV_ACCERR: the vma does not allow ${write ? 'writing' : 'reading'}`);
    const pte = this.pt.get(h);
    const cow = pte !== undefined && write && !pte.anon && !vma.shared;
    if (pte !== undefined && !cow) return h + pte.delta;

    const host = this.kernel.host;
    this.kernel.charge('host.page_fault', 1);
    if (vma.file === undefined) {
      // do_anonymous_page: a zeroed page on first touch (MAP_SHARED|MAP_ANONYMOUS is shmem in Linux; modelled the same).
      const p = this.allocAnon(addr, write);
      if (typeof p !== 'number') return p;
      this.pt.set(h, h + 1, { delta: p - h, anon: true });
      return this.resolved(addr, write, p);
    }
    let src: number;
    if (pte !== undefined) {
      src = h + pte.delta;
    } else {
      const index = toPgoff(vma.pgoff + (h - vma.start));
      const r = vma.file.fault(index, { write: write && vma.shared, shared: vma.shared });
      if ('signal' in r) return this.signal('SIGBUS', addr, write, r.reason);
      src = r.pfn;
      if (vma.shared || !write) {
        host.getPages(src);
        this.pt.set(h, h + 1, { delta: src - h, anon: false });
        return this.resolved(addr, write, src);
      }
    }
    // Copy on write of a file page in a private mapping (wp_page_copy).
    const copy = this.allocAnon(addr, write, false);
    if (typeof copy !== 'number') return copy;
    host.copyPage(copy, src);
    // Breaking CoW replaces a present PTE: secondary MMUs must drop the old page first.
    this.invalidating(h, h + 1, () => {
      if (pte !== undefined) host.putPages(src);
      this.pt.set(h, h + 1, { delta: copy - h, anon: true });
    });
    return this.resolved(addr, write, copy);
  }

  private allocAnon(addr: number, write: boolean, zero = true): number | ProcessFault {
    const host = this.kernel.host;
    if (!host.buddy.canAlloc(0)) {
      // VM_FAULT_OOM: Linux would run the OOM killer; the model reports the fault instead.
      return this.signal('SIGBUS', addr, write, 'VM_FAULT_OOM: no free page for the fault');
    }
    return host.allocPages(0, 'anon', { zero });
  }

  private resolved(addr: number, write: boolean, p: number): number {
    const sim = this.kernel.host.sim;
    if (sim?.trace.enabled) sim.trace.emit('host.fault', { pid: this.pid, hva: addr, write, pfn: p, signal: null });
    return p;
  }

  private signal(signal: 'SIGSEGV' | 'SIGBUS', addr: number, write: boolean, reason: string): ProcessFault {
    const sim = this.kernel.host.sim;
    if (sim?.trace.enabled) sim.trace.emit('host.fault', { pid: this.pid, hva: addr, write, pfn: null, signal });
    return processFault(signal, addr, reason);
  }
}

/** Calls `f` once per run of consecutive pfns (a contiguous folio is one range operation). */
function forEachContiguous(pfns: readonly Pfn[], f: (start: number, n: number) => void): void {
  let i = 0;
  while (i < pfns.length) {
    const start = pfns[i]!;
    let n = 1;
    while (i + n < pfns.length && pfns[i + n] === start + n) n++;
    f(start, n);
    i += n;
  }
}
