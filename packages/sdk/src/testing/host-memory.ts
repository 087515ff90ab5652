/**
 * A small {@link HostMemoryView} for plugin tests: sparse (a Map of the pages ever written), so a
 * test can hand a plugin terabytes of "host memory" for free. `@cocokit/host` is the real
 * implementation; this one exists so that a plugin's tests need nothing but the sdk.
 */
import { KvmError } from '../errors.js';
import { tagBytes, type HostMemoryView, type PageContents } from '../host-view.js';
import { PAGE_SIZE, type Pfn } from '../units.js';

/** A {@link HostMemoryView} whose refcounts, pins and direct map a test can set. */
export interface TestHostMemory extends HostMemoryView {
  /** Sets the page's reference count (as if the host took or dropped references). */
  setRefcount(pfn: Pfn, count: number): void;
  /** Sets the page's long-term pin count. */
  setPinCount(pfn: Pfn, count: number): void;
  /** Maps or unmaps the page in the kernel's direct map. */
  setDirectMapped(pfn: Pfn, mapped: boolean): void;
  /**
   * How many changes were made so far (writes, zeroing, refcounts, pins, direct map). A test reads
   * it before and after an operation that must change nothing.
   */
  readonly mutations: number;
}

type Stored = { kind: 'bytes'; bytes: Uint8Array } | { kind: 'tag'; tag: bigint };

/**
 * Creates a sparse host memory of `nrFrames` frames: every page reads as zeros until written,
 * refcounts and pins are 0, and every page is in the direct map.
 *
 * Out-of-range pfns and byte ranges are refused with {@link KvmError} (`EFAULT`, `EINVAL`), so a
 * plugin bug shows up as an error in its own test rather than as silent corruption.
 */
export function createTestHostMemory(nrFrames: number): TestHostMemory {
  if (!Number.isSafeInteger(nrFrames) || nrFrames <= 0) {
    throw new KvmError('EINVAL', 'createTestHostMemory', `nrFrames = ${nrFrames} is not a positive integer`);
  }
  const pages = new Map<number, Stored>();
  const refcounts = new Map<number, number>();
  const pins = new Map<number, number>();
  const unmapped = new Set<number>();
  let mutations = 0;

  const checkPfn = (pfn: number, op: string): void => {
    if (!Number.isSafeInteger(pfn) || pfn < 0 || pfn >= nrFrames) {
      throw new KvmError('EFAULT', op, `pfn ${pfn} is outside host memory [0, ${nrFrames})`);
    }
  };
  const checkSpan = (offset: number, length: number, op: string): void => {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > PAGE_SIZE) {
      throw new KvmError('EINVAL', op, `bytes [${offset}, ${offset + length}) are not inside a ${PAGE_SIZE}-byte page`);
    }
  };
  const checkCount = (count: number, op: string): void => {
    if (!Number.isSafeInteger(count) || count < 0) throw new KvmError('EINVAL', op, `count ${count} is not an integer >= 0`);
  };
  const materialise = (s: Stored | undefined): Uint8Array =>
    s === undefined ? new Uint8Array(PAGE_SIZE) : s.kind === 'bytes' ? s.bytes : tagBytes(s.tag);
  const setCount = (map: Map<number, number>, pfn: number, count: number): void => {
    if (count === 0) map.delete(pfn);
    else map.set(pfn, count);
    mutations++;
  };

  return {
    nrFrames,
    get mutations() {
      return mutations;
    },
    contents(pfn: Pfn): PageContents {
      checkPfn(pfn, 'host.contents');
      const s = pages.get(pfn);
      if (s === undefined) return { kind: 'zero' };
      return s.kind === 'bytes' ? { kind: 'bytes', bytes: s.bytes.slice() } : { kind: 'tag', tag: s.tag };
    },
    readBytes(pfn: Pfn, offset = 0, length = PAGE_SIZE - offset): Uint8Array {
      checkPfn(pfn, 'host.readBytes');
      checkSpan(offset, length, 'host.readBytes');
      return materialise(pages.get(pfn)).slice(offset, offset + length);
    },
    writeBytes(pfn: Pfn, offset: number, data: Uint8Array): void {
      checkPfn(pfn, 'host.writeBytes');
      checkSpan(offset, data.length, 'host.writeBytes');
      const s = pages.get(pfn);
      // A page held as a tag (or never written) becomes real bytes on its first byte write.
      const bytes = s?.kind === 'bytes' ? s.bytes : materialise(s);
      bytes.set(data, offset);
      pages.set(pfn, { kind: 'bytes', bytes });
      mutations++;
    },
    writeTag(pfn: Pfn, tag: bigint): void {
      checkPfn(pfn, 'host.writeTag');
      pages.set(pfn, { kind: 'tag', tag: BigInt.asUintN(64, tag) });
      mutations++;
    },
    zero(pfn: Pfn, npages = 1): void {
      checkPfn(pfn, 'host.zero');
      if (!Number.isSafeInteger(npages) || npages < 0 || pfn + npages > nrFrames) {
        throw new KvmError('EFAULT', 'host.zero', `[${pfn}, ${pfn + npages}) is outside host memory [0, ${nrFrames})`);
      }
      // Walk whichever is smaller: the range or the pages ever written.
      if (npages <= pages.size) for (let p = pfn; p < pfn + npages; p++) pages.delete(p);
      else for (const p of [...pages.keys()]) if (p >= pfn && p < pfn + npages) pages.delete(p);
      mutations++;
    },
    refcount(pfn: Pfn): number {
      checkPfn(pfn, 'host.refcount');
      return refcounts.get(pfn) ?? 0;
    },
    pinCount(pfn: Pfn): number {
      checkPfn(pfn, 'host.pinCount');
      return pins.get(pfn) ?? 0;
    },
    isDirectMapped(pfn: Pfn): boolean {
      checkPfn(pfn, 'host.isDirectMapped');
      return !unmapped.has(pfn);
    },
    setRefcount(pfn: Pfn, count: number): void {
      checkPfn(pfn, 'host.setRefcount');
      checkCount(count, 'host.setRefcount');
      setCount(refcounts, pfn, count);
    },
    setPinCount(pfn: Pfn, count: number): void {
      checkPfn(pfn, 'host.setPinCount');
      checkCount(count, 'host.setPinCount');
      setCount(pins, pfn, count);
    },
    setDirectMapped(pfn: Pfn, mapped: boolean): void {
      checkPfn(pfn, 'host.setDirectMapped');
      if (mapped) unmapped.delete(pfn);
      else unmapped.add(pfn);
      mutations++;
    },
  };
}
