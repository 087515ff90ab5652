import { isKvmError, uapi } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { GHCB_MSR_PSC_RESP, GHCB_MSR_PSC_RESP_ERROR, VMGEXIT_PSC_ERROR } from './constants.js';
import { createPscBuffer, ghcbMsrPscRequest } from './psc.js';
import { exitOf, snpVm, step, valueOf } from '../test/snp-vm.js';

const ENC = uapi.KVM_MAP_GPA_RANGE_ENCRYPTED;
const DEC = uapi.KVM_MAP_GPA_RANGE_DECRYPTED;
const SZ_2M = uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_2M;
const SZ_4K = uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_4K;

describe('GHCB MSR protocol PSC (snp_begin_psc_msr)', () => {
  it('encodes the request as GHCB_MSR_PSC_REQ_GFN does', () => {
    expect(ghcbMsrPscRequest(0x12345, 'SHARED')).toBe((2n << 52n) | (0x12345n << 12n) | 0x14n);
  });

  it('exits with a 1-page KVM_HC_MAP_GPA_RANGE, then answers 0x015 when userspace succeeded', () => {
    const t = snpVm();
    const msr = ghcbMsrPscRequest(0x80, 'PRIVATE');
    const exit = exitOf(step(() => t.guest.ghcbMsrPsc(msr)));
    expect(exit).toEqual({ reason: 'HYPERCALL', nr: 12, args: [0x80 * 4096, 1, ENC | SZ_4K], ret: 0 });
    exit.ret = 0;
    expect(valueOf(step(() => t.guest.ghcbMsrPsc(msr)))).toBe(GHCB_MSR_PSC_RESP);
  });

  it('answers the error response when userspace failed it', () => {
    const t = snpVm();
    const msr = ghcbMsrPscRequest(0x80, 'SHARED');
    const exit = exitOf(step(() => t.guest.ghcbMsrPsc(msr)));
    expect(exit.args).toEqual([0x80 * 4096, 1, DEC | SZ_4K]);
    exit.ret = 1;
    expect(valueOf(step(() => t.guest.ghcbMsrPsc(msr)))).toBe(GHCB_MSR_PSC_RESP_ERROR);
  });

  it('answers the error response without an exit for a PSMASH op or when exits are off', () => {
    const t = snpVm();
    expect(valueOf(step(() => t.guest.ghcbMsrPsc(ghcbMsrPscRequest(1, 'PSMASH'))))).toBe(GHCB_MSR_PSC_RESP_ERROR);
    t.api.setMapGpaRangeExit(false);
    expect(valueOf(step(() => t.guest.ghcbMsrPsc(ghcbMsrPscRequest(1, 'PRIVATE'))))).toBe(GHCB_MSR_PSC_RESP_ERROR);
    expect(t.exits).toHaveLength(0);
  });

  it('refuses a GHCB MSR request that is not a PSC (EINVAL)', () => {
    const t = snpVm();
    let err: unknown;
    try {
      t.guest.ghcbMsrPsc(0x80n);
    } catch (e) {
      err = e;
    }
    expect(isKvmError(err, 'EINVAL')).toBe(true);
  });
});

