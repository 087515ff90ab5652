import { uapi, validateArchPlugin } from '@cocokit/sdk';
import { createArchTestVm, runArchConformance } from '@cocokit/sdk/testing';
import { describe, expect, it } from 'vitest';
import pkvm, { ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID, pkvmMemoryRequest, type PkvmHypercallExit } from './index.js';

runArchConformance(pkvm);

describe('the pkvm plugin', () => {
  it('is a valid plugin of contract version 1 serving vm type pkvm', () => {
    expect(validateArchPlugin(pkvm, 'test')).toBe(pkvm);
    expect(pkvm.name).toBe('pkvm');
    expect(pkvm.vmTypes).toEqual(['pkvm']);
    expect(pkvm.apiVersion).toBe(1);
  });
});

describe('memoryRequest: the forwarded calls in the contract’s words', () => {
  const exit = (nr: number, ipa: number): PkvmHypercallExit => ({ reason: 'HYPERCALL', exitReason: uapi.KVM_EXIT_HYPERCALL, nr, args: [ipa, 0, 0, 0, 0, 0], ret: 0, flags: 0 });

  it('reads MEM_SHARE as to shared, MEM_UNSHARE as to private, MEM_RELINQUISH as a discard', () => {
    const t = createArchTestVm(pkvm, 'pkvm');
    expect(t.vm.memoryRequest?.(exit(ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID.MEM_SHARE, 0x40000))).toEqual({ op: 'convert', gpa: 0x40000, size: 4096, toPrivate: false });
    expect(t.vm.memoryRequest?.(exit(ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID.MEM_UNSHARE, 0x40000))).toEqual({ op: 'convert', gpa: 0x40000, size: 4096, toPrivate: true });
    expect(t.vm.memoryRequest?.(exit(ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID.MEM_RELINQUISH, 0x40000))).toEqual({ op: 'discard', gpa: 0x40000, size: 4096 });
  });

  it('is undefined for anything else: HYP_MEMINFO, x86 KVM_HC_MAP_GPA_RANGE, other exits', () => {
    expect(pkvmMemoryRequest(exit(ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID.HYP_MEMINFO, 0))).toBeUndefined();
    expect(pkvmMemoryRequest(exit(uapi.KVM_HC_MAP_GPA_RANGE, 0x40000))).toBeUndefined();
    expect(pkvmMemoryRequest({ reason: 'HLT', exitReason: uapi.KVM_EXIT_HLT })).toBeUndefined();
  });
});
