import { describe, expect, it } from 'vitest';
import { tagBytes } from './host-view.js';

describe('tagBytes', () => {
  it('repeats the tag little-endian over the page', () => {
    const b = tagBytes(0x0102030405060708n);
    expect(b.length).toBe(4096);
    expect([...b.subarray(0, 8)]).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect([...b.subarray(4088)]).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
  });
  it('gives distinct pages for distinct tags and wraps to 64 bits', () => {
    expect(tagBytes(1n)).not.toEqual(tagBytes(2n));
    expect(tagBytes(-1n)).toEqual(tagBytes((1n << 64n) - 1n));
  });
});