describe('PSC buffer (snp_begin_psc / snp_complete_one_psc)', () => {
  it('merges contiguous same-op entries into one exit and walks the buffer across exits', () => {
    const t = snpVm();
    const ring = t.trace();
    const buf = createPscBuffer([
      { gfn: 0x100, op: 'PRIVATE' },
      { gfn: 0x101, op: 'PRIVATE' },
      { gfn: 0x102, op: 'PRIVATE' },
      { gfn: 0x200, op: 'SHARED' },
      { gfn: 0x400, op: 'SHARED', size: '2M' },
      { gfn: 0x600, op: 'SHARED', size: '2M' },
    ]);
    const e1 = exitOf(step(() => t.guest.psc(buf)));
    expect(e1.args).toEqual([0x100 * 4096, 3, ENC | SZ_4K]);
    expect(buf.hdr.curEntry).toBe(0);
    const e2 = exitOf(step(() => t.guest.psc(buf)));
    expect(e2.args).toEqual([0x200 * 4096, 1, DEC | SZ_4K]);
    expect(buf.entries.slice(0, 3).map((e) => e.curPage)).toEqual([1, 1, 1]);
    expect(buf.hdr.curEntry).toBe(3);
    const e3 = exitOf(step(() => t.guest.psc(buf)));
    expect(e3.args).toEqual([0x400 * 4096, 1024, DEC | SZ_2M]);
    expect(valueOf(step(() => t.guest.psc(buf)))).toBe(VMGEXIT_PSC_ERROR.NONE);
    expect(buf.entries.map((e) => e.curPage)).toEqual([1, 1, 1, 1, 512, 512]);
    expect(buf.hdr.curEntry).toBe(6);
    expect(ring.filter('snp.psc').map((e) => e.fields.entries)).toEqual([3, 1, 2]);
    expect(ring.filter('snp.psc_done').map((e) => e.fields.result)).toEqual([0]);
  });

  it('a partially failing batch: the first range is done, the failing one is not, the result is GENERIC', () => {
    const t = snpVm();
    const buf = createPscBuffer([
      { gfn: 0x10, op: 'SHARED' },
      { gfn: 0x11, op: 'SHARED' },
      { gfn: 0x20, op: 'PRIVATE' },
      { gfn: 0x30, op: 'SHARED' },
    ]);
    exitOf(step(() => t.guest.psc(buf))).ret = 0;
    const failing = exitOf(step(() => t.guest.psc(buf)));
    expect(failing.args).toEqual([0x20 * 4096, 1, ENC | SZ_4K]);
    failing.ret = 1;
    expect(valueOf(step(() => t.guest.psc(buf)))).toBe(VMGEXIT_PSC_ERROR.GENERIC);
    expect(buf.entries.map((e) => e.curPage)).toEqual([1, 1, 0, 0]);
    expect(buf.hdr.curEntry).toBe(2);
    // The guest may re-issue the same buffer: KVM resumes at cur_entry.
    expect(exitOf(step(() => t.guest.psc(buf))).args).toEqual([0x20 * 4096, 1, ENC | SZ_4K]);
  });

  it('finishes a partly done 2M entry as 4K pages (attrs still say 2M, as KVM fills them from the entry)', () => {
    const t = snpVm();
    const buf = createPscBuffer([
      { gfn: 0x400, op: 'SHARED', size: '2M' },
      { gfn: 0x600, op: 'SHARED', size: '2M' },
    ]);
    (buf.entries[0] as { curPage: number }).curPage = 500;
    const e = exitOf(step(() => t.guest.psc(buf)));
    // Not merged with the next 2M entry: the remaining 12 pages are handled alone.
    expect(e.args).toEqual([(0x400 + 500) * 4096, 12, DEC | SZ_2M]);
    expect(exitOf(step(() => t.guest.psc(buf))).args).toEqual([0x600 * 4096, 512, DEC | SZ_2M]);
    expect(valueOf(step(() => t.guest.psc(buf)))).toBe(0);
  });

  it('completes PSMASH and UNSMASH entries without any exit', () => {
    const t = snpVm();
    const buf = createPscBuffer([
      { gfn: 0x400, op: 'PSMASH', size: '2M' },
      { gfn: 0x600, op: 'UNSMASH', size: '2M' },
      { gfn: 0x800, op: 'PRIVATE' },
    ]);
    expect(exitOf(step(() => t.guest.psc(buf))).args).toEqual([0x800 * 4096, 1, ENC | SZ_4K]);
    expect(buf.entries.slice(0, 2).map((e) => e.curPage)).toEqual([512, 512]);
    expect(valueOf(step(() => t.guest.psc(buf)))).toBe(0);
    expect(t.exits).toHaveLength(1);
  });

  it('refuses a bad header (end_entry ≥ 253) and a bad entry (misaligned 2M gfn, cur_page too large)', () => {
    const t = snpVm();
    const big = createPscBuffer(Array.from({ length: 254 }, (_, i) => ({ gfn: i, op: 'PRIVATE' as const })));
    expect(valueOf(step(() => t.guest.psc(big)))).toBe(VMGEXIT_PSC_ERROR.INVALID_HDR);
    const misaligned = createPscBuffer([{ gfn: 0x401, op: 'SHARED', size: '2M' }]);
    expect(valueOf(step(() => t.guest.psc(misaligned)))).toBe(VMGEXIT_PSC_ERROR.INVALID_ENTRY);
    const over = createPscBuffer([{ gfn: 0x10, op: 'SHARED' }]);
    (over.entries[0] as { curPage: number }).curPage = 2;
    expect(valueOf(step(() => t.guest.psc(over)))).toBe(VMGEXIT_PSC_ERROR.INVALID_ENTRY);
    expect(t.exits).toHaveLength(0);
  });

  it('fails with GENERIC when userspace has not enabled KVM_HC_MAP_GPA_RANGE exits', () => {
    const t = snpVm({ vmOptions: { mapGpaRangeExit: false } });
    expect(valueOf(step(() => t.guest.psc(createPscBuffer([{ gfn: 1, op: 'PRIVATE' }]))))).toBe(VMGEXIT_PSC_ERROR.GENERIC);
  });

  it('refuses another page state change while one is in flight on the vCPU (EINVAL)', () => {
    const t = snpVm();
    const a = createPscBuffer([{ gfn: 1, op: 'PRIVATE' }]);
    exitOf(step(() => t.guest.psc(a)));
    let err: unknown;
    try {
      t.guest.psc(createPscBuffer([{ gfn: 2, op: 'PRIVATE' }]));
    } catch (e) {
      err = e;
    }
    expect(isKvmError(err, 'EINVAL')).toBe(true);
    expect(valueOf(step(() => t.guest.psc(a)))).toBe(0);
  });
});
