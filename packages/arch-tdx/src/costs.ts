/**
 * The TDX plugin's cost names and trace events, declared to the sdk by augmentation so that
 * `sim.charge('tdx.page_aug')` and `sim.trace.emit('tdx.page_aug', {...})` are type-checked.
 *
 * No per-SEAMCALL latency has been published (arch-specs part D, "Gaps"). The one citable figure is
 * the end-to-end per-page cost of dynamic removal, D #7a: BLOCK + TRACK + kick + REMOVE + WBINVD +
 * clear ≈ 15 µs per 4 KiB page (4 vCPUs, 18 GB TD; up to ≈ 53 µs at 64 vCPUs, 400 GB). The
 * defaults below split that budget: clearing 4 KiB with MOVDIR64B ≈ 0.35 µs (D #6a), kicking the
 * vCPUs ≈ 1 µs (D #5: ≥ 1,000 cycles per remote ack), leaving ≈ 13.6 µs for four SEAMCALLs, so
 * ≈ 3.4 µs per SEAMCALL. Every other SEAMCALL is given that same derived 3.4 µs plus the data work
 * it does; treat all of them as calibration parameters and override them with measurements.
 */
import type { CostDef } from '@cocokit/sdk';

declare module '@cocokit/sdk' {
  interface CostNames {
    'tdx.sept_add': true;
    'tdx.page_add': true;
    'tdx.page_aug': true;
    'tdx.range_block': true;
    'tdx.range_unblock': true;
    'tdx.track': true;
    'tdx.kick_vcpus': true;
    'tdx.page_remove': true;
    'tdx.page_wbinvd': true;
    'tdx.page_clear': true;
    'tdx.page_demote': true;
    'tdx.page_promote': true;
    'tdx.mr_extend': true;
    'tdx.mr_finalize': true;
    'tdx.accept': true;
    'tdx.page_zero': true;
    'tdx.vmcall': true;
    'tdx.page_reclaim': true;
  }
  interface TraceEventMap {
    /** TDH.MEM.SEPT.ADD linked a new S-EPT page under the level-`level` entry covering `gfn`. */
    'tdx.sept_add': { gfn: number; level: number };
    /** TDH.MEM.PAGE.ADD added `pfn` at `gfn` (before finalize; MAPPED, extends MRTD). */
    'tdx.page_add': { gfn: number; pfn: number };
    /** TDH.MEM.PAGE.AUG added `pfn` at `gfn` (after finalize; PENDING until the guest accepts). */
    'tdx.page_aug': { gfn: number; pfn: number; level: number };
    /** TDH.MEM.RANGE.BLOCK blocked the entry. */
    'tdx.range_block': { gfn: number; level: number };
    /** TDH.MEM.RANGE.UNBLOCK unblocked the entry. */
    'tdx.range_unblock': { gfn: number; level: number };
    /** TDH.MEM.TRACK advanced the TD epoch to `epoch`. */
    'tdx.track': { epoch: number };
    /** TDH.MEM.PAGE.REMOVE took `pfn` away from `gfn`. */
    'tdx.page_remove': { gfn: number; pfn: number; level: number };
    /** TDH.MEM.PAGE.DEMOTE split a 2M leaf into 512 4K leaves. */
    'tdx.page_demote': { gfn: number; level: number };
    /** TDH.MEM.PAGE.PROMOTE merged 512 4K leaves into one 2M leaf. */
    'tdx.page_promote': { gfn: number; level: number };
    /** TDH.MR.EXTEND measured the 256-byte chunk at `gpa`. */
    'tdx.mr_extend': { gpa: number };
    /** TDH.MR.FINALIZE closed MRTD. */
    'tdx.mr_finalize': { records: number };
    /** TDG.MEM.PAGE.ACCEPT at `gfn`, `level`: its status name, or `ept-violation`. */
    'tdx.accept': { gfn: number; level: number; result: string };
    /** TDG.VP.VMCALL<MapGPA> turned into a KVM_HC_MAP_GPA_RANGE exit for one chunk. */
    'tdx.map_gpa': { gpa: number; npages: number; private: boolean };
    /**
     * The TD was torn down (the `destroy` hook): S-EPT pages reclaimed, and private pages KVM had
     * not removed, which stay with the TD (leaked).
     */
    'tdx.teardown': { septPages: number; leakedPages: number };
    /** A SEAMCALL failed: its leaf and status name. */
    'tdx.seamcall_error': { leaf: string; status: string };
  }
}

/** The derived per-SEAMCALL cost, ns (see the module comment). */
const SEAMCALL_NS = 3400;
const GAP = 'gap: no published per-SEAMCALL latency (arch-specs D, "Gaps")';
const DERIVED = `${GAP}; derived from D #7a: dynamic removal ≈ 15 µs/page (BLOCK+TRACK+kick+REMOVE+WBINVD+clear, 4 vCPU, 18 GB) minus clear 0.35 µs (D #6a) and kick 1 µs (D #5), over 4 SEAMCALLs ≈ 3.4 µs each`;

