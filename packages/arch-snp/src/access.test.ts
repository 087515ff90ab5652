import { isKvmError } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import { describe, expect, it } from 'vitest';
import snp from './plugin.js';
import { snpVm } from '../test/snp-vm.js';
import { withNestedTables } from './test-helpers.js';

const P = 2 ** 18;
const G = 2 ** 16;

describe('host access (RMP #PF)', () => {
  it('a host write to a guest-assigned page is an RMP fault; a read is allowed', () => {
    const t = snpVm();
    t.prepare(P, G);
    expect(t.vm.hostAccess?.(P as never, true)).toEqual({
      signal: 'SIGBUS',
      kind: 'rmp',
      reason: `RMP #PF: pfn 0x${P.toString(16)} is assigned to ASID ${t.api.asid} at gfn 0x${G.toString(16)} in the RMP`,
    });
    expect(t.vm.hostAccess?.(P as never, false)).toBe('ok');
    expect(t.vm.hostAccess?.((P + 1) as never, true)).toBe('ok');
    t.invalidate(P, P + 1);
    expect(t.vm.hostAccess?.(P as never, true)).toBe('ok');
  });

  it('a write through a 2M host mapping faults if any 4K page under it is assigned', () => {
    const t = snpVm();
    t.prepare(P + 300, G);
    expect(t.api.hostAccessAt(P + 5, true, 0)).toBe('ok');
    expect(t.api.hostAccessAt(P + 5, true, 9)).toMatchObject({ signal: 'SIGBUS', kind: 'rmp' });
  });

  it('KVM-internal access to an assigned page is refused with EFAULT', () => {
    const t = snpVm();
    t.prepare(P, G);
    let err: unknown;
    try {
      t.api.kernelAccess(P, false, 'kvm_read_guest');
    } catch (e) {
      err = e;
    }
    expect(isKvmError(err, 'EFAULT')).toBe(true);
    expect(() => t.api.kernelAccess(P + 1, true, 'kvm_write_guest')).not.toThrow();
  });
});

