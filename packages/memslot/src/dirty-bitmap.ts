/**
 * A memslot's dirty bitmap (`slot->dirty_bitmap`), sparse: bit i ↔ gfn `base_gfn + i`, held as
 * runs of dirty pages in a RangeMap, so a 2^31-page slot costs nothing until pages are dirtied and
 * `KVM_DIRTY_LOG_INITIALLY_SET` is one run. The user-visible shape (`unsigned long *`, little
 * endian) is produced only when userspace asks for it.
 */
import { RangeMap } from '@cocokit/sdk';
import type { FrameRange } from '@cocokit/sdk';

/** @internal */
export class DirtyBitmap {
  private readonly bits = new RangeMap<true>();
  readonly npages: number;

  constructor(npages: number) {
    this.npages = npages;
  }

  /** `kvm_dirty_bitmap_bytes`: `ALIGN(npages, BITS_PER_LONG) / 8`. */
  get bytes(): number {
    return Math.ceil(this.npages / 64) * 8;
  }

  mark(rel: number): void {
    if (!this.bits.has(rel)) this.bits.set(rel, rel + 1, true);
  }

  test(rel: number): boolean {
    return this.bits.has(rel);
  }

  setAll(): void {
    this.bits.set(0, this.npages, true);
  }

  /** Dirty pages (relative) as runs. */
  runs(start = 0, end = this.npages): FrameRange[] {
    const out: FrameRange[] = [];
    for (const r of this.bits.runs(start, end)) out.push({ start: r.start, end: r.end });
    return out;
  }

  count(): number {
    return this.bits.count(0, this.npages);
  }

  clearRange(start: number, end: number): void {
    this.bits.clear(start, end);
  }

  /** Writes the bitmap (`unsigned long` array, little endian) into the first `bytes` bytes of `out`. */
  copyTo(out: Uint8Array): void {
    out.fill(0, 0, this.bytes);
    for (const r of this.bits.runs(0, this.npages)) setBits(out, r.start, r.end, 0);
  }

  /**
   * The part of `kvm_clear_dirty_log_protect` after validation: for each bit set in `user`
   * (bit i ↔ page `first + i`, `num` pages), clear it here; returns what really was cleared
   * (`mask &= atomic_long_fetch_andnot(mask, p)`), as relative runs.
   */
  clearMasked(first: number, num: number, user: Uint8Array): FrameRange[] {
    const cleared: FrameRange[] = [];
    // Rounded up to whole longs like the kernel's loop; bits past the slot's end are never dirty.
    const limit = Math.min(first + Math.ceil(num / 64) * 64, this.npages);
    for (const ur of userRuns(user, Math.ceil(num / 64) * 8)) {
      const s = first + ur.start;
      const e = Math.min(first + ur.end, limit);
      if (s >= e) continue;
      for (const r of this.bits.runs(s, e)) cleared.push({ start: r.start, end: r.end });
      this.bits.clear(s, e);
    }
    return coalesce(cleared);
  }

  checkInvariants(): void {
    this.bits.checkInvariants();
  }

  /** Whether any bit lies at or beyond `npages` (never, if the model is right). */
  hasBitsBeyondEnd(): boolean {
    return this.bits.firstWith(this.npages, Number.MAX_SAFE_INTEGER) !== undefined;
  }
}

/** Sets bits `[start, end)` (relative to `base`) of a little-endian bitmap. */
export function setBits(out: Uint8Array, start: number, end: number, base: number): void {
  let i = start - base;
  const stop = end - base;
  while (i < stop && i % 8 !== 0) {
    out[i >>> 3]! |= 1 << (i % 8);
    i++;
  }
  const fullEnd = stop - (stop % 8);
  if (i < fullEnd) {
    out.fill(0xff, i / 8, fullEnd / 8);
    i = fullEnd;
  }
  while (i < stop) {
    out[Math.floor(i / 8)]! |= 1 << (i % 8);
    i++;
  }
}

/** Runs of set bits in the first `nbytes` bytes of a little-endian bitmap. */
export function* userRuns(user: Uint8Array, nbytes: number): Generator<FrameRange> {
  let runStart = -1;
  for (let b = 0; b < nbytes; b++) {
    const byte = user[b] ?? 0;
    if (byte === 0xff) {
      if (runStart < 0) runStart = b * 8;
      continue;
    }
    if (byte === 0) {
      if (runStart >= 0) {
        yield { start: runStart, end: b * 8 };
        runStart = -1;
      }
      continue;
    }
    for (let k = 0; k < 8; k++) {
      const bit = b * 8 + k;
      if (byte & (1 << k)) {
        if (runStart < 0) runStart = bit;
      } else if (runStart >= 0) {
        yield { start: runStart, end: bit };
        runStart = -1;
      }
    }
  }
  if (runStart >= 0) yield { start: runStart, end: nbytes * 8 };
}

function coalesce(runs: FrameRange[]): FrameRange[] {
  const out: FrameRange[] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last !== undefined && last.end === r.start) out[out.length - 1] = { start: last.start, end: r.end };
    else out.push(r);
  }
  return out;
}
