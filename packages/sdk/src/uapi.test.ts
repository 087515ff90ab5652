import { describe, expect, it } from 'vitest';
import * as uapi from './uapi.js';

// Values as include/uapi/linux/kvm.h defines them (../shared/spec/kvm-semantics.md §0), so a
// prototype ports to real KVM without renaming or renumbering.
describe('uapi constants', () => {
  it('memslot flags', () => {
    expect(uapi.KVM_MEM_LOG_DIRTY_PAGES).toBe(1);
    expect(uapi.KVM_MEM_READONLY).toBe(2);
    expect(uapi.KVM_MEM_GUEST_MEMFD).toBe(4);
    expect(uapi.KVM_MEM_USERFAULT).toBe(8);
    expect(uapi.KVM_USER_MEM_SLOTS).toBe(32764);
    expect(uapi.KVM_MEM_MAX_NR_PAGES).toBe(2147483647);
    expect(uapi.KVM_SET_USER_MEMORY_REGION_V1_FLAGS).toBe(3);
  });
  it('dirty logging', () => {
    expect(uapi.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2).toBe(168);
    expect(uapi.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE).toBe(1);
    expect(uapi.KVM_DIRTY_LOG_INITIALLY_SET).toBe(2);
  });
  it('attributes, guest_memfd flags and exits', () => {
    expect(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE).toBe(8);
    expect(uapi.GUEST_MEMFD_FLAG_MMAP).toBe(1);
    expect(uapi.GUEST_MEMFD_FLAG_INIT_SHARED).toBe(2);
    expect(uapi.KVM_EXIT_HYPERCALL).toBe(3);
    expect(uapi.KVM_EXIT_HLT).toBe(5);
    expect(uapi.KVM_EXIT_MMIO).toBe(6);
    expect(uapi.KVM_EXIT_MEMORY_FAULT).toBe(39);
    expect(uapi.KVM_MEMORY_EXIT_FLAG_PRIVATE).toBe(8);
    expect(uapi.KVM_HC_MAP_GPA_RANGE).toBe(12);
    expect(uapi.MSR_KVM_SYSTEM_TIME).toBe(0x12);
    expect(uapi.MSR_KVM_SYSTEM_TIME_NEW).toBe(0x4b564d01);
  });
  it('capabilities and VM types', () => {
    expect([
      uapi.KVM_CAP_USER_MEMORY2,
      uapi.KVM_CAP_MEMORY_FAULT_INFO,
      uapi.KVM_CAP_MEMORY_ATTRIBUTES,
      uapi.KVM_CAP_GUEST_MEMFD,
      uapi.KVM_CAP_VM_TYPES,
      uapi.KVM_CAP_PRE_FAULT_MEMORY,
      uapi.KVM_CAP_GUEST_MEMFD_FLAGS,
    ]).toEqual([231, 232, 233, 234, 235, 236, 244]);
    expect(uapi.KVM_X86_SW_PROTECTED_VM).toBe(1);
    expect(uapi.KVM_X86_SNP_VM).toBe(4);
    expect(uapi.KVM_X86_TDX_VM).toBe(5);
  });
  it('proposal-only flags do not collide with upstream ones', () => {
    const gmemFlags = [
      uapi.GUEST_MEMFD_FLAG_MMAP,
      uapi.GUEST_MEMFD_FLAG_INIT_SHARED,
      uapi.GUEST_MEMFD_FLAG_INIT_PRIVATE,
      uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP,
    ];
    expect(new Set(gmemFlags).size).toBe(gmemFlags.length);
    expect(uapi.FALLOC_FL_KEEP_SIZE | uapi.FALLOC_FL_PUNCH_HOLE).toBe(3);
  });
});
