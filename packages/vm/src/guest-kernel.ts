/**
 * The guest kernel's memory-encryption code the vCPU runs for arch-neutral guest programs on the
 * built-in types (an arch plugin brings its own `guestKernel`).
 */
import { uapi, type ArchGuestOutcome, type ArchGuestStep } from '@cocokit/sdk';
import type { GuestKernelDriver, HypercallAction } from './guest-program.js';

const PAGE = 4096;

/**
 * sw-protected (and default) guests: conversions are KVM_HC_MAP_GPA_RANGE hypercalls, which KVM
 * turns into KVM_EXIT_HYPERCALL for userspace (arch/x86/kvm/x86.c, __kvm_emulate_hypercall; the
 * selftests' private_mem_conversions_test guest does exactly this). Nothing needs accepting.
 */
export function builtinGuestKernel(privateMem: boolean): GuestKernelDriver {
  return {
    *convert(gpa, size, toPrivate): Generator<ArchGuestStep | HypercallAction, ArchGuestOutcome, unknown> {
      if (!privateMem) return { ok: false, reason: 'this VM has no private memory' };
      const attrs = toPrivate ? uapi.KVM_MAP_GPA_RANGE_ENCRYPTED : uapi.KVM_MAP_GPA_RANGE_DECRYPTED;
      const ret = (yield { kind: 'hypercall', nr: uapi.KVM_HC_MAP_GPA_RANGE, args: [gpa, size / PAGE, attrs | uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_4K] }) as number;
      return ret === 0 ? { ok: true } : { ok: false, reason: `KVM_HC_MAP_GPA_RANGE returned ${ret}` };
    },
    // eslint-disable-next-line require-yield
    *accept(): Generator<ArchGuestStep | HypercallAction, ArchGuestOutcome, unknown> {
      return { ok: true };
    },
    isUnaccepted: () => false,
  };
}