/** The TDX plugin's costs with their defaults (ns per unit) and sources. */
export const TDX_COSTS = {
  'tdx.sept_add': { ns: SEAMCALL_NS, unit: 'per TDH.MEM.SEPT.ADD', source: DERIVED },
  'tdx.page_add': {
    ns: SEAMCALL_NS + 600,
    unit: 'per 4 KiB TDH.MEM.PAGE.ADD',
    source: `${DERIVED}; plus ≈ 0.6 µs to copy 4 KiB into the page under the TD key (copy at ~7 GB/s, as host.page_copy)`,
  },
  'tdx.page_aug': { ns: SEAMCALL_NS, unit: 'per TDH.MEM.PAGE.AUG (any level)', source: DERIVED },
  'tdx.range_block': { ns: SEAMCALL_NS, unit: 'per TDH.MEM.RANGE.BLOCK', source: DERIVED },
  'tdx.range_unblock': { ns: SEAMCALL_NS, unit: 'per TDH.MEM.RANGE.UNBLOCK', source: DERIVED },
  'tdx.track': { ns: SEAMCALL_NS, unit: 'per TDH.MEM.TRACK', source: DERIVED },
  'tdx.kick_vcpus': {
    ns: 1000,
    unit: 'per kick of all vCPUs out of guest mode (KVM_REQ_OUTSIDE_GUEST_MODE)',
    source: 'D #5: a remote TLB-shootdown ack costs ≥ 1,000 cycles ([secondary], EuroSys 2020 summary); ≈ 1 µs with a few vCPUs',
  },
  'tdx.page_remove': { ns: SEAMCALL_NS, unit: 'per TDH.MEM.PAGE.REMOVE', source: DERIVED },
  'tdx.page_wbinvd': { ns: SEAMCALL_NS, unit: 'per 4 KiB TDH.PHYMEM.PAGE.WBINVD', source: DERIVED },
  'tdx.page_clear': {
    ns: 350,
    unit: 'per 4 KiB page cleared with MOVDIR64B (tdx_clear_page)',
    source: 'D #6a: 4 KiB clear ≈ 0.25-0.35 µs, extrapolated from huge-page clearing bandwidth (ML "x86/mm: Add multi-page clearing", 2025-06-16)',
  },
  'tdx.page_demote': { ns: SEAMCALL_NS, unit: 'per TDH.MEM.PAGE.DEMOTE', source: DERIVED },
  'tdx.page_promote': { ns: SEAMCALL_NS, unit: 'per TDH.MEM.PAGE.PROMOTE', source: DERIVED },
  'tdx.mr_extend': {
    ns: SEAMCALL_NS + 500,
    unit: 'per 256-byte TDH.MR.EXTEND',
    source: `${DERIVED}; plus ≈ 0.5 µs of SHA-384 over 384 bytes (software SHA-512-family throughput ~0.7 GB/s; estimate)`,
  },
  'tdx.mr_finalize': { ns: SEAMCALL_NS, unit: 'per TDH.MR.FINALIZE', source: DERIVED },
  'tdx.accept': {
    ns: SEAMCALL_NS,
    unit: 'per TDG.MEM.PAGE.ACCEPT call, excluding zeroing (charged as tdx.page_zero)',
    source: `${GAP} for TDCALLs too; assumed equal to the derived SEAMCALL cost (D #7a)`,
  },
  'tdx.page_zero': {
    ns: 350,
    unit: 'per 4 KiB page the module zeroes on ACCEPT',
    source: 'D #6a: 4 KiB clear ≈ 0.25-0.35 µs; a 2M ACCEPT zeroes 512 pages (D #13, tdg_mem_page_accept.c)',
  },
  'tdx.vmcall': {
    ns: 5000,
    unit: 'per TDG.VP.VMCALL round trip through KVM (TD exit, handling, TDH.VP.ENTER)',
    source:
      'estimate: D #1-#2 give ~2,550 cycles (~1 µs) for a plain KVM_RUN exit round trip; a TD exit adds the module world switch both ways (two SEAMCALL-class transitions ≈ 2 × 2 µs, from the derived SEAMCALL cost); gap: no published TDVMCALL latency',
  },
  'tdx.page_reclaim': {
    ns: SEAMCALL_NS,
    unit: 'per TDH.PHYMEM.PAGE.RECLAIM of an S-EPT page at teardown (the MOVDIR64B clear after it is tdx.page_clear)',
    source: DERIVED,
  },
} as const satisfies Readonly<Record<string, CostDef>>;

/** A TDX cost name. */
export type TdxCostName = keyof typeof TDX_COSTS;
