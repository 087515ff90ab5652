/**
 * The pKVM plugin's cost names and trace events, declared to the sdk by augmentation so that
 * `sim.charge('pkvm.hvc')` and `sim.trace.emit('pkvm.transition', {...})` are type-checked, and the
 * defaults with their sources.
 *
 * No per-operation figure for pKVM's EL2 calls is published that we could find (arch-specs.md part
 * D, "Gaps"): each default says how it is derived; treat them as calibration parameters and
 * override them (`sim.costs.override`) with measurements from your own arm64 machine.
 */
import type { CostDef } from '@cocokit/sdk';

declare module '@cocokit/sdk' {
  interface CostNames {
    'pkvm.hvc': true;
    'pkvm.stage2_update': true;
    'pkvm.tlbi': true;
    'pkvm.page_wipe': true;
  }
  interface TraceEventMap {
    /** One ownership transition at EL2 (mem_protect.c), for one page: the states after it. */
    'pkvm.transition': { op: string; vm: number; pfn: number; gfn: number; host: string; guest: string };
    /** A guest hypercall (SMCCC function ID) and what x0 holds on return to the guest, or 'exit'. */
    'pkvm.hypercall': { vcpu: number; fn: number; ipa: number; ret: number | 'exit' | 'abort' };
  }
}

/** The owner name the plugin registers its costs under (the plugin's name). */
export const PKVM_COST_OWNER = 'pkvm';

const GAP = 'no published figure for pKVM (arch-specs.md part D, Gaps)';

/** The plugin's costs: defaults in ns per unit, each with where the number comes from. */
export const PKVM_COSTS = {
  'pkvm.hvc': {
    ns: 550,
    unit: 'per hypercall into EL2 (host HVC or guest exit handled at EL2)',
    source:
      `estimate, ${GAP}: taken as one world switch, the SVM VMRUN->#VMEXIT round trip of ~1,360 cycles ` +
      '(LKML 2020-12, arch-specs.md D#1) at 2.5 GHz = ~550 ns',
  },
  'pkvm.stage2_update': {
    ns: 100,
    unit: 'per stage-2 entry written (host idmap or guest stage-2)',
    source: `estimate, ${GAP}: a page-table walk and one descriptor write under the component lock, taken as one single-page TLB flush, ~100 ns (arch/x86/mm/tlb.c comment, arch-specs.md D#4)`,
  },
  'pkvm.tlbi': {
    ns: 100,
    unit: 'per TLB invalidation by IPA/VA after an entry is removed or downgraded',
    source: 'single-page TLB flush ~100 ns (arch/x86/mm/tlb.c tlb_single_page_flush_ceiling comment, arch-specs.md D#4), taken for TLBI IPAS2E1IS + DSB',
  },
  'pkvm.page_wipe': {
    ns: 300,
    unit: 'per 4 KiB page the hypervisor wipes before the host gets it back (hyp_poison_page)',
    source: 'derived 4K clear time 0.25-0.35 us (Ankur Arora, "x86/mm: Add multi-page clearing" v4, 2025-06-16; arch-specs.md D#6a)',
  },
} as const satisfies Readonly<Record<string, CostDef>>;
