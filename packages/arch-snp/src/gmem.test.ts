import { describe, expect, it } from 'vitest';
import { errnoOf } from '@cocokit/sdk/testing';
import { snpVm } from '../test/snp-vm.js';
import { withNestedTables } from './test-helpers.js';

const P = 2 ** 18; // 1 GiB-aligned host frame
const G = 2 ** 16;

describe('gmemPrepare (sev_gmem_prepare)', () => {
  it('assigns a 4K folio to the guest, not validated', () => {
    const t = snpVm();
    t.prepare(P + 3, G + 3);
    expect(t.api.rmpEntry(P + 3)).toMatchObject({ assigned: true, asid: t.api.asid, gfn: G + 3, size: '4K', validated: false });
    expect(t.api.rmpEntry(P + 4).assigned).toBe(false);
    t.vm.checkInvariants?.();
  });

  it('assigns a 2M folio whose 512 pages are all shared as one 2M entry', () => {
    const t = snpVm();
    t.prepare(P, G, 9);
    expect(t.api.rmpEntry(P + 511)).toMatchObject({ size: '2M', gfn: G + 511 });
    expect(t.api.rmpStats()).toEqual({ assignedPages: 512, runs: 1 });
  });

  it('falls back to 4K entries when part of the 2M region is already assigned, leaving that part alone', () => {
    const t = snpVm();
    t.prepare(P + 7, G + 7);
    t.prepare(P, G, 9);
    expect(t.api.rmpEntry(P)).toMatchObject({ size: '4K', gfn: G });
    expect(t.api.rmpEntry(P + 7)).toMatchObject({ size: '4K', gfn: G + 7 });
    expect(t.api.rmpStats().assignedPages).toBe(512);
    t.vm.checkInvariants?.();
  });

  it('does nothing for a page already assigned (KVM returns 0)', () => {
    const t = snpVm();
    t.prepare(P, G);
    const before = t.sim.now;
    t.prepare(P, G);
    expect(t.sim.now).toBe(before); // no RMPUPDATE issued
  });

  it('refuses misaligned folios (EINVAL) and folios beyond the RMP (ENOENT) with no change', () => {
    const t = snpVm({ hostFrames: 2 ** 19 });
    expect(errnoOf(() => t.prepare(P + 1, G, 9))).toBe('EINVAL');
    expect(errnoOf(() => t.prepare(P, G + 1, 9))).toBe('EINVAL');
    expect(errnoOf(() => t.prepare(2 ** 19, G))).toBe('ENOENT');
    expect(errnoOf(() => t.prepare(-1, G))).toBe('EINVAL');
    expect(errnoOf(() => t.prepare(1.5, G))).toBe('EINVAL');
    expect(t.api.rmpStats().assignedPages).toBe(0);
  });
});

