import { isKvmError, tagBytes } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { PageContentsStore } from './contents.js';

describe('PageContentsStore', () => {
  it('a page never written reads zero and stores nothing', () => {
    const c = new PageContentsStore();
    expect(c.contents(123)).toEqual({ kind: 'zero' });
    expect(c.readBytes(123, 10, 4)).toEqual(new Uint8Array(4));
    expect(c.isZero(0, 2 ** 40)).toBe(true);
    expect(c.footprint()).toEqual({ bytePages: 0, tagRuns: 0 });
  });

  it('stores bytes per written page, and contents() hands out copies', () => {
    const c = new PageContentsStore();
    c.writeBytes(7, 100, new Uint8Array([1, 2, 3]));
    expect(c.readBytes(7, 99, 5)).toEqual(new Uint8Array([0, 1, 2, 3, 0]));
    const snap = c.contents(7);
    expect(snap.kind).toBe('bytes');
    if (snap.kind === 'bytes') snap.bytes[100] = 42;
    expect(c.readBytes(7, 100, 1)).toEqual(new Uint8Array([1]));
    expect(c.footprint()).toEqual({ bytePages: 1, tagRuns: 0 });
    expect(c.isZero(7, 8)).toBe(false);
  });

  it('tags: one page, writes over a tag materialise it, tags over bytes replace them', () => {
    const c = new PageContentsStore();
    c.writeTag(5, 0xdeadbeefn);
    expect(c.contents(5)).toEqual({ kind: 'tag', tag: 0xdeadbeefn });
    expect(c.readBytes(5)).toEqual(tagBytes(0xdeadbeefn));
    c.writeBytes(5, 0, new Uint8Array([9]));
    const expected = tagBytes(0xdeadbeefn);
    expected[0] = 9;
    expect(c.readBytes(5)).toEqual(expected);
    expect(c.tagAt(5)).toBeUndefined();
    c.writeTag(5, -1n); // normalised to 64 bits
    expect(c.tagAt(5)).toBe(2n ** 64n - 1n);
    expect(c.footprint()).toEqual({ bytePages: 0, tagRuns: 1 });
  });

  it('tagging a 1 TiB range costs one run, sequential or filled; page-by-page sequential tags coalesce', () => {
    const c = new PageContentsStore();
    const TiB = 2 ** 28;
    c.tagSequence(0, TiB, 1000n);
    expect(c.tagAt(TiB - 1)).toBe(1000n + BigInt(TiB - 1));
    expect(c.footprint().tagRuns).toBe(1);
    c.fillTag(TiB, 2 * TiB, 7n);
    expect(c.tagAt(TiB + 12345)).toBe(7n);
    expect(c.footprint().tagRuns).toBe(2);
    const d = new PageContentsStore();
    for (let p = 0; p < 10000; p++) d.writeTag(p, 55n + BigInt(p));
    expect(d.footprint().tagRuns).toBe(1);
    // Punch a hole: zeroing splits the run in two.
    c.zero(100, 200);
    expect(c.contents(150)).toEqual({ kind: 'zero' });
    expect(c.footprint().tagRuns).toBe(3);
    c.checkInvariants();
  });

  it('copyPage keeps the compact form; zero forgets bytes and tags', () => {
    const c = new PageContentsStore();
    c.writeBytes(1, 0, new Uint8Array([1]));
    c.writeTag(2, 3n);
    c.copyPage(10, 1);
    c.copyPage(11, 2);
    c.copyPage(12, 99);
    expect(c.readBytes(10, 0, 1)).toEqual(new Uint8Array([1]));
    expect(c.tagAt(11)).toBe(3n);
    expect(c.contents(12)).toEqual({ kind: 'zero' });
    c.zero(0, 20);
    expect(c.isZero(0, 20)).toBe(true);
    expect(c.footprint()).toEqual({ bytePages: 0, tagRuns: 0 });
  });

  it('refuses spans that leave the page with EINVAL and changes nothing', () => {
    const c = new PageContentsStore();
    expect(() => c.readBytes(0, 4000, 200)).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
    let e: unknown;
    try {
      c.writeBytes(0, 4095, new Uint8Array(2));
    } catch (x) {
      e = x;
    }
    expect(isKvmError(e, 'EINVAL')).toBe(true);
    expect(c.footprint().bytePages).toBe(0);
  });
});
