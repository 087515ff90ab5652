/**
 * The costs memslot charges, with where each default comes from, and the trace events it emits.
 * "Measured" figures are round trips of the real ioctls on the development machine (Linux 6.18.44,
 * kvm_pvm, 2 vCPUs; a C loop of 2,000-20,000 calls, 2026-11-23); "estimate" figures are marked so.
 */
import type { CostDef } from '@cocokit/sdk';

/** The owner name memslot registers its costs under. */
export const MEMSLOT_COST_OWNER = '@cocokit/memslot';

/** Cost defaults, ns. */
export const MEMSLOT_COSTS = {
  'memslot.set_user_memory_region': {
    ns: 300,
    source: 'measured: KVM_SET_USER_MEMORY_REGION2 refused or no-op round trip, 270-480 ns, Linux 6.18.44 (kvm_pvm)',
    unit: 'per ioctl',
  },
  'memslot.swap': {
    ns: 8500,
    source:
      'measured: flags-only toggle on+off (2 swaps) 16.7-19.0 us and create+delete (3 swaps) ~32 us, Linux 6.18.44 (kvm_pvm); dominated by synchronize_srcu in kvm_swap_active_memslots',
    unit: 'per memslot swap',
  },
  'memslot.flush_shadow_memslot': {
    ns: 1000,
    source: 'estimate: fixed part of kvm_arch_flush_shadow_memslot per deleted/moved slot; the MMU charges the SPTEs it zaps',
    unit: 'per deleted or moved slot',
  },
  'memslot.set_memory_attributes': {
    ns: 300,
    source: 'estimate: same ioctl entry cost as KVM_SET_USER_MEMORY_REGION2 (measured 270-480 ns); the ioctl is ENOTTY on the probe host',
    unit: 'per ioctl',
  },
  'memslot.attribute_page': {
    ns: 100,
    source:
      'estimate: xa_reserve + xa_store of one xarray entry per gfn in kvm_vm_set_mem_attributes (two ~50 ns xarray operations); the per-gfn cost behind the start-up delay discussed in seed 003',
    unit: 'per 4 KiB gfn whose attributes are set',
  },
  'memslot.dirty_log_ioctl': {
    ns: 400,
    source: 'measured: KVM_GET_DIRTY_LOG of a clean 256-page slot, 376-432 ns, Linux 6.18.44 (kvm_pvm)',
    unit: 'per ioctl',
  },
} as const satisfies Record<string, CostDef>;

declare module '@cocokit/sdk' {
  interface CostNames {
    'memslot.set_user_memory_region': true;
    'memslot.swap': true;
    'memslot.flush_shadow_memslot': true;
    'memslot.set_memory_attributes': true;
    'memslot.attribute_page': true;
    'memslot.dirty_log_ioctl': true;
  }
  interface TraceEventMap {
    'memslot.create': { asId: number; id: number; baseGfn: number; npages: number; flags: number; guestMemfd: boolean };
    'memslot.delete': { asId: number; id: number; baseGfn: number; npages: number };
    'memslot.move': { asId: number; id: number; from: number; to: number; npages: number };
    'memslot.flags': { asId: number; id: number; from: number; to: number };
    'memslot.set_attributes': { start: number; end: number; attributes: number; slots: number };
  }
}
