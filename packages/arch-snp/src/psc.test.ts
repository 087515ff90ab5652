import { isKvmError, uapi } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { GHCB_MSR_PSC_RESP, GHCB_MSR_PSC_RESP_ERROR, VMGEXIT_PSC_ERROR } from './constants.js';
import { createPscBuffer, ghcbMsrPscRequest } from './psc.js';
import { complete, exitOf, snpVm, step, valueOf } from '../test/snp-vm.js';

const ENC = uapi.KVM_MAP_GPA_RANGE_ENCRYPTED;
const DEC = uapi.KVM_MAP_GPA_RANGE_DECRYPTED;
const SZ_2M = uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_2M;
const SZ_4K = uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_4K;
const V = 3; // the vCPU the guest operations run on (ctx.vcpu)

describe('GHCB MSR protocol PSC (snp_begin_psc_msr / snp_complete_psc_msr)', () => {
  it('encodes the request as GHCB_MSR_PSC_REQ_GFN does', () => {
    expect(ghcbMsrPscRequest(0x12345, 'SHARED')).toBe((2n << 52n) | (0x12345n << 12n) | 0x14n);
  });

  it('exits with a 1-page KVM_HC_MAP_GPA_RANGE; completeExit answers 0x015 when userspace succeeded', () => {
    const t = snpVm();
    t.onVcpu(V);
    const msr = ghcbMsrPscRequest(0x80, 'PRIVATE');
    const exit = exitOf(step(() => t.guest.ghcbMsrPsc(msr)));
    expect(exit).toEqual({ reason: 'HYPERCALL', exitReason: uapi.KVM_EXIT_HYPERCALL, nr: 12, args: [0x80 * 4096, 1, ENC | SZ_4K], ret: 0 });
    exit.ret = 0;
    expect(valueOf(complete(t, exit, V))).toBe(GHCB_MSR_PSC_RESP);
    // Completed: nothing is left in flight on the vCPU.
    expect(t.vm.completeExit(exit, V)).toBeUndefined();
  });

  it('answers the error response when userspace failed it', () => {
    const t = snpVm();
    t.onVcpu(V);
    const msr = ghcbMsrPscRequest(0x80, 'SHARED');
    const exit = exitOf(step(() => t.guest.ghcbMsrPsc(msr)));
    expect(exit.args).toEqual([0x80 * 4096, 1, DEC | SZ_4K]);
    exit.ret = 1;
    expect(valueOf(complete(t, exit, V))).toBe(GHCB_MSR_PSC_RESP_ERROR);
  });

  it('reads ret from the exit userspace answered, even when the core hands back a copy', () => {
    const t = snpVm();
    t.onVcpu(V);
    const exit = exitOf(step(() => t.guest.ghcbMsrPsc(ghcbMsrPscRequest(0x80, 'SHARED'))));
    expect(valueOf(complete(t, { ...exit, ret: 22 }, V))).toBe(GHCB_MSR_PSC_RESP_ERROR);
  });

  it('answers the error response without an exit for a PSMASH op or when KVM_HC_MAP_GPA_RANGE exits are not enabled', () => {
    const t = snpVm();
    expect(valueOf(step(() => t.guest.ghcbMsrPsc(ghcbMsrPscRequest(1, 'PSMASH'))))).toBe(GHCB_MSR_PSC_RESP_ERROR);
    // KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL) with another hypercall's bit only.
    t.enableCap(uapi.KVM_CAP_EXIT_HYPERCALL, 1);
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
  it('merges contiguous same-op entries into one exit and walks the buffer across exits, in completeExit', () => {
    const t = snpVm();
    t.onVcpu(V);
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
    const e2 = exitOf(complete(t, e1, V));
    expect(e2.args).toEqual([0x200 * 4096, 1, DEC | SZ_4K]);
    expect(buf.entries.slice(0, 3).map((e) => e.curPage)).toEqual([1, 1, 1]);
    expect(buf.hdr.curEntry).toBe(3);
    const e3 = exitOf(complete(t, e2, V));
    expect(e3.args).toEqual([0x400 * 4096, 1024, DEC | SZ_2M]);
    expect(valueOf(complete(t, e3, V))).toBe(VMGEXIT_PSC_ERROR.NONE);
    expect(buf.entries.map((e) => e.curPage)).toEqual([1, 1, 1, 1, 512, 512]);
    expect(buf.hdr.curEntry).toBe(6);
    expect(ring.filter('snp.psc').map((e) => e.fields.entries)).toEqual([3, 1, 2]);
    expect(ring.filter('snp.psc_done').map((e) => e.fields.result)).toEqual([0]);
    // One VMGEXIT, however many exits it took.
    expect(ring.filter('snp.psc_done')).toHaveLength(1);
  });

  it('a partially failing batch: the first range is done, the failing one is not, the result is GENERIC', () => {
    const t = snpVm();
    t.onVcpu(V);
    const buf = createPscBuffer([
      { gfn: 0x10, op: 'SHARED' },
      { gfn: 0x11, op: 'SHARED' },
      { gfn: 0x20, op: 'PRIVATE' },
      { gfn: 0x30, op: 'SHARED' },
    ]);
    const first = exitOf(step(() => t.guest.psc(buf)));
    const failing = exitOf(complete(t, first, V));
    expect(failing.args).toEqual([0x20 * 4096, 1, ENC | SZ_4K]);
    failing.ret = 1;
    expect(valueOf(complete(t, failing, V))).toBe(VMGEXIT_PSC_ERROR.GENERIC);
    expect(buf.entries.map((e) => e.curPage)).toEqual([1, 1, 0, 0]);
    expect(buf.hdr.curEntry).toBe(2);
    // The guest may issue the same buffer again: KVM resumes at cur_entry.
    expect(exitOf(step(() => t.guest.psc(buf))).args).toEqual([0x20 * 4096, 1, ENC | SZ_4K]);
  });

  it('finishes a partly done 2M entry as 4K pages (attrs still say 2M, as KVM fills them from the entry)', () => {
    const t = snpVm();
    t.onVcpu(V);
    const buf = createPscBuffer([
      { gfn: 0x400, op: 'SHARED', size: '2M' },
      { gfn: 0x600, op: 'SHARED', size: '2M' },
    ]);
    (buf.entries[0] as { curPage: number }).curPage = 500;
    const e = exitOf(step(() => t.guest.psc(buf)));
    // Not merged with the next 2M entry: the remaining 12 pages are handled alone.
    expect(e.args).toEqual([(0x400 + 500) * 4096, 12, DEC | SZ_2M]);
    const next = exitOf(complete(t, e, V));
    expect(next.args).toEqual([0x600 * 4096, 512, DEC | SZ_2M]);
    expect(valueOf(complete(t, next, V))).toBe(0);
  });

  it('completes PSMASH and UNSMASH entries without any exit', () => {
    const t = snpVm();
    t.onVcpu(V);
    const buf = createPscBuffer([
      { gfn: 0x400, op: 'PSMASH', size: '2M' },
      { gfn: 0x600, op: 'UNSMASH', size: '2M' },
      { gfn: 0x800, op: 'PRIVATE' },
    ]);
    const e = exitOf(step(() => t.guest.psc(buf)));
    expect(e.args).toEqual([0x800 * 4096, 1, ENC | SZ_4K]);
    expect(buf.entries.slice(0, 2).map((x) => x.curPage)).toEqual([512, 512]);
    expect(valueOf(complete(t, e, V))).toBe(0);
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

  it('fails with GENERIC when userspace has not enabled KVM_HC_MAP_GPA_RANGE exits, and works once it has', () => {
    const t = snpVm({ enabledCaps: {} });
    const buf = createPscBuffer([{ gfn: 1, op: 'PRIVATE' }]);
    expect(valueOf(step(() => t.guest.psc(buf)))).toBe(VMGEXIT_PSC_ERROR.GENERIC);
    expect(t.exits).toHaveLength(0);
    t.enableCap(uapi.KVM_CAP_EXIT_HYPERCALL, 2 ** uapi.KVM_HC_MAP_GPA_RANGE);
    expect(exitOf(step(() => t.guest.psc(buf))).args).toEqual([4096, 1, ENC | SZ_4K]);
  });

  it('checks the capability on every range, as snp_begin_psc does: disabling it between exits fails the rest', () => {
    const t = snpVm();
    t.onVcpu(V);
    const buf = createPscBuffer([
      { gfn: 0x10, op: 'PRIVATE' },
      { gfn: 0x20, op: 'SHARED' },
    ]);
    const e = exitOf(step(() => t.guest.psc(buf)));
    t.enableCap(uapi.KVM_CAP_EXIT_HYPERCALL, 0);
    expect(valueOf(complete(t, e, V))).toBe(VMGEXIT_PSC_ERROR.GENERIC);
    expect(buf.hdr.curEntry).toBe(1);
  });

  it('keeps PSC progress per vCPU (ctx.vcpu): two vCPUs each have one in flight and complete independently', () => {
    const t = snpVm();
    const a = createPscBuffer([
      { gfn: 0x10, op: 'PRIVATE' },
      { gfn: 0x20, op: 'PRIVATE' },
    ]);
    const b = createPscBuffer([{ gfn: 0x30, op: 'SHARED' }]);
    t.onVcpu(0);
    const ea = exitOf(step(() => t.guest.psc(a)));
    t.onVcpu(1);
    const eb = exitOf(step(() => t.guest.ghcbMsrPsc(ghcbMsrPscRequest(0x40, 'SHARED'))));
    t.onVcpu(2);
    const ec = exitOf(step(() => t.guest.psc(b)));
    // The core runs completions with ctx.vcpu set to the vCPU it completes.
    t.onVcpu(1);
    expect(valueOf(complete(t, eb, 1))).toBe(GHCB_MSR_PSC_RESP);
    t.onVcpu(0);
    const ea2 = exitOf(complete(t, ea, 0));
    expect(ea2.args).toEqual([0x20 * 4096, 1, ENC | SZ_4K]);
    t.onVcpu(2);
    expect(valueOf(complete(t, ec, 2))).toBe(0);
    t.onVcpu(0);
    expect(valueOf(complete(t, ea2, 0))).toBe(0);
    expect(a.hdr.curEntry).toBe(2);
    // A vCPU with nothing in flight: the exit is not the plugin's (the contract's re-issue answer).
    expect(t.vm.completeExit(ea, 5)).toBeUndefined();
    expect(t.vm.completeExit({ reason: 'MMIO' }, 0)).toBeUndefined();
  });

  it('outside the core (ctx.vcpu undefined) keys the PSC by the current sim actor', () => {
    const t = snpVm();
    const e = exitOf(step(() => t.guest.psc(createPscBuffer([{ gfn: 1, op: 'PRIVATE' }]))));
    expect(t.vm.completeExit(e, t.sim.current.id + 1)).toBeUndefined();
    expect(valueOf(complete(t, e, t.sim.current.id))).toBe(0);
  });

  it('refuses another page state change while one waits for userspace on that vCPU (EINVAL)', () => {
    const t = snpVm();
    t.onVcpu(V);
    const a = createPscBuffer([{ gfn: 1, op: 'PRIVATE' }]);
    const e = exitOf(step(() => t.guest.psc(a)));
    for (const again of [() => t.guest.psc(createPscBuffer([{ gfn: 2, op: 'PRIVATE' }])), () => t.guest.psc(a), () => t.guest.ghcbMsrPsc(ghcbMsrPscRequest(2, 'SHARED'))]) {
      let err: unknown;
      try {
        again();
      } catch (x) {
        err = x;
      }
      expect(isKvmError(err, 'EINVAL')).toBe(true);
    }
    expect(valueOf(complete(t, e, V))).toBe(0);
    // Another vCPU is not blocked by it.
    t.onVcpu(V + 1);
    expect(exitOf(step(() => t.guest.psc(createPscBuffer([{ gfn: 2, op: 'PRIVATE' }])))).args[0]).toBe(2 * 4096);
  });
});
