/**
 * Cross-check of the MRTD vector with node:crypto (an implementation independent of @noble/hashes):
 * the bytes of the two-page launch of src/measure.test.ts, laid out by hand here.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';

/** The vector asserted in src/measure.test.ts (TWO_PAGE_MRTD), repeated so this file runs alone. */
const TWO_PAGE_MRTD = '94be7536e76e9c28967f2ffe791f647d65476dbfe3478c11b5680c0f4927d82640fff269b634d5e74e91b113c6ba83ec';

function block(tag: string, gpa: number): Buffer {
  const b = Buffer.alloc(128);
  b.write(tag, 0, 'ascii');
  b.writeBigUInt64LE(BigInt(gpa), 16);
  return b;
}

describe('MRTD vector, independently', () => {
  it('node:crypto SHA-384 over the hand-laid stream equals the model', () => {
    const page = Buffer.from(Array.from({ length: 4096 }, (_, i) => i & 0xff));
    const h = createHash('sha384');
    h.update(block('MEM.PAGE.ADD', 0x100000));
    for (let off = 0; off < 4096; off += 256) {
      h.update(block('MR.EXTEND', 0x100000 + off));
      h.update(page.subarray(off, off + 256));
    }
    h.update(block('MEM.PAGE.ADD', 0x101000));
    expect(h.digest('hex')).toBe(TWO_PAGE_MRTD);
  });
});
