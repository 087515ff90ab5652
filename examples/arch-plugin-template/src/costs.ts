/**
 * The toy plugin's cost names and trace events, declared to the sdk by augmentation so that
 * `sim.charge('toy.own')` and `sim.trace.emit('toy.own', {...})` are type-checked, and the defaults
 * with their sources.
 *
 * The toy arch is not hardware, so no measurement of it exists. Each default is borrowed from the
 * real operation it stands for and says so; a plugin for real hardware cites a paper, a mailing-list
 * measurement or its own measurement on a named machine instead.
 */
import type { CostDef } from '@cocokit/sdk';

declare module '@cocokit/sdk' {
  interface CostNames {
    'toy.own': true;
    'toy.release': true;
    'toy.accept': true;
    'toy.hypercall': true;
  }
  interface TraceEventMap {
    /** gmemPrepare: `npages` host pages from `pfn` became the guest's (owned bit set), for `gfn` on. */
    'toy.own': { pfn: number; gfn: number; npages: number };
    /** gmemInvalidate: the owned pages of `[start, end)` went back to the host (`pages` of them were owned). */
    'toy.release': { start: number; end: number; pages: number };
    /** The guest accepted the private page at `gfn` (backed by `pfn`). */
    'toy.accept': { gfn: number; pfn: number };
    /** The guest asked for `[gpa, gpa + npages pages)` to become private or shared (a KVM_HC_MAP_GPA_RANGE exit). */
    'toy.map_gpa': { gpa: number; npages: number; private: boolean };
  }
}

/** The owner name the plugin registers its costs under (the plugin's name). */
export const TOY_COST_OWNER = 'toy';

const SVM_ROUND_TRIP =
  'SVM VMRUN->#VMEXIT round trip ~1,344-1,376 cycles (LKML 2020-12, as cited for snp.vmgexit by @cocokit/arch-snp) ' +
  'at 2.5 GHz = ~550 ns';

/** The plugin's costs: defaults in ns per unit, each with where the number comes from. */
export const TOY_COSTS = {
  'toy.own': {
    ns: 550,
    unit: 'per 4 KiB page assigned to the guest',
    source:
      'toy stand-in for SEV-SNP RMPUPDATE (one microcoded ownership-table write per page); no published ' +
      `per-instruction figure, so taken as one world switch: ${SVM_ROUND_TRIP}`,
  },
  'toy.release': {
    ns: 850,
    unit: 'per 4 KiB page given back to the host',
    source:
      'toy stand-in for sev_gmem_invalidate: one ownership-table write (toy.own, ~550 ns) plus flushing the page, ' +
      '64 CLFLUSHOPT of 64-byte lines at ~5 ns each = ~300 ns',
  },
  'toy.accept': {
    ns: 550,
    unit: 'per 4 KiB page the guest accepts',
    source: 'toy stand-in for SNP PVALIDATE / TDX TDG.MEM.PAGE.ACCEPT of one 4 KiB page: one ownership-table write, taken equal to toy.own',
  },
  'toy.hypercall': {
    ns: 550,
    unit: 'per conversion request the guest makes (before the exit to userspace)',
    source: `toy stand-in for a VMGEXIT / TDVMCALL handled in KVM: ${SVM_ROUND_TRIP}`,
  },
} as const satisfies Readonly<Record<string, CostDef>>;
