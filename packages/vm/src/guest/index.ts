/**
 * `@cocokit/vm/guest`: arch-neutral guest behaviours built from guest actions, for composing guest
 * programs. Each is a generator to `yield*` from a program; each works on every VM type because
 * conversions and acceptance go through the VM type's guest kernel (`g.convert`, `g.accept`).
 *
 * ```ts
 * const program: GuestProgram = function* (g) {
 *   yield* firmwareBoot(g, { dmaGpa: 0x10_0000, transfers: 64 });
 *   yield* touchWorkingSet(g, { gpa: 0, size: 64 << 20, acceptChunk: 4 << 20, accesses: 4096 });
 * };
 * ```
 */
import type { GuestException } from '@cocokit/sdk';
import { isGuestException, type GuestContext, type GuestSteps } from '../guest-program.js';

const PAGE = 4096;

/** A guest behaviour failed in a way a real guest would panic on. */
export class GuestPanic extends Error {
  override readonly name = 'GuestPanic' as const;
}

/** Options of {@link firmwareBoot}. */
export interface FirmwareBootOptions {
  /** The first DMA page (page aligned, private at start). */
  readonly dmaGpa: number;
  /** How many DMA pages the firmware cycles through: OVMF uses one or two. Default 2. */
  readonly dmaPages?: 1 | 2;
  /** DMA transfers (each flips a page to shared and back). */
  readonly transfers: number;
  /** Guest work between transfers, ns (firmware code that touches no shared memory). Default 0. */
  readonly computeNs?: number;
}

/** What {@link firmwareBoot} did. */
export interface FirmwareBootResult {
  readonly transfers: number;
  readonly conversions: number;
}

/**
 * Seed 000's OVMF pattern: for every DMA transaction the firmware converts its one or two DMA
 * pages to shared, lets the device (the host) see them, and converts them back to private — two
 * conversions per transfer, each a round trip through KVM and userspace.
 *
 * On a VM without private memory (no memory encryption: the `default` type) the
 * firmware does the same transfers without converting, as OVMF's IoMmuDxe does when
 * `MemEncryptSevIsEnabled()`/`TdIsEnabled()` say no: the DMA pages are plain shared memory.
 */
export function* firmwareBoot(g: GuestContext, o: FirmwareBootOptions): GuestSteps<FirmwareBootResult> {
  const pages = o.dmaPages ?? 2;
  const encrypted = g.privateMem;
  let conversions = 0;
  for (let i = 0; i < o.transfers; i++) {
    const page = o.dmaGpa + (i % pages) * PAGE;
    if (encrypted) {
      const toShared = yield* g.convert(page, PAGE, false);
      if (!toShared.ok) throw new GuestPanic(`DMA page 0x${page.toString(16)} could not be shared: ${toShared.reason}`);
      conversions++;
    }
    // The device writes the buffer; the firmware reads the result out of the shared page.
    const w = yield* g.write(page, BigInt(i + 1), { shared: true });
    if (w !== undefined) throw new GuestPanic(`shared DMA write faulted: ${w.name}`);
    const r = yield* g.read(page, 8, { shared: true });
    if (isGuestException(r)) throw new GuestPanic(`shared DMA read faulted: ${r.name}`);
    if (encrypted) {
      const back = yield* g.convert(page, PAGE, true);
      if (!back.ok) throw new GuestPanic(`DMA page 0x${page.toString(16)} could not be made private again: ${back.reason}`);
      conversions++;
    }
    if (o.computeNs !== undefined && o.computeNs > 0) yield* g.compute(o.computeNs);
  }
  return { transfers: o.transfers, conversions };
}

/** Tracks which fixed-size chunks the guest has accepted (Linux's unaccepted-memory bitmap). */
export class AcceptedChunks {
  private readonly done = new Set<number>();
  readonly chunkBytes: number;
  constructor(chunkBytes: number) {
    this.chunkBytes = chunkBytes;
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < PAGE || chunkBytes % PAGE !== 0) throw new RangeError(`chunk ${chunkBytes} is not a positive multiple of 4096`);
  }
  /** The chunk base holding `gpa`. */
  chunkOf(gpa: number): number {
    return gpa - (gpa % this.chunkBytes);
  }
  has(gpa: number): boolean {
    return this.done.has(this.chunkOf(gpa));
  }
  add(gpa: number): void {
    this.done.add(this.chunkOf(gpa));
  }
  get size(): number {
    return this.done.size;
  }
}

/**
 * Accepts the chunk holding `gpa` unless already accepted (accept_memory on allocation). Returns
 * whether it accepted something now.
 */
export function* acceptChunk(g: GuestContext, accepted: AcceptedChunks, gpa: number): GuestSteps<boolean> {
  if (accepted.has(gpa)) return false;
  const base = accepted.chunkOf(gpa);
  const r = yield* g.accept(base, accepted.chunkBytes);
  if (!r.ok) throw new GuestPanic(`accepting [0x${base.toString(16)}, +0x${accepted.chunkBytes.toString(16)}) failed: ${r.reason}`);
  accepted.add(gpa);
  return true;
}

