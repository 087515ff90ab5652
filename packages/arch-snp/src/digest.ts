/**
 * The SNP launch digest (SEV-SNP firmware ABI §8.17, "SNP_LAUNCH_UPDATE", Table "PAGE_INFO"): the
 * firmware chains SHA-384 over one 112-byte PAGE_INFO per launched page, in update order.
 *
 *   LD₀ = 48 zero bytes
 *   LDᵢ = SHA-384(PAGE_INFOᵢ), PAGE_INFOᵢ (0x70 bytes, little-endian):
 *     0x00  DIGEST_CUR   48  LDᵢ₋₁
 *     0x30  CONTENTS     48  SHA-384 of the 4 KiB page for NORMAL and VMSA pages; zeros otherwise
 *     0x60  LENGTH        2  0x0070
 *     0x62  PAGE_TYPE     1  1 NORMAL, 2 VMSA, 3 ZERO, 4 UNMEASURED, 5 SECRETS, 6 CPUID
 *     0x63  IMI_PAGE      1  bit 0: an incoming-migration-image page (0 for a normal launch)
 *     0x64  VMPL3_PERMS   1
 *     0x65  VMPL2_PERMS   1
 *     0x66  VMPL1_PERMS   1
 *     0x67  reserved      1  0
 *     0x68  GPA           8  the page's guest physical address (0xFFFFFFFFF000 for a VMSA)
 *
 * The same layout is what virtee/sev-snp-measure (gctx.py, "SNP spec 8.17.2 Table 67") computes
 * to predict a guest's measurement. SHA-384 comes from @noble/hashes (audited, platform-neutral).
 */
import { sha384 } from '@noble/hashes/sha2.js';
import { KvmError } from '@cocokit/sdk';
import { SNP_PAGE_TYPE, type SnpPageType } from './constants.js';

/** Bytes of a launch digest (SHA-384). */
export const LD_SIZE = 48;
/** Bytes of a PAGE_INFO structure. */
export const PAGE_INFO_SIZE = 0x70;

/** Optional PAGE_INFO fields, 0 in a normal launch (KVM leaves them 0). */
export interface PageInfoOptions {
  readonly imi?: boolean;
  readonly vmpl3Perms?: number;
  readonly vmpl2Perms?: number;
  readonly vmpl1Perms?: number;
}

/** Lays out one PAGE_INFO (see the module comment) from the previous digest, the page's CONTENTS, its type and GPA. */
export function pageInfo(ldPrev: Uint8Array, contents: Uint8Array, type: SnpPageType, gpa: number, opts: PageInfoOptions = {}): Uint8Array {
  if (ldPrev.length !== LD_SIZE || contents.length !== LD_SIZE) {
    throw new KvmError('EINVAL', 'pageInfo', `digest and contents must be ${LD_SIZE} bytes, got ${ldPrev.length} and ${contents.length}`);
  }
  if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa % 4096 !== 0) throw new KvmError('EINVAL', 'pageInfo', `gpa ${gpa} is not a page address`);
  const out = new Uint8Array(PAGE_INFO_SIZE);
  const view = new DataView(out.buffer);
  out.set(ldPrev, 0x00);
  out.set(contents, 0x30);
  view.setUint16(0x60, PAGE_INFO_SIZE, true);
  view.setUint8(0x62, SNP_PAGE_TYPE[type]);
  view.setUint8(0x63, opts.imi ? 1 : 0);
  view.setUint8(0x64, opts.vmpl3Perms ?? 0);
  view.setUint8(0x65, opts.vmpl2Perms ?? 0);
  view.setUint8(0x66, opts.vmpl1Perms ?? 0);
  view.setUint8(0x67, 0);
  view.setBigUint64(0x68, BigInt(gpa), true);
  return out;
}

const ZEROS = new Uint8Array(LD_SIZE);

/** The CONTENTS field for a page of `type`: SHA-384 of the page for NORMAL and VMSA, zeros for the rest. */
export function pageContentsDigest(type: SnpPageType, page: Uint8Array | null): Uint8Array {
  if (type !== 'normal' && type !== 'vmsa') return ZEROS;
  if (page === null || page.length !== 4096) {
    throw new KvmError('EINVAL', 'pageContentsDigest', `a ${type} page is measured over its 4096 bytes, got ${page === null ? 'none' : page.length}`);
  }
  return sha384(page);
}

/** A launch digest being chained, page by page, as the firmware's guest context holds it. */
export class LaunchDigest {
  private ld: Uint8Array = new Uint8Array(LD_SIZE);
  private pages = 0;

  /** Chains one page: `page` is the 4 KiB page for NORMAL/VMSA (ignored for the other types). */
  update(type: SnpPageType, gpa: number, page: Uint8Array | null, opts?: PageInfoOptions): void {
    this.ld = sha384(pageInfo(this.ld, pageContentsDigest(type, page), type, gpa, opts));
    this.pages++;
  }

  /** The digest so far (a copy). */
  get digest(): Uint8Array {
    return this.ld.slice();
  }

  /** Pages chained so far. */
  get count(): number {
    return this.pages;
  }
}