describe('guestAccess: the RMP checks of a guest access the nested tables map', () => {
  it('a private access to an unvalidated page raises #VC 0x404, seen by the guest as a value', () => {
    const t = withNestedTables(snpVm());
    const ring = t.trace();
    t.prepare(P, G);
    const gpa = G * 4096 + 0x10;
    expect(t.vm.guestAccess(t.access({ gpa, private: true, pfn: P }))).toEqual({ kind: 'exception', vector: 29, name: '#VC', errorCode: 0x404, gpa });
    expect(ring.filter('snp.vc').map((e) => e.fields)).toEqual([{ gfn: G, errorCode: 0x404 }]);
    t.guest.pvalidate(G * 4096, '4K', true);
    expect(t.vm.guestAccess(t.access({ gpa, access: 'write', private: true, pfn: P }))).toBe('ok');
    expect(t.bugs).toEqual([]);
  });

  it('a 4K nested mapping over a 2M RMP entry: KVM PSMASHes and zaps [gfn, gfn + 512), and the retry completes', () => {
    const t = withNestedTables(snpVm());
    const ring = t.trace();
    t.prepare(P, G, 9);
    t.guest.pvalidate(G * 4096, '2M', true);
    const gpa = (G + 7) * 4096;
    const r = t.vm.guestAccess(t.access({ gpa, private: true, pfn: P + 7, level: 0 }));
    expect(r).toEqual({
      kind: 'npf',
      fault: { gpa, access: 'read', encrypted: true },
      zap: { start: G + 7, end: G + 7 + 512 },
      gfn: G + 7,
      reason: 'rmp',
      sizem: false,
      detail: `4K nested mapping of gfn 0x${(G + 7).toString(16)} over a 2M RMP entry`,
    });
    expect(t.api.rmpEntry(P + 300)).toMatchObject({ size: '4K', validated: true });
    expect(ring.filter('snp.rmp_fault').map((e) => e.fields.action)).toEqual(['psmash']);
    // The guest retries through the 4K mapping KVM re-faults: the RMP is 4K now.
    expect(t.vm.guestAccess(t.access({ gpa, private: true, pfn: P + 7, level: 0 }))).toBe('ok');
    expect(t.bugs).toEqual([]);
    t.vm.checkInvariants();
  });

  it('a 2M nested mapping over 4K RMP entries: the huge mapping is zapped so the guest re-faults at 4K', () => {
    const t = snpVm();
    for (let i = 0; i < 512; i++) t.prepare(P + i, G + i);
    const r = t.vm.guestAccess(t.access({ gpa: (G + 9) * 4096, private: true, pfn: P + 9, level: 1 }));
    expect(r).toMatchObject({ kind: 'npf', reason: 'rmp', zap: { start: G, end: G + 512 } });
    expect(t.bugs).toEqual([]);
    // A 2M RMP entry under a 2M mapping is checked as usual.
    const u = snpVm();
    u.prepare(P, G, 9);
    expect(u.vm.guestAccess(u.access({ gpa: G * 4096, private: true, pfn: P, level: 1 }))).toMatchObject({ kind: 'exception' });
  });

  it('an RMP #NPF KVM cannot resolve (page not assigned, another guest\'s, another gfn) marks the VM bugged', () => {
    const t = snpVm();
    const ring = t.trace();
    // Hypervisor-owned page mapped private: sev_handle_rmp_fault finds no assigned RMP entry.
    expect(t.vm.guestAccess(t.access({ gpa: G * 4096, private: true, pfn: P }))).toMatchObject({
      kind: 'npf',
      fault: { gpa: G * 4096, access: 'read', encrypted: true },
      reason: 'rmp',
    });
    expect(t.bugs).toHaveLength(1);
    expect(t.bugs[0]).toMatch(/hypervisor-owned.*sev_handle_rmp_fault only warns/);
    expect(ring.filter('snp.rmp_fault').map((e) => e.fields.action)).toEqual(['ignored']);
    // Assigned at another gfn.
    t.prepare(P, G + 1);
    expect(t.vm.guestAccess(t.access({ gpa: G * 4096, private: true, pfn: P }))).toMatchObject({ kind: 'npf', reason: 'rmp' });
    expect(t.bugs[1]).toMatch(/assigned at gfn/);
    // Another VM's page (the RMP is the host's).
    const other = snp.createVm(t.ctx);
    other.gmemPrepare((P + 1) as never, G as never, 0);
    expect(t.vm.guestAccess(t.access({ gpa: G * 4096, private: true, pfn: P + 1 }))).toMatchObject({ kind: 'npf', reason: 'rmp' });
    expect(t.bugs[2]).toMatch(/owned by ASID/);
  });

  it('a shared (C=0) write to an assigned page is an RMP #NPF KVM cannot resolve; a shared read, or a write to a shared page, completes', () => {
    const t = snpVm();
    t.prepare(P, G);
    expect(t.vm.guestAccess(t.access({ gpa: 0x1000, private: false, pfn: P }))).toBe('ok');
    expect(t.vm.guestAccess(t.access({ gpa: 0x1000, access: 'write', private: false, pfn: P + 1 }))).toBe('ok');
    expect(t.bugs).toEqual([]);
    expect(t.vm.guestAccess(t.access({ gpa: 0x1000, access: 'write', private: false, pfn: P }))).toMatchObject({
      kind: 'npf',
      fault: { gpa: 0x1000, access: 'write', encrypted: false },
      reason: 'rmp',
    });
    expect(t.bugs).toHaveLength(1);
    expect(t.bugs[0]).toMatch(/shared write/);
  });

  it('refuses an access outside host memory (EFAULT) or at no address (EINVAL)', () => {
    const t = snpVm({ hostFrames: 2 ** 19 });
    expect(errnoOf(() => t.vm.guestAccess(t.access({ gpa: 0, private: true, pfn: 2 ** 19 })))).toBe('EFAULT');
    expect(errnoOf(() => t.vm.guestAccess(t.access({ gpa: -1, private: true, pfn: 0 })))).toBe('EINVAL');
  });
});