/** Options of {@link touchWorkingSet}. */
export interface TouchOptions {
  /** The working set, page aligned. */
  readonly gpa: number;
  readonly size: number;
  /** Accesses to make. Default: one per page. */
  readonly accesses?: number;
  /** `'sequential'` (default) walks the pages in order, wrapping; `'random'` picks uniformly. */
  readonly pattern?: 'sequential' | 'random';
  /** Writes (default) or reads. */
  readonly write?: boolean;
  /** Lazy acceptance in chunks of this many bytes (seed 003: 4 MiB on SNP). Default: none. */
  readonly acceptChunk?: number;
  /** Share the accepted set across behaviours. */
  readonly accepted?: AcceptedChunks;
  /** Guest work per access, ns. Default 0. */
  readonly computeNs?: number;
}

/** What {@link touchWorkingSet} did. */
export interface TouchResult {
  readonly accesses: number;
  /** Chunks accepted on first use. */
  readonly accepts: number;
  /** Exceptions taken (each answered by accepting the chunk, then retrying). */
  readonly exceptions: number;
}

/**
 * Touches a working set of private memory, accepting fixed chunks on first use when asked; an
 * exception meaning "not accepted" (TDX #VE, SNP #VC 0x404) is answered by accepting the chunk
 * and retrying, as the guest's handler would. Writes tag each page with its gfn.
 */
export function* touchWorkingSet(g: GuestContext, o: TouchOptions): GuestSteps<TouchResult> {
  const npages = Math.floor(o.size / PAGE);
  if (npages <= 0 || o.gpa % PAGE !== 0) throw new RangeError('the working set must be a page-aligned, non-empty range');
  const accesses = o.accesses ?? npages;
  const accepted = o.accepted ?? (o.acceptChunk !== undefined ? new AcceptedChunks(o.acceptChunk) : undefined);
  const write = o.write ?? true;
  let accepts = 0;
  let exceptions = 0;
  for (let i = 0; i < accesses; i++) {
    const page = o.pattern === 'random' ? g.rng.int(0, npages) : i % npages;
    const gpa = o.gpa + page * PAGE;
    if (accepted !== undefined && (yield* acceptChunk(g, accepted, gpa))) accepts++;
    for (let attempt = 0; ; attempt++) {
      const r: Uint8Array | GuestException | undefined = write ? yield* g.write(gpa, BigInt(gpa / PAGE)) : yield* g.read(gpa);
      if (!isGuestException(r)) break;
      exceptions++;
      if (!g.isUnaccepted(r) || attempt > 0) throw new GuestPanic(`${r.name} at 0x${gpa.toString(16)} (vector ${r.vector})`);
      const chunk = accepted ?? new AcceptedChunks(PAGE);
      const base = chunk.chunkOf(gpa);
      const ok = yield* g.accept(base, chunk.chunkBytes);
      if (!ok.ok) throw new GuestPanic(`accepting after ${r.name} failed: ${ok.reason}`);
      chunk.add(gpa);
      accepts++;
    }
    if (o.computeNs !== undefined && o.computeNs > 0) yield* g.compute(o.computeNs);
  }
  return { accesses, accepts, exceptions };
}

/** Options of {@link bounceBuffer}. */
export interface BounceBufferOptions {
  /** The swiotlb region (page aligned), converted to shared once. */
  readonly gpa: number;
  readonly size: number;
  /** Private buffers to bounce, page aligned; each transfer copies one page through a slot. */
  readonly bufferGpa: number;
  readonly transfers: number;
}

/** What {@link bounceBuffer} did. */
export interface BounceBufferResult {
  readonly transfers: number;
  readonly conversions: number;
}

/**
 * A swiotlb bounce buffer: the region is made shared once at boot (swiotlb_update_mem_attributes),
 * and each I/O copies a private page into the next shared slot (and back), so no conversion
 * happens per transfer — the behaviour Linux guests use to avoid OVMF's per-transfer flips.
 */
export function* bounceBuffer(g: GuestContext, o: BounceBufferOptions): GuestSteps<BounceBufferResult> {
  const slots = Math.floor(o.size / PAGE);
  if (slots <= 0) throw new RangeError('the bounce buffer needs at least one page');
  const shared = yield* g.convert(o.gpa, slots * PAGE, false);
  if (!shared.ok) throw new GuestPanic(`swiotlb region could not be shared: ${shared.reason}`);
  for (let i = 0; i < o.transfers; i++) {
    const slot = o.gpa + (i % slots) * PAGE;
    const src = yield* g.read(o.bufferGpa, 8);
    if (isGuestException(src)) throw new GuestPanic(`${src.name} reading the private buffer`);
    const w = yield* g.write(slot, src, { shared: true });
    if (w !== undefined) throw new GuestPanic(`${w.name} writing the bounce slot`);
  }
  return { transfers: o.transfers, conversions: 1 };
}
