import { pfn as toPfn } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { PVALIDATE } from './constants.js';
import snp from './plugin.js';
import { rmpForHost } from './rmp.js';
import { snpVm } from '../test/snp-vm.js';
import { withNestedTables } from './test-helpers.js';

const P = 2 ** 18;
const G = 2 ** 16;
const gpa = (gfn: number) => gfn * 4096;

describe('PVALIDATE', () => {
  it('SUCCESS validates a 4K page and rescinds it; the RMP entry follows', () => {
    const t = withNestedTables(snpVm());
    t.prepare(P, G);
    expect(t.guest.pvalidate(gpa(G), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
    expect(t.api.rmpEntry(P).validated).toBe(true);
    expect(t.guest.pvalidate(gpa(G), '4K', false)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
    expect(t.api.rmpEntry(P).validated).toBe(false);
  });

  it('FAIL_NOUPDATE (CF=1) when Validated already has the requested value, with no change', () => {
    const t = withNestedTables(snpVm());
    t.prepare(P, G);
    expect(t.guest.pvalidate(gpa(G), '4K', false)).toEqual({ kind: 'done', rc: PVALIDATE.FAIL_NOUPDATE });
    t.guest.pvalidate(gpa(G), '4K', true);
    expect(t.guest.pvalidate(gpa(G), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.FAIL_NOUPDATE });
  });

  it('FAIL_INPUT for a 2M request at an address that is not 2M-aligned', () => {
    const t = withNestedTables(snpVm());
    t.prepare(P, G, 9);
    expect(t.guest.pvalidate(gpa(G + 1), '2M', true)).toEqual({ kind: 'done', rc: PVALIDATE.FAIL_INPUT });
    expect(t.guest.pvalidate(gpa(G), 'huge' as never, true)).toEqual({ kind: 'done', rc: PVALIDATE.FAIL_INPUT });
  });

  it('FAIL_SIZEMISMATCH for a 2M request on 4K RMP entries; the guest retries at 4K', () => {
    const t = withNestedTables(snpVm());
    for (let i = 0; i < 512; i++) t.prepare(P + i, G + i);
    expect(t.guest.pvalidate(gpa(G), '2M', true)).toEqual({ kind: 'done', rc: PVALIDATE.FAIL_SIZEMISMATCH });
    expect(t.guest.pvalidate(gpa(G), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
  });

  it('a 4K request under a 2M RMP entry is an NPF with SIZEM: KVM PSMASHes and asks for [gfn, gfn + 512) to be zapped; the retry succeeds', () => {
    const t = withNestedTables(snpVm());
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
    const t = withNestedTables(snpVm());
    t.prepare(P, G, 9);
    expect(t.guest.pvalidate(gpa(G), '2M', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
    expect(t.api.rmpEntry(P + 511).validated).toBe(true);
  });

  it('an unmapped gfn is an NPF (not present) with no zap: the core faults it in and the guest retries', () => {
    const t = withNestedTables(snpVm());
    const r = t.guest.pvalidate(gpa(G), '4K', true);
    expect(r).toMatchObject({ kind: 'npf', fault: { gpa: gpa(G), access: 'write', encrypted: true }, reason: 'not-present', sizem: false });
    expect(r).not.toHaveProperty('zap');
    expect(t.bugs).toEqual([]);
    t.prepare(P, G);
    expect(t.guest.pvalidate(gpa(G), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
  });

  it('walks the nested tables (ctx.translate, private): a zapped leaf is an NPF even while the page stays assigned; the re-issue after the fault path mapped it succeeds', () => {
    // A conversion to shared under lazy discard: KVM zaps the private leaf, guest_memfd keeps the
    // page (still assigned to the guest at G, not validated: the guest rescinded it first).
    const t = withNestedTables(snpVm());
    const asked: string[] = [];
    const translate = t.ctx.translate.bind(t.ctx);
    t.ctx.translate = (g, root) => {
      asked.push(root);
      return translate(g, root);
    };
    t.prepare(P, G);
    t.npt.zap(G, G + 1);
    const r = t.guest.pvalidate(gpa(G), '4K', true);
    expect(r).toEqual({
      kind: 'npf',
      fault: { gpa: gpa(G), access: 'write', encrypted: true },
      gfn: G,
      reason: 'not-present',
      sizem: false,
      detail: `no private nested mapping of gfn 0x${G.toString(16)}`,
    });
    expect(asked).toEqual(['private']);
    expect(t.api.rmpEntry(P)).toMatchObject({ assigned: true, gfn: G, validated: false });
    expect(t.bugs).toEqual([]);
    // KVM's fault path: kvm_gmem_get_pfn finds the same page, sev_gmem_prepare leaves the assigned
    // entry alone, the leaf is installed; the guest re-issues PVALIDATE.
    t.prepare(P, G);
    expect(t.guest.pvalidate(gpa(G), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
    expect(t.api.rmpEntry(P).validated).toBe(true);
  });

  it('updates the RMP entry of the page the nested tables map, and only that one', () => {
    const t = withNestedTables(snpVm());
    t.prepare(P, G);
    t.prepare(P + 1, G + 1);
    expect(t.guest.pvalidate(gpa(G + 1), '4K', true)).toEqual({ kind: 'done', rc: PVALIDATE.SUCCESS });
    expect([t.api.rmpEntry(P).validated, t.api.rmpEntry(P + 1).validated]).toEqual([false, true]);
  });

  it('a mapped page whose RMP entry is not this guest\'s at that gfn is an RMP NPF KVM cannot resolve (Guest-Owned / Reverse-Map checks): the VM is marked bugged, nothing changes', () => {
    const hypervisorOwned = withNestedTables(snpVm());
    hypervisorOwned.npt.map(G, P);
    expect(hypervisorOwned.guest.pvalidate(gpa(G), '4K', true)).toMatchObject({ kind: 'npf', reason: 'rmp', sizem: false, detail: `pfn 0x${P.toString(16)} is not owned by ASID ${hypervisorOwned.api.asid}` });
    expect(hypervisorOwned.bugs).toHaveLength(1);
    expect(hypervisorOwned.api.rmpEntry(P).assigned).toBe(false);

    // A leaf left stale by a page returned behind KVM's back (RMPUPDATE to shared without the zap
    // guest_memfd's invalidation does first).
    const stale = withNestedTables(snpVm());
    stale.prepare(P, G);
    rmpForHost(stale.host).rmpupdate(P, '4K', null);
    expect(stale.guest.pvalidate(gpa(G), '4K', true)).toMatchObject({ kind: 'npf', reason: 'rmp', detail: `pfn 0x${P.toString(16)} is not owned by ASID ${stale.api.asid}` });
    expect(stale.bugs).toHaveLength(1);

    // The page is this guest's, at another gfn (Reverse-Map check: RMP.GPA ≠ the GPA).
    const elsewhere = withNestedTables(snpVm());
    elsewhere.prepare(P + 1, G + 1);
    elsewhere.npt.map(G, P + 1);
    expect(elsewhere.guest.pvalidate(gpa(G), '4K', true)).toMatchObject({ kind: 'npf', reason: 'rmp', detail: `pfn 0x${(P + 1).toString(16)} is assigned at gfn 0x${(G + 1).toString(16)}, not 0x${G.toString(16)}` });
    expect(elsewhere.bugs).toHaveLength(1);
    expect(elsewhere.api.rmpEntry(P + 1).validated).toBe(false);

    // Another guest's page on the same host: this VM's nested tables map gfn G to it.
    const owner = withNestedTables(snpVm());
    owner.prepare(P, G);
    const bugs: string[] = [];
    const other = snp.createVm({
      ...owner.ctx,
      translate: (g, root) => (root === 'private' && g === G ? { pfn: toPfn(P), level: 0 } : undefined),
      markBugged: (reason) => {
        bugs.push(reason);
      },
    });
    expect(other.guestApi.pvalidate(gpa(G), '4K', true)).toMatchObject({ kind: 'npf', reason: 'rmp', detail: `pfn 0x${P.toString(16)} is not owned by ASID ${other.vmApi.asid}` });
    expect(bugs).toHaveLength(1);
    expect([owner.bugs, owner.api.rmpEntry(P).validated]).toEqual([[], false]);
  });

  it('charges snp.pvalidate per instruction and traces each result', () => {
    const t = withNestedTables(snpVm());
    const ring = t.trace();
    t.prepare(P, G);
    const before = t.sim.now;
    t.guest.pvalidate(gpa(G), '4K', true);
    t.guest.pvalidate(gpa(G), '4K', true);
    expect(t.sim.now - before).toBe(2 * t.sim.costs.get('snp.pvalidate'));
    expect(ring.filter('snp.pvalidate').map((e) => e.fields.rc)).toEqual([0, 255]);
  });
});
