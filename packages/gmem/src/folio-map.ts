/**
 * The page cache of one guest_memfd inode: file index → folio, stored as one `RangeMap<number>` so
 * memory follows runs of folios, never the file's size. Each value packs, for every index of a run,
 * the pfn offset (`pfn - index`), the folio order and two page flags:
 *
 *   value = ((pfn - index) * 32 + order) * 4 + flags
 *
 * Consecutive folios allocated from consecutive pfns share one run, so fallocating a range that the
 * buddy allocator serves contiguously costs a single run. Folio boundaries are implied by the order:
 * a folio of order `o` is the `2^o`-aligned block of indices around an index (and its pfn is
 * `2^o`-aligned too, as the buddy allocator hands it out).
 */

/** Page flag: the folio was zeroed (folio_test_uptodate in post-6.18 terms). */
export const FOLIO_UPTODATE = 1;
/** Page flag: the arch prepare hook ran for it while private (6.18's uptodate, seed 003's GUEST_PREPARED). */
export const FOLIO_PREPARED = 2;

/** Packs a folio entry. */
export function encodeFolio(delta: number, order: number, flags: number): number {
  return (delta * 32 + order) * 4 + flags;
}

// With 0 <= order < 32 and 0 <= flags < 4, floor division recovers each field, negative deltas
// included: floor(v / 128) = delta, floor(v / 4) = delta * 32 + order.

/** The flags of an entry. */
export const folioFlags = (v: number): number => v - Math.floor(v / 4) * 4;
/** The order of an entry. */
export function folioOrder(v: number): number {
  const t = Math.floor(v / 4);
  return t - Math.floor(t / 32) * 32;
}
/** `pfn - index` of an entry. */
export const folioDelta = (v: number): number => Math.floor(v / 128);
/** The entry with its flags replaced. */
export const withFlags = (v: number, flags: number): number => Math.floor(v / 4) * 4 + flags;
