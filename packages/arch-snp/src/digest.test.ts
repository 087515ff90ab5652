/**
 * The launch-digest test vector, derived from the SEV-SNP firmware ABI (§8.17, PAGE_INFO) and
 * checked against two independent computations.
 *
 * The launch ("tiny launch"):
 *   1. a NORMAL page at GPA 0x0 whose byte i is (i mod 256);
 *   2. a ZERO page at GPA 0x1000;
 *   3. one VMSA, 4096 bytes of 0x11, measured at GPA 0xFFFFFFFFF000 (LAUNCH_FINISH).
 *
 * PAGE_INFO 1, field by field (112 bytes, little-endian):
 *   0x00 DIGEST_CUR  48 × 00                                  (LD₀)
 *   0x30 CONTENTS    SHA-384(page 1) = 166f9617…2be3bf59
 *   0x60 LENGTH      70 00
 *   0x62 PAGE_TYPE   01          (NORMAL)
 *   0x63 IMI_PAGE    00
 *   0x64 VMPL3/2/1   00 00 00
 *   0x67 reserved    00
 *   0x68 GPA         00 00 00 00 00 00 00 00
 *   LD₁ = SHA-384(PAGE_INFO 1) = c0f2fb71…d44b652f
 * PAGE_INFO 2: LD₁ ‖ 48 × 00 (a ZERO page is not hashed) ‖ 70 00 ‖ 03 ‖ 00 ‖ 00 00 00 ‖ 00 ‖ 00 10 00 00 00 00 00 00
 *   LD₂ = 486f03f6…8366ffab
 * PAGE_INFO 3: LD₂ ‖ SHA-384(VMSA) = ecc3071a…c459d9a0 ‖ 70 00 ‖ 02 ‖ 00 ‖ 00 00 00 ‖ 00 ‖ 00 f0 ff ff ff ff 00 00
 *   LD₃ = f67ee303…a2ce0792  (the launch digest)
 *
 * Cross-checks, run once by hand and not committed: a 20-line Python script laying out the same
 * three PAGE_INFOs with struct.pack('<HBBBBBBQ', 0x70, type, 0, 0, 0, 0, 0, gpa) and chaining
 * hashlib.sha384 printed the LDs below; `xxd -r -p | openssl dgst -sha384` over the hex of
 * PAGE_INFO 1 and 3 printed LD₁ and LD₃; `openssl dgst -sha384` of page 1 printed its CONTENTS.
 * The layout matches virtee/sev-snp-measure's gctx.py ("SNP spec 8.17.2 Table 67").
 */
import { sha384 } from '@noble/hashes/sha2.js';
import { describe, expect, it } from 'vitest';
import { LaunchDigest, PAGE_INFO_SIZE, pageContentsDigest, pageInfo } from './digest.js';

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const unhex = (s: string): Uint8Array => new Uint8Array((s.match(/../g) ?? []).map((h) => parseInt(h, 16)));

const PAGE1 = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff);
const VMSA = new Uint8Array(4096).fill(0x11);
const SHA_PAGE1 = '166f9617070665894eb30e3968ee7642d7fd459089bee2ccae3aa4ae1b658eb53e2780a0b9e10ae5efe7ed112be3bf59';
const SHA_VMSA = 'ecc3071a30816273c819b8152ca2bdb1cc005eef0fdad65f65ee0e43ea4498c32d714d9406eea883bcff07d6c459d9a0';
const LD1 = 'c0f2fb71777e0183fbccac13c661f7e95b4a8f66ee2e7ce2f8018b1bbaf92420f8bfb979af2c191ac322fad7d44b652f';
const LD2 = '486f03f6213010b0cf55e415612e52cae26f23b4ba34eec8d1985afb423f8b0e7ba42531c092178d55719c918366ffab';
/** The launch digest of the tiny launch. */
const TINY_LAUNCH_DIGEST = 'f67ee303f0fc50d4c8767f5ab2a298710efb714744b0f4147b4c02302dedb3f7b260f6bc2253a93c63d4fe57a2ce0792';

/** PAGE_INFO laid out by hand from the field table, independent of pageInfo(). */
function handLaid(ld: string, contents: string, type: number, gpaLe: number[]): Uint8Array {
  return Uint8Array.from([...unhex(ld), ...unhex(contents), 0x70, 0x00, type, 0x00, 0x00, 0x00, 0x00, 0x00, ...gpaLe]);
}
const ZERO48 = '00'.repeat(48);

describe('launch digest (SEV-SNP ABI §8.17 PAGE_INFO)', () => {
  it('lays PAGE_INFO out byte for byte as the ABI table says', () => {
    const pi1 = pageInfo(new Uint8Array(48), unhex(SHA_PAGE1), 'normal', 0);
    expect(pi1.length).toBe(PAGE_INFO_SIZE);
    expect(hex(pi1)).toBe(hex(handLaid(ZERO48, SHA_PAGE1, 1, [0, 0, 0, 0, 0, 0, 0, 0])));
    const pi3 = pageInfo(unhex(LD2), unhex(SHA_VMSA), 'vmsa', 0xffff_ffff_f000);
    expect(hex(pi3)).toBe(hex(handLaid(LD2, SHA_VMSA, 2, [0x00, 0xf0, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00])));
    expect(hex(pageInfo(new Uint8Array(48), new Uint8Array(48), 'cpuid', 0, { imi: true, vmpl3Perms: 7, vmpl2Perms: 6, vmpl1Perms: 5 }).slice(0x62, 0x68))).toBe('060107060500');
  });

  it('measures NORMAL and VMSA pages by SHA-384 and the other types as zeros', () => {
    expect(hex(pageContentsDigest('normal', PAGE1))).toBe(SHA_PAGE1);
    expect(hex(pageContentsDigest('vmsa', VMSA))).toBe(SHA_VMSA);
    for (const t of ['zero', 'unmeasured', 'secrets', 'cpuid'] as const) expect(hex(pageContentsDigest(t, PAGE1))).toBe(ZERO48);
    expect(() => pageContentsDigest('normal', null)).toThrow(/4096 bytes/);
  });

  it('chains the tiny launch to the vector', () => {
    const ld = new LaunchDigest();
    expect(hex(ld.digest)).toBe(ZERO48);
    ld.update('normal', 0x0, PAGE1);
    expect(hex(ld.digest)).toBe(LD1);
    expect(hex(sha384(handLaid(ZERO48, SHA_PAGE1, 1, [0, 0, 0, 0, 0, 0, 0, 0])))).toBe(LD1);
    ld.update('zero', 0x1000, null);
    expect(hex(ld.digest)).toBe(LD2);
    ld.update('vmsa', 0xffff_ffff_f000, VMSA);
    expect(hex(ld.digest)).toBe(TINY_LAUNCH_DIGEST);
    expect(ld.count).toBe(3);
  });

  it('refuses malformed inputs', () => {
    expect(() => pageInfo(new Uint8Array(47), new Uint8Array(48), 'normal', 0)).toThrow(/48 bytes/);
    expect(() => pageInfo(new Uint8Array(48), new Uint8Array(48), 'normal', 0x10)).toThrow(/page address/);
  });
});
