import { isKvmError } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { snpVm } from '../test/snp-vm.js';

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

describe('guest access', () => {
  it('an access to an unvalidated private page raises #VC 0x404, seen by the guest as a value', () => {
    const t = snpVm();
    const ring = t.trace();
    t.prepare(P, G);
    const gpa = G * 4096 + 0x10;
    expect(t.guest.access({ gpa, access: 'read', encrypted: true })).toEqual({ kind: 'vc', vector: 29, errorCode: 0x404, gpa });
    expect(ring.filter('snp.vc').map((e) => e.fields)).toEqual([{ gfn: G, errorCode: 0x404 }]);
    t.guest.pvalidate(G * 4096, '4K', true);
    expect(t.guest.access({ gpa, access: 'write', encrypted: true })).toBe('ok');
  });

  it('a private access with no private mapping, or at the wrong level, is a nested page fault', () => {
    const t = snpVm();
    expect(t.guest.access({ gpa: G * 4096, access: 'read', encrypted: true })).toMatchObject({ kind: 'npf', reason: 'not-present' });
    t.prepare(P, G, 9);
    t.guest.pvalidate(G * 4096, '2M', true);
    // A 4K nested mapping over a 2M RMP entry: KVM PSMASHes (handleRmpFault) and the guest retries.
    expect(t.guest.access({ gpa: G * 4096, access: 'read', encrypted: true, level: 0 })).toMatchObject({ kind: 'npf', reason: 'rmp', sizem: false });
    expect(t.guest.access({ gpa: G * 4096, access: 'read', encrypted: true, level: 1 })).toBe('ok');
  });

  it('a shared (C=0) write to a guest-assigned page is a nested page fault; a shared read is fine', () => {
    const t = snpVm();
    t.prepare(P, G);
    expect(t.guest.access({ gpa: 0x1000, access: 'write', encrypted: false, pfn: P })).toMatchObject({ kind: 'npf', reason: 'rmp' });
    expect(t.guest.access({ gpa: 0x1000, access: 'read', encrypted: false, pfn: P })).toBe('ok');
    expect(t.guest.access({ gpa: 0x1000, access: 'write', encrypted: false, pfn: P + 1 })).toBe('ok');
  });
});
