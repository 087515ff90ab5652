/**
 * Units and addresses. Inside the model an address is a frame number (4 KiB pages) held in a plain
 * `number` with a zero-cost brand, so a guest frame cannot be passed where a host frame is wanted.
 * Numbers, not bigint: frame numbers stay far below 2^53, and bigint would cost the hot paths
 * several times over. Above 2^31 JavaScript's bitwise operators truncate to 32 bits, so everything
 * here is plain arithmetic.
 */
import { KvmError } from './errors.js';

declare const brand: unique symbol;
/** A value of type `T` that the type system tells apart from other `T`s by `Name`. */
export type Branded<T, Name extends string> = T & { readonly [brand]: Name };

/** A guest frame number (guest physical address >> 12). */
export type Gfn = Branded<number, 'Gfn'>;
/** A host physical frame number. */
export type Pfn = Branded<number, 'Pfn'>;
/** A page offset into a file (a guest_memfd or page-cache index). */
export type PgOff = Branded<number, 'PgOff'>;
/** A host virtual frame number (userspace address >> 12). */
export type Hfn = Branded<number, 'Hfn'>;

/** Brands a number as a {@link Gfn}. Costs nothing at run time. */
export const gfn = (n: number): Gfn => n as Gfn;
/** Brands a number as a {@link Pfn}. Costs nothing at run time. */
export const pfn = (n: number): Pfn => n as Pfn;
/** Brands a number as a {@link PgOff}. Costs nothing at run time. */
export const pgoff = (n: number): PgOff => n as PgOff;
/** Brands a number as an {@link Hfn}. Costs nothing at run time. */
export const hfn = (n: number): Hfn => n as Hfn;

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;

/** Page orders the model knows: 4 KiB, 2 MiB, 1 GiB. */
export const PG_ORDER = { '4K': 0, '2M': 9, '1G': 18 } as const;
export type PageOrder = (typeof PG_ORDER)[keyof typeof PG_ORDER];
/** Page orders in increasing size. */
export const PAGE_ORDERS: readonly PageOrder[] = [0, 9, 18];

/** Mapping levels as the arch contract counts them: 0 = 4K, 1 = 2M, 2 = 1G. */
export type MappingLevel = 0 | 1 | 2;
/** The page order a mapping level maps. */
export const levelToOrder = (level: MappingLevel): PageOrder => PAGE_ORDERS[level] as PageOrder;
/** The mapping level of a page order. */
export function orderToLevel(order: PageOrder): MappingLevel {
  return order === 0 ? 0 : order === 9 ? 1 : 2;
}

/** Largest byte address or size the model accepts: like an out-of-range u64, above it is EINVAL. */
export const MAX_BYTES = 2 ** 52;
/** Largest frame count: {@link MAX_BYTES} in frames. */
export const MAX_FRAMES = MAX_BYTES / PAGE_SIZE;

/** Frames in a page of `order` (2^order). */
export const pagesInOrder = (order: number): number => 2 ** order;

/** Whether `frame` is aligned to a page of `order`. */
export const isAligned = (frame: number, order: number): boolean => frame % 2 ** order === 0;
/** `frame` rounded down to a page of `order`. */
export const alignDown = (frame: number, order: number): number => {
  const n = 2 ** order;
  return frame - (frame % n);
};
/** `frame` rounded up to a page of `order`. */
export const alignUp = (frame: number, order: number): number => {
  const n = 2 ** order;
  const r = frame % n;
  return r === 0 ? frame : frame + (n - r);
};

/**
 * A byte quantity from the ioctl-shaped surface (`number | bigint`) as a safe number, or EINVAL:
 * non-integers, negatives and values above 2^52 are refused, as an out-of-range u64 would be.
 */
export function toByteCount(value: number | bigint, op: string, what: string): number {
  if (typeof value === 'bigint') {
    if (value < 0n || value > BigInt(MAX_BYTES)) {
      throw new KvmError('EINVAL', op, `${what} = ${value} is outside [0, 2^52]`);
    }
    return Number(value);
  }
  if (!Number.isSafeInteger(value)) {
    throw new KvmError('EINVAL', op, `${what} = ${value} is not an integer`);
  }
  if (value < 0 || value > MAX_BYTES) {
    throw new KvmError('EINVAL', op, `${what} = ${value} is outside [0, 2^52]`);
  }
  return value;
}

/** Bytes → frames for a page-aligned quantity; EINVAL when not an integer, negative, > 2^52 or unaligned. */
export function bytesToFrames(value: number | bigint, op: string, what = 'value'): number {
  const bytes = toByteCount(value, op, what);
  if (bytes % PAGE_SIZE !== 0) {
    throw new KvmError('EINVAL', op, `${what} = ${bytes} is not a multiple of ${PAGE_SIZE}`);
  }
  return bytes / PAGE_SIZE;
}

/** Bytes → the frame that contains the byte (for addresses that need not be aligned). */
export function bytesToFrameFloor(value: number | bigint, op: string, what = 'address'): number {
  return Math.floor(toByteCount(value, op, what) / PAGE_SIZE);
}

/** Bytes → frames, rounding up (for sizes that need not be aligned). */
export function bytesToFramesCeil(value: number | bigint, op: string, what = 'size'): number {
  return Math.ceil(toByteCount(value, op, what) / PAGE_SIZE);
}

/** Frames → bytes; EINVAL when `frames` is not an integer in [0, 2^40]. */
export function framesToBytes(frames: number, op = 'framesToBytes'): number {
  if (!Number.isSafeInteger(frames) || frames < 0 || frames > MAX_FRAMES) {
    throw new KvmError('EINVAL', op, `frame count ${frames} is not an integer in [0, 2^40]`);
  }
  return frames * PAGE_SIZE;
}

/** A half-open range of frames, `[start, end)`. */
export interface FrameRange<F extends number = number> {
  readonly start: F;
  readonly end: F;
}

/** Frames in `r`. */
export const rangeLength = (r: FrameRange): number => r.end - r.start;
/** Whether `r` holds no frame. */
export const rangeIsEmpty = (r: FrameRange): boolean => r.end <= r.start;
/** Whether `r` contains `frame`. */
export const rangeContains = (r: FrameRange, frame: number): boolean => frame >= r.start && frame < r.end;
/** Whether `outer` contains all of `inner`. */
export const rangeCovers = (outer: FrameRange, inner: FrameRange): boolean =>
  inner.start >= outer.start && inner.end <= outer.end;
/** Whether `a` and `b` share at least one frame. */
export const rangesOverlap = (a: FrameRange, b: FrameRange): boolean => a.start < b.end && b.start < a.end;
/** The frames `a` and `b` share, or `undefined`. */
export function rangeIntersection<F extends number>(a: FrameRange<F>, b: FrameRange<F>): FrameRange<F> | undefined {
  const start = Math.max(a.start, b.start) as F;
  const end = Math.min(a.end, b.end) as F;
  return start < end ? { start, end } : undefined;
}

/**
 * Checks that `[start, end)` is a well-formed frame range (integers, 0 <= start <= end <= 2^40),
 * or throws EINVAL naming `op`.
 */
export function checkFrameRange(start: number, end: number, op: string): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) {
    throw new KvmError('EINVAL', op, `range [${start}, ${end}) has a non-integer bound`);
  }
  if (start < 0 || end < start || end > MAX_FRAMES) {
    throw new KvmError('EINVAL', op, `range [${start}, ${end}) is not inside [0, 2^40) frames`);
  }
}

/** A byte count for people: `4096` → `'4 KiB'`, `2**30` → `'1 GiB'`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(2)} ${units[i]}`;
}
