import { describe, expect, it } from 'vitest';
import { PVALIDATE } from './constants.js';
import { snpVm } from '../test/snp-vm.js';

const P = 2 ** 18;
const G = 2 ** 16;
const gpa = (gfn: number) => gfn * 4096;

describe('PVALIDATE', () => {
  it('SUCCESS validates a 4K page and rescinds it; the RMP entry follows', () => {
    const t = snpVm();
    t.prepare(P, G);
    expect(t.guest.pvalidate(gpa(G), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
    expect(t.api.rmpEntry(P).validated).toBe(true);
    expect(t.guest.pvalidate(gpa(G), '4K', false)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
    expect(t.api.rmpEntry(P).validated).toBe(false);
  });

  it('FAIL_NOUPDATE (CF=1) when Validated already has the requested value, with no change', () => {
    const t = snpVm();
    t.prepare(P, G);
    expect(t.guest.pvalidate(gpa(G), '4K', false)).toEqual({ kind: 'done', rc: PVALIDATE.FAIL_NOUPDATE });
    t.guest.pvalidate(gpa(G), '4K', true);
    expect(t.guest.pvalidate(gpa(G), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.FAIL_NOUPDATE });
  });

  it('FAIL_INPUT for a 2M request at an address that is not 2M-aligned', () => {
    const t = snpVm();
    t.prepare(P, G, 9);
    expect(t.guest.pvalidate(gpa(G + 1), '2M', true)).toEqual({ kind: 'done', rc: PVALIDATE.FAIL_INPUT });
    expect(t.guest.pvalidate(gpa(G), 'huge' as never, true)).toEqual({ kind: 'done', rc: PVALIDATE.FAIL_INPUT });
  });

  it('FAIL_SIZEMISMATCH for a 2M request on 4K RMP entries; the guest retries at 4K', () => {
    const t = snpVm();
    for (let i = 0; i < 512; i++) t.prepare(P + i, G + i);
    expect(t.guest.pvalidate(gpa(G), '2M', true)).toEqual({ kind: 'done', rc: PVALIDATE.FAIL_SIZEMISMATCH });
    expect(t.guest.pvalidate(gpa(G), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
  });

  it('a 4K request under a 2M RMP entry is an NPF with SIZEM: KVM PSMASHes and asks for [gfn, gfn + 512) to be zapped; the retry succeeds', () => {
    const t = snpVm();
    const ring = t.trace();
    t.prepare(P, G, 9);
    const r = t.guest.pvalidate(gpa(G + 7), '4K', true);
    expect(r).toEqual({
      kind: 'npf',
      fault: { gpa: gpa(G + 7), access: 'write', encrypted: true },
      // sev_handle_rmp_fault passes the unaligned gfn: kvm_zap_gfn_range(kvm, gfn, gfn + PTRS_PER_PMD).
      zap: { start: G + 7, end: G + 7 + 512 },
      gfn: G + 7,
      reason: 'rmp',
      sizem: true,
      detail: `4K PVALIDATE of gfn 0x${(G + 7).toString(16)} under a 2M RMP entry`,
    });
    expect(t.api.rmpEntry(P + 7)).toMatchObject({ validated: false, size: '4K' });
    expect(ring.filter('snp.rmp_fault').map((e) => e.fields)).toEqual([{ gfn: G + 7, pfn: P + 7, action: 'psmash' }]);
    expect(ring.filter('snp.psmash').map((e) => e.fields)).toEqual([{ pfn: P, rc: 0, why: 'sev_handle_rmp_fault' }]);
    expect(t.guest.pvalidate(gpa(G + 7), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
    expect(t.api.rmpEntry(P + 8).validated).toBe(false);
    t.vm.checkInvariants?.();
  });

  it('validates a whole 2M entry at once', () => {
    const t = snpVm();
    t.prepare(P, G, 9);
    expect(t.guest.pvalidate(gpa(G), '2M', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
    expect(t.api.rmpEntry(P + 511).validated).toBe(true);
  });

  it('an unmapped gfn is an NPF (not present) with no zap: the core faults it in and the guest retries', () => {
    const t = snpVm();
    const r = t.guest.pvalidate(gpa(G), '4K', true);
    expect(r).toMatchObject({ kind: 'npf', fault: { gpa: gpa(G), access: 'write', encrypted: true }, reason: 'not-present', sizem: false });
    expect(r).not.toHaveProperty('zap');
    expect(t.bugs).toEqual([]);
    t.prepare(P, G);
    expect(t.guest.pvalidate(gpa(G), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
  });

  it('charges snp.pvalidate per instruction and traces each result', () => {
    const t = snpVm();
    const ring = t.trace();
    t.prepare(P, G);
    const before = t.sim.now;
    t.guest.pvalidate(gpa(G), '4K', true);
    t.guest.pvalidate(gpa(G), '4K', true);
    expect(t.sim.now - before).toBe(2 * t.sim.costs.get('snp.pvalidate'));
    expect(ring.filter('snp.pvalidate').map((e) => e.fields.rc)).toEqual([0, 255]);
  });
});