describe('gmemInvalidate (sev_gmem_invalidate)', () => {
  it('returns a whole 2M entry with one 2M RMPUPDATE, clearing Validated', () => {
    const t = withNestedTables(snpVm());
    const ring = t.trace();
    t.prepare(P, G, 9);
    expect(t.guest.pvalidate(G * 4096, '2M', true)).toEqual({ kind: 'done', rc: 0 });
    t.invalidate(P, P + 512);
    expect(t.api.rmpStats().assignedPages).toBe(0);
    const updates = ring.filter('snp.rmpupdate');
    expect(updates.map((e) => [e.fields.op, e.fields.npages])).toEqual([
      ['private', 512],
      ['shared', 512],
    ]);
    expect(ring.filter('snp.psmash')).toHaveLength(0);
    t.vm.checkInvariants?.();
  });

  it('PSMASHes a 2M entry the range only partly covers, and returns just those pages', () => {
    const t = withNestedTables(snpVm());
    const ring = t.trace();
    t.prepare(P, G, 9);
    t.guest.pvalidate(G * 4096, '2M', true);
    t.invalidate(P + 10, P + 12);
    expect(ring.filter('snp.psmash').map((e) => e.fields)).toEqual([{ pfn: P, rc: 0, why: 'sev_gmem_invalidate' }]);
    expect(t.api.rmpEntry(P + 10).assigned).toBe(false);
    expect(t.api.rmpEntry(P + 11).assigned).toBe(false);
    // The rest stays the guest's, now as validated 4K entries.
    expect(t.api.rmpEntry(P + 12)).toMatchObject({ assigned: true, size: '4K', validated: true });
    expect(t.api.rmpStats().assignedPages).toBe(510);
    t.vm.checkInvariants?.();
  });

  it('skips hypervisor-owned pages and charges the cache flush per returned page', () => {
    const t = snpVm();
    t.prepare(P + 100, G + 100);
    const before = t.sim.now;
    t.invalidate(P, P + 1000);
    expect(t.sim.now - before).toBe(t.sim.costs.get('snp.rmpupdate') + t.sim.costs.get('snp.clflush_page'));
  });

  it('leaks a page it cannot return (a VMSA) instead of failing', () => {
    const t = snpVm();
    t.api.launchStart({ policy: 2 ** 17 });
    t.api.addVmsa(P + 1, new Uint8Array(4096));
    t.api.launchFinish();
    t.invalidate(P, P + 2);
    expect(t.api.leakedPages).toBe(1);
    expect(t.api.rmpEntry(P + 1)).toMatchObject({ assigned: true, vmsa: true });
  });
});

describe('maxMappingLevel (sev_gmem_max_mapping_level)', () => {
  it('is the RMP entry size for private pages, 4K when unassigned, unlimited for shared', () => {
    const t = snpVm();
    const level = (pfn: number, priv = true) => t.vm.maxMappingLevel?.(G as never, pfn as never, priv);
    expect(level(P)).toBe(0);
    t.prepare(P, G, 9);
    expect(level(P + 5)).toBe(1);
    t.prepare(P + 512, G + 512);
    expect(level(P + 512)).toBe(0);
    expect(level(P, false)).toBe(2);
    expect(level(2 ** 40)).toBe(0);
  });
});

describe('handleRmpFault (sev_handle_rmp_fault), through the RMP #NPFs that reach it', () => {
  it('PSMASHes a 2M entry and asks for [gfn, gfn + 512) to be zapped; the mapping level drops to 4K', () => {
    const t = snpVm();
    const ring = t.trace();
    t.prepare(P, G, 9);
    expect(t.vm.guestAccess(t.access({ gpa: (G + 5) * 4096, private: true, pfn: P + 5, level: 0 }))).toMatchObject({ zap: { start: G + 5, end: G + 5 + 512 } });
    expect(t.api.rmpEntry(P + 5).size).toBe('4K');
    expect(t.vm.maxMappingLevel(G as never, (P + 5) as never, true)).toBe(0);
    expect(ring.filter('snp.rmp_fault').map((e) => e.fields)).toEqual([{ gfn: G + 5, pfn: P + 5, action: 'psmash' }]);
  });

  it('checks neither owner nor GPA: a 2M entry at another gfn is split and zapped, and the retry, now 4K, cannot be resolved', () => {
    const t = snpVm();
    const ring = t.trace();
    t.prepare(P, G + 512, 9);
    const a = t.access({ gpa: G * 4096, private: true, pfn: P, level: 1 });
    expect(t.vm.guestAccess(a)).toMatchObject({ kind: 'npf', reason: 'rmp', zap: { start: G, end: G + 512 } });
    expect(t.bugs).toEqual([]);
    expect(t.vm.guestAccess(a)).toMatchObject({ kind: 'npf', reason: 'rmp' });
    expect(t.bugs).toHaveLength(1);
    expect(ring.filter('snp.rmp_fault').map((e) => e.fields.action)).toEqual(['psmash', 'spurious']);
  });
});
