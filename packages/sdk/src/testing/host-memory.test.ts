import { describe, expect, it } from 'vitest';
import { isKvmError } from '../errors.js';
import { tagBytes } from '../host-view.js';
import { pfn } from '../units.js';
import { createTestHostMemory } from './host-memory.js';

describe('createTestHostMemory', () => {
  it('reads zeros until written, and holds terabytes sparsely', () => {
    const h = createTestHostMemory(2 ** 28);
    expect(h.nrFrames).toBe(2 ** 28);
    expect(h.contents(pfn(2 ** 28 - 1))).toEqual({ kind: 'zero' });
    expect(h.readBytes(pfn(5), 10, 4)).toEqual(new Uint8Array(4));
  });

  it('stores bytes and tags, materialising a tag on a byte write', () => {
    const h = createTestHostMemory(16);
    h.writeBytes(pfn(1), 4094, new Uint8Array([1, 2]));
    expect([...h.readBytes(pfn(1), 4094)]).toEqual([1, 2]);
    h.writeTag(pfn(2), 7n);
    expect(h.contents(pfn(2))).toEqual({ kind: 'tag', tag: 7n });
    expect(h.readBytes(pfn(2))).toEqual(tagBytes(7n));
    h.writeBytes(pfn(2), 0, new Uint8Array([9]));
    const c = h.contents(pfn(2));
    expect(c.kind).toBe('bytes');
    expect(h.readBytes(pfn(2), 0, 9)).toEqual(new Uint8Array([9, 0, 0, 0, 0, 0, 0, 0, 7]));
  });

  it('hands out copies', () => {
    const h = createTestHostMemory(4);
    h.writeBytes(pfn(0), 0, new Uint8Array([1]));
    const c = h.contents(pfn(0));
    if (c.kind === 'bytes') c.bytes[0] = 99;
    h.readBytes(pfn(0))[0] = 98;
    expect(h.readBytes(pfn(0), 0, 1)).toEqual(new Uint8Array([1]));
  });

  it('zeroes ranges', () => {
    const h = createTestHostMemory(8);
    for (let p = 0; p < 8; p++) h.writeTag(pfn(p), BigInt(p + 1));
    h.zero(pfn(2), 3);
    expect([0, 1, 2, 3, 4, 5].map((p) => h.contents(pfn(p)).kind)).toEqual(['tag', 'tag', 'zero', 'zero', 'zero', 'tag']);
    h.zero(pfn(0), 8);
    expect(h.contents(pfn(7))).toEqual({ kind: 'zero' });
  });

  it('tracks refcounts, pins and the direct map, and counts mutations', () => {
    const h = createTestHostMemory(4);
    const m0 = h.mutations;
    expect(h.refcount(pfn(1))).toBe(0);
    expect(h.isDirectMapped(pfn(1))).toBe(true);
    h.setRefcount(pfn(1), 2);
    h.setPinCount(pfn(1), 1);
    h.setDirectMapped(pfn(1), false);
    expect([h.refcount(pfn(1)), h.pinCount(pfn(1)), h.isDirectMapped(pfn(1))]).toEqual([2, 1, false]);
    h.setDirectMapped(pfn(1), true);
    expect(h.isDirectMapped(pfn(1))).toBe(true);
    expect(h.mutations).toBe(m0 + 4);
    h.readBytes(pfn(0));
    expect(h.mutations).toBe(m0 + 4);
  });

  it('refuses out-of-range pfns and byte ranges with KvmError', () => {
    const h = createTestHostMemory(4);
    const errno = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return isKvmError(e) ? e.errno : 'other';
      }
      return 'none';
    };
    expect(errno(() => h.contents(pfn(4)))).toBe('EFAULT');
    expect(errno(() => h.readBytes(pfn(-1)))).toBe('EFAULT');
    expect(errno(() => h.readBytes(pfn(0), 4000, 100))).toBe('EINVAL');
    expect(errno(() => h.writeBytes(pfn(0), 4095, new Uint8Array(2)))).toBe('EINVAL');
    expect(errno(() => h.zero(pfn(2), 3))).toBe('EFAULT');
    expect(errno(() => h.setRefcount(pfn(0), -1))).toBe('EINVAL');
    expect(errno(() => createTestHostMemory(0))).toBe('EINVAL');
  });
});
