/**
 * MRTD, the TD's build-time measurement: one running SHA-384 over 128-byte records, closed by
 * TDH.MR.FINALIZE (TDX module ABI, TDH.MEM.PAGE.ADD / TDH.MR.EXTEND / TDH.MR.FINALIZE; arch-specs
 * A.2).
 *
 * - TDH.MEM.PAGE.ADD extends with one 128-byte block: the ASCII string `"MEM.PAGE.ADD"` zero-padded
 *   to 16 bytes, the page's GPA as a little-endian u64 at offset 16, zeros to byte 128. The page's
 *   contents are not hashed by ADD.
 * - TDH.MR.EXTEND extends with one 128-byte block (`"MR.EXTEND"` padded to 16 bytes, the chunk's
 *   GPA as u64 LE at 16, zeros to 128) followed by the chunk's 256 bytes (two more blocks). KVM
 *   issues 16 of them per 4 KiB page (TDX_EXTENDMR_CHUNKSIZE = 256, tdx_gmem_post_populate).
 *
 * SHA-384 from @noble/hashes: audited, dependency-free and platform-neutral (no node:crypto), and
 * incremental, so the running hash costs 48 bytes of state however large the TD image.
 */
import { sha384 } from '@noble/hashes/sha2.js';

/** Bytes of one MR.EXTEND chunk (TDX_EXTENDMR_CHUNKSIZE in tdx.c). */
export const TDX_EXTENDMR_CHUNKSIZE = 256;
/** Bytes of the header block PAGE.ADD and MR.EXTEND feed to the hash. */
export const MRTD_BLOCK_SIZE = 128;

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const PAGE_ADD_TAG = ascii('MEM.PAGE.ADD');
const MR_EXTEND_TAG = ascii('MR.EXTEND');

function headerBlock(tag: Uint8Array, gpa: number): Uint8Array {
  const block = new Uint8Array(MRTD_BLOCK_SIZE);
  block.set(tag, 0);
  new DataView(block.buffer).setBigUint64(16, BigInt(gpa), true);
  return block;
}

/** The 128-byte block TDH.MEM.PAGE.ADD of `gpa` (bytes) adds to MRTD. */
export function pageAddBlock(gpa: number): Uint8Array {
  return headerBlock(PAGE_ADD_TAG, gpa);
}

/** The 128-byte header block TDH.MR.EXTEND of the chunk at `gpa` (bytes) adds before the chunk's data. */
export function mrExtendBlock(gpa: number): Uint8Array {
  return headerBlock(MR_EXTEND_TAG, gpa);
}

/** A running MRTD: records in call order, then {@link Mrtd.finalize}. */
export class Mrtd {
  private readonly hash = sha384.create();
  private finalized: Uint8Array | undefined;
  /** Records extended so far (PAGE.ADD blocks plus MR.EXTEND chunks). */
  records = 0;

  /** TDH.MEM.PAGE.ADD's contribution for the page at `gpa`. */
  pageAdd(gpa: number): void {
    this.open();
    this.hash.update(pageAddBlock(gpa));
    this.records++;
  }

  /** TDH.MR.EXTEND's contribution for the 256-byte `chunk` at `gpa`. */
  mrExtend(gpa: number, chunk: Uint8Array): void {
    this.open();
    if (chunk.length !== TDX_EXTENDMR_CHUNKSIZE) throw new RangeError(`MR.EXTEND chunk is ${chunk.length} bytes, not 256`);
    this.hash.update(mrExtendBlock(gpa));
    this.hash.update(chunk);
    this.records++;
  }

  /** Whether TDH.MR.FINALIZE has closed the measurement. */
  get isFinalized(): boolean {
    return this.finalized !== undefined;
  }

  /** TDH.MR.FINALIZE: the 48-byte SHA-384 digest (a copy). Closing twice returns the same digest. */
  finalize(): Uint8Array {
    this.finalized ??= this.hash.digest();
    return this.finalized.slice();
  }

  private open(): void {
    if (this.finalized) throw new RangeError('MRTD is finalized');
  }
}
