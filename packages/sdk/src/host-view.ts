/**
 * What the core lends a plugin of the host's memory (DESIGN.md, "The arch plugin contract"): page
 * contents, refcounts and the direct map, read and (for contents) written by pfn. `@cocokit/host`
 * implements it; the sdk's conformance kit has a small one of its own. Defined here so that a plugin
 * needs nothing but the sdk.
 */
import type { Pfn } from './units.js';

/**
 * A page's contents as the host stores them, lazily: nothing for a page never written (reads as
 * zeros), real bytes for pages written with bytes, and a 64-bit tag for pages written by large
 * workloads (their bytes are derived from the tag on demand; see {@link tagBytes}).
 */
export type PageContents =
  | { readonly kind: 'zero' }
  | { readonly kind: 'bytes'; readonly bytes: Uint8Array }
  | { readonly kind: 'tag'; readonly tag: bigint };

/** The host memory a plugin may see. */
export interface HostMemoryView {
  /** Frames of host physical memory. */
  readonly nrFrames: number;
  /** The contents of `pfn` (a snapshot; byte arrays are copies). */
  contents(pfn: Pfn): PageContents;
  /** `length` bytes of `pfn` from `offset` (tags materialised). */
  readBytes(pfn: Pfn, offset?: number, length?: number): Uint8Array;
  /** Writes `data` into `pfn` at `offset`. */
  writeBytes(pfn: Pfn, offset: number, data: Uint8Array): void;
  /** Replaces the whole page's contents with the page derived from `tag`. */
  writeTag(pfn: Pfn, tag: bigint): void;
  /** Zeroes `[pfn, pfn + npages)`. */
  zero(pfn: Pfn, npages?: number): void;
  /** The page's reference count (0 for a free page). */
  refcount(pfn: Pfn): number;
  /** Long-term pins on the page (FOLL_LONGTERM). */
  pinCount(pfn: Pfn): number;
  /** Whether the kernel's direct map currently maps the page. */
  isDirectMapped(pfn: Pfn): boolean;
}

/**
 * The 4096 bytes a tagged page holds: the tag, little-endian, repeated 512 times. Deterministic, so
 * a measurement over tagged pages is reproducible, and distinct tags give distinct pages.
 */
export function tagBytes(tag: bigint): Uint8Array {
  const out = new Uint8Array(4096);
  const view = new DataView(out.buffer);
  const t = BigInt.asUintN(64, tag);
  for (let off = 0; off < 4096; off += 8) view.setBigUint64(off, t, true);
  return out;
}
