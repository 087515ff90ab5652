/**
 * MRTD test vector. See MRTD.md in this package for the derivation; in short:
 *
 * A two-page launch:
 *   page A: GPA 0x100000 (gfn 0x100), contents byte[i] = i & 0xff, added with
 *           KVM_TDX_MEASURE_MEMORY_REGION (PAGE.ADD, then 16 × MR.EXTEND);
 *   page B: GPA 0x101000 (gfn 0x101), all zero, added without measurement (PAGE.ADD only).
 *
 * The bytes fed to SHA-384, in order (6,400 bytes = 128 + 16 × (128 + 256) + 128):
 *   1. PAGE.ADD block for A (128 bytes):
 *        off 0..11   "MEM.PAGE.ADD" (4d 45 4d 2e 50 41 47 45 2e 41 44 44)
 *        off 12..15  00 00 00 00               (string zero-padded to 16)
 *        off 16..23  00 00 10 00 00 00 00 00   (GPA 0x100000, u64 little-endian)
 *        off 24..127 zeros
 *   2. for k = 0..15, MR.EXTEND of the chunk at GPA 0x100000 + 256k:
 *        a 128-byte block: "MR.EXTEND" (4d 52 2e 45 58 54 45 4e 44), zeros to 16, the chunk GPA as
 *        u64 LE at 16, zeros to 128; then the chunk's 256 bytes (00 01 02 .. ff).
 *   3. PAGE.ADD block for B: as 1 with GPA 0x101000 (00 10 10 00 00 00 00 00 at 16).
 *
 * SHA-384 of that stream, computed independently (a throwaway Python script with hashlib, and
 * `openssl dgst -sha384` over the same bytes written to a file; both gave the digest below), and
 * re-computed with node:crypto in test/mrtd.node.test.ts:
 */
import { describe, expect, it } from 'vitest';
import { MRTD_BLOCK_SIZE, Mrtd, mrExtendBlock, pageAddBlock } from './measure.js';
import { createTestTd, mapPrivate } from './test-support.js';
import { KVM_TDX_MEASURE_MEMORY_REGION } from './vm.js';

/** MRTD of the two-page launch above. */
const TWO_PAGE_MRTD = '94be7536e76e9c28967f2ffe791f647d65476dbfe3478c11b5680c0f4927d82640fff269b634d5e74e91b113c6ba83ec';
/** SHA-384 of the empty string: the MRTD of a TD finalized with no pages. */
const EMPTY_MRTD = '38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b';

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const pageA = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff);

describe('MRTD records', () => {
  it('PAGE.ADD block: "MEM.PAGE.ADD" padded to 16, GPA u64 LE at 16, zeros to 128', () => {
    const b = pageAddBlock(0x100000);
    expect(b).toHaveLength(MRTD_BLOCK_SIZE);
    expect(hex(b.subarray(0, 24))).toBe('4d454d2e504147452e414444' + '00000000' + '0000100000000000');
    expect(b.subarray(24).every((x) => x === 0)).toBe(true);
  });

  it('MR.EXTEND block: "MR.EXTEND" padded to 16, chunk GPA u64 LE at 16, zeros to 128', () => {
    const b = mrExtendBlock(0x100100);
    expect(hex(b.subarray(0, 24))).toBe('4d522e455854454e44' + '00000000000000' + '0001100000000000');
    expect(b.subarray(24).every((x) => x === 0)).toBe(true);
  });

  it('an empty MRTD is SHA-384 of nothing', () => {
    expect(hex(new Mrtd().finalize())).toBe(EMPTY_MRTD);
  });

  it('refuses records after finalize and chunks that are not 256 bytes', () => {
    const m = new Mrtd();
    expect(() => m.mrExtend(0, new Uint8Array(128))).toThrow(/256/);
    m.finalize();
    expect(() => m.pageAdd(0)).toThrow(/finalized/);
  });
});

describe('MRTD of a launch', () => {
  it('the records alone give the vector', () => {
    const m = new Mrtd();
    m.pageAdd(0x100000);
    for (let off = 0; off < 4096; off += 256) m.mrExtend(0x100000 + off, pageA.subarray(off, off + 256));
    m.pageAdd(0x101000);
    expect(hex(m.finalize())).toBe(TWO_PAGE_MRTD);
  });

  it('INIT_MEM_REGION (measured, then unmeasured) + FINALIZE gives the same digest, in both launch flows', () => {
    const { vm } = createTestTd();
    vm.vmApi.initMemRegion({ gpa: 0x100000, nrPages: 1, sources: [{ kind: 'bytes', bytes: pageA }] }, KVM_TDX_MEASURE_MEMORY_REGION);
    vm.vmApi.initMemRegion({ gpa: 0x101000, nrPages: 1, sources: [{ kind: 'zero' }] });
    expect(hex(vm.finalize().digest)).toBe(TWO_PAGE_MRTD);
  });

  it('seed 001: PRE_FAULT + INIT_MEM_REGION + FINALIZE gives the same digest', () => {
    const { vm } = createTestTd({ launchFlow: 'seed-001-premap' });
    mapPrivate(vm, 0x100, 0x40000);
    mapPrivate(vm, 0x101, 0x40001);
    vm.vmApi.initMemRegion({ gpa: 0x100000, nrPages: 1, sources: [{ kind: 'bytes', bytes: pageA }] }, KVM_TDX_MEASURE_MEMORY_REGION);
    vm.vmApi.initMemRegion({ gpa: 0x101000, nrPages: 1, sources: [{ kind: 'zero' }] });
    expect(hex(vm.finalize().digest)).toBe(TWO_PAGE_MRTD);
  });

  it('changes when any measured byte changes, and when the order of pages changes', () => {
    const launch = (bytes: Uint8Array, swap = false): string => {
      const { vm } = createTestTd();
      const a = () => vm.vmApi.initMemRegion({ gpa: 0x100000, nrPages: 1, sources: [{ kind: 'bytes', bytes }] }, KVM_TDX_MEASURE_MEMORY_REGION);
      const b = () => vm.vmApi.initMemRegion({ gpa: 0x101000, nrPages: 1, sources: [{ kind: 'zero' }] });
      if (swap) {
        b();
        a();
      } else {
        a();
        b();
      }
      return hex(vm.finalize().digest);
    };
    const changed = pageA.slice();
    changed[4095] = 0xfe; // was 0xff
    expect(launch(changed)).not.toBe(TWO_PAGE_MRTD);
    expect(launch(pageA, true)).not.toBe(TWO_PAGE_MRTD);
  });
});
