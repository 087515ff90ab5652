/**
 * The vm package's cost names and trace events, declared to the sdk by augmentation. Defaults are
 * order-of-magnitude estimates for a current x86-64 server, each with its reasoning; the layers
 * below charge their own (MMU faults, guest_memfd allocation, host page zeroing, memslot
 * attribute updates). Override them with `openKvm({ costs })` when a result depends on them.
 */
import type { CostDef, Sim } from '@cocokit/sdk';

declare module '@cocokit/sdk' {
  interface CostNames {
    'vm.exit_to_userspace': true;
    'vm.hypercall': true;
    'vm.guest_access': true;
    'vm.discard_syscall': true;
    'vm.emulate_instruction': true;
    'vm.kvm_guest_access': true;
    'vm.wrmsr': true;
  }
  interface TraceEventMap {
    /** vCPU exit to userspace. */
    'vm.exit': { vm: number; reason: string };
    /** A conversion through the engine. */
    'vm.convert': { gfn: number; npages: number; private: boolean; path: string };
    /** The VM was marked dead (KVM_BUG_ON). */
    'vm.bugged': { vm: number; reason: string };
    /**
     * The VMM helper handled an exit: `reason` `'convert'` (`private`: the target), or `'discard'`
     * (an arch's discard request, e.g. pKVM MEM_RELINQUISH; `private` is absent).
     */
    'vmm.handle': { vcpu: number; reason: string; gpa: number; npages: number; private?: boolean };
    /** KVM read or wrote guest memory itself (kvm_read_guest / kvm_write_guest), from guest_memfd or through the VMM's hva. */
    'vm.kernel_access': { vm: number; gpa: number; len: number; op: 'read' | 'write'; backing: 'gmem' | 'hva' };
    /** A gfn_to_pfn_cache was activated, refreshed (its pfn resolved), invalidated or deactivated. */
    'vm.gpc': { gpa: number; op: 'activate' | 'refresh' | 'invalidate' | 'deactivate'; pfn: number };
  }
}

/** The owner name the vm package registers its costs under. */
export const VM_COST_OWNER = '@cocokit/vm';

/** The vm package's costs with their defaults (ns per unit) and sources. */
export const VM_COSTS = {
  'vm.exit_to_userspace': {
    ns: 4000,
    unit: 'per KVM_RUN return to userspace and re-entry',
    source:
      'estimate: a userspace exit adds the ioctl return, the VMM loop and KVM_RUN re-entry (with its vcpu_load/put and state sync) to a VM exit: a few microseconds on current x86 (kvm-unit-tests vmexit "inl_from_qemu" is in this range)',
  },
  'vm.hypercall': {
    ns: 1000,
    unit: 'per hypercall (VMCALL/VMMCALL exit handled in KVM)',
    source: 'estimate: one VM exit and re-entry plus kvm_emulate_hypercall dispatch, about a microsecond on current x86',
  },
  'vm.guest_access': {
    ns: 100,
    unit: 'per guest memory access that hits a present mapping',
    source: 'estimate: a DRAM-latency load/store through a warm TLB, ~100 ns; only relative to fault and exit costs does it matter',
  },
  'vm.discard_syscall': {
    ns: 2000,
    unit: 'per madvise(DONTNEED) or fallocate(PUNCH_HOLE) call a VMM makes',
    source:
      'estimate: syscall entry, VMA/page-cache walk, mmu-notifier or guest_memfd invalidation round and TLB shootdown: microseconds per call before the per-page work the layers charge',
  },
  'vm.emulate_instruction': {
    ns: 1000,
    unit: 'per instruction KVM emulates (x86_emulate_instruction: decode and execute, without its guest-memory reads)',
    source:
      'estimate: the x86 emulator decodes the fetched bytes, reads its register state and dispatches the operation; an emulated MMIO access costs about a microsecond more than a plain exit on current x86',
  },
  'vm.kvm_guest_access': {
    ns: 50,
    unit: 'per kvm_read_guest_page / kvm_write_guest_page, or write through a gfn_to_pfn_cache',
    source: 'estimate: a memslot lookup (cached), the hva or gmem pfn translation and a copy of a few bytes: tens of ns',
  },
  'vm.wrmsr': {
    ns: 1000,
    unit: 'per WRMSR the guest executes (an exit handled in KVM: kvm_set_msr_common)',
    source: 'estimate: one VM exit and re-entry plus the MSR dispatch, about a microsecond on current x86, like a hypercall',
  },
} as const satisfies Readonly<Record<string, CostDef>>;

/** Registers the vm package's costs on `sim` (idempotent). */
export function registerVmCosts(sim: Sim): void {
  sim.costs.register(VM_COST_OWNER, VM_COSTS);
}
