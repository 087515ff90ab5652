import { CONTRACT_API_VERSION, isModelInvariantError, validateArchPlugin } from '@cocokit/sdk';
import { createArchTestVm, errnoOf, runArchConformance } from '@cocokit/sdk/testing';
import { describe, expect, it } from 'vitest';
import snp, { SNP_POLICY, rmpForHost, snpGuestKernel } from './index.js';
import type { SnpGuestApi, SnpVmApi } from './api.js';

runArchConformance(snp, {
  launch: { measuredKind: 'normal', begin: (vm) => (vm.vmApi as SnpVmApi).launchStart({ policy: SNP_POLICY.RSVD_MBO }) },
});

describe('the snp plugin', () => {
  it('is a valid plugin of the current contract serving vm type snp', () => {
    expect(validateArchPlugin(snp, 'test')).toBe(snp);
    expect(snp.name).toBe('snp');
    expect(snp.vmTypes).toEqual(['snp']);
    expect(snp.apiVersion).toBe(CONTRACT_API_VERSION);
  });

  it('takes no options, and says what replaced the two it had', () => {
    expect(errnoOf(() => createArchTestVm(snp, 'snp', { vmOptions: { bogus: 1 } }))).toBe('EINVAL');
    expect(() => createArchTestVm(snp, 'snp', { vmOptions: { bogus: 1 } })).toThrow(/unknown option 'bogus'/);
    expect(() => createArchTestVm(snp, 'snp', { vmOptions: { mapGpaRangeExit: true } })).toThrow(/KVM_ENABLE_CAP\(KVM_CAP_EXIT_HYPERCALL/);
    expect(() => createArchTestVm(snp, 'snp', { vmOptions: { acceptChunkPages: 512 } })).toThrow(/guestKernel\.accept/);
  });

  it('offers every hook of the contract it implements, as functions, and its guest kernel', () => {
    const { vm } = createArchTestVm(snp, 'snp');
    for (const hook of ['guestAccess', 'completeExit', 'destroy'] as const) expect(typeof vm[hook]).toBe('function');
    expect(vm.guestKernel).toBe(snpGuestKernel);
    // Created outside any vCPU and with nothing enabled, the VM asks nothing of the core.
    const t = createArchTestVm(snp, 'snp');
    expect(t.exits).toEqual([]);
    expect(t.bugs).toEqual([]);
  });

  it('forbids pre-faulting at creation (svm_vm_init) and allows it at a successful SNP_LAUNCH_FINISH (snp_launch_finish)', () => {
    const t = createArchTestVm(snp, 'snp');
    const api = t.vm.vmApi as SnpVmApi;
    expect(t.vm.capabilities.preFaultAllowed).toBe(false);
    api.launchStart({ policy: SNP_POLICY.RSVD_MBO });
    expect(errnoOf(() => api.launchFinish({ flags: 1 }))).toBe('EINVAL');
    expect(t.preFaultAllowed).toBe(false);
    api.launchFinish();
    expect(t.preFaultAllowed).toBe(true);
  });

  it('classifies a fault as private exactly when the guest set the C-bit', () => {
    const { vm } = createArchTestVm(snp, 'snp');
    expect(vm.classifyFault?.({ gpa: 0x5123, access: 'read', encrypted: true })).toEqual({ gfn: 5, private: true });
    expect(vm.classifyFault?.({ gpa: 0x5123, access: 'read', encrypted: false })).toEqual({ gfn: 5, private: false });
    expect(vm.classifyFault?.({ gpa: 0x5123, access: 'read' })).toEqual({ gfn: 5, private: false });
  });

  it('shares one RMP between the VMs of a host, each with its own ASID', () => {
    const a = createArchTestVm(snp, 'snp');
    const b = snp.createVm(a.ctx);
    const va = a.vm.vmApi as SnpVmApi;
    const vb = b.vmApi;
    expect(vb.asid).not.toBe(va.asid);
    a.vm.gmemPrepare?.(0x1000 as never, 0x10 as never, 0);
    expect(vb.rmpEntry(0x1000)).toMatchObject({ assigned: true, asid: va.asid });
    // VM b cannot validate a page that VM a owns: its nested tables do not map it (the kit's map
    // only what ctx.mapPrivatePfn mapped), so PVALIDATE faults for the core to resolve.
    expect((b.guestApi as SnpGuestApi).pvalidate(0x10 * 4096, '4K', true)).toMatchObject({ kind: 'npf', reason: 'not-present' });
    expect(() => b.checkInvariants?.()).not.toThrow();
  });

  it('checkInvariants catches an Immutable page of the VM outside a launch', () => {
    const t = createArchTestVm(snp, 'snp');
    const api = t.vm.vmApi as SnpVmApi;
    const rmp = rmpForHost(t.host);
    rmp.rmpupdate(0x3000, '4K', { asid: api.asid, gfn: 0x30, immutable: true });
    let err: unknown;
    try {
      t.vm.checkInvariants?.();
    } catch (e) {
      err = e;
    }
    expect(isModelInvariantError(err) && err.invariant).toBe('snp.vm.immutable');
  });
});
