/**
 * The SEV-SNP plugin's cost names and trace events, declared to the sdk by augmentation so that
 * `sim.charge('snp.rmpupdate')` and `sim.trace.emit('snp.psmash', {...})` are type-checked, and
 * the defaults with their sources.
 *
 * Per-instruction costs of RMPUPDATE, PSMASH and PVALIDATE, and per-command costs of the AMD-SP
 * firmware, are not published anywhere we could find (arch-specs.md part D, "Gaps"). Each default
 * below says so and gives the derivation used; treat them as calibration parameters and override
 * them (`sim.costs.override`) with measurements from your own EPYC machine.
 */
import type { CostDef } from '@cocokit/sdk';

declare module '@cocokit/sdk' {
  interface CostNames {
    'snp.rmpupdate': true;
    'snp.psmash': true;
    'snp.pvalidate': true;
    'snp.clflush_page': true;
    'snp.vmgexit': true;
    'snp.psc_entry': true;
    'snp.fw_command': true;
    'snp.launch_update_page': true;
  }
  interface TraceEventMap {
    /** RMPUPDATE: `op` private (rmp_make_private) or shared (rmp_make_shared), and the CPU's return code. */
    'snp.rmpupdate': { pfn: number; npages: number; op: 'private' | 'shared'; asid: number; gfn: number; immutable: boolean; rc: number; why: string };
    /** PSMASH of the 2M entry at `pfn`, and why KVM issued it. */
    'snp.psmash': { pfn: number; rc: number; why: string };
    /** A guest PVALIDATE: `rc` is the PVALIDATE code, or -1 when it ended in a nested page fault. */
    'snp.pvalidate': { gfn: number; size: '4K' | '2M'; validate: boolean; rc: number; npf: string | null };
    /** A page state change request turned into a KVM_HC_MAP_GPA_RANGE exit. */
    'snp.psc': { protocol: 'msr' | 'buffer'; gpa: number; npages: number; op: 'private' | 'shared'; attrs: number; entries: number };
    /** A page state change request finished: the value the guest reads back. */
    'snp.psc_done': { protocol: 'msr' | 'buffer'; result: number };
    /** An #NPF with the RMP bit, handled as sev_handle_rmp_fault does. */
    'snp.rmp_fault': { gfn: number; pfn: number; action: 'psmash' | 'spurious' | 'ignored' };
    /** A #VC the guest took (error code 0x404: page not validated). */
    'snp.vc': { gfn: number; errorCode: number };
    /** SNP_LAUNCH_START. */
    'snp.launch_start': { asid: number; policy: number };
    /** SNP_LAUNCH_UPDATE of one page. */
    'snp.launch_update': { gfn: number; pfn: number; type: string; measured: boolean };
    /** SNP_LAUNCH_FINISH, with the number of VMSAs measured and pages launched. */
    'snp.launch_finish': { vmsas: number; pages: number };
  }
}

/** The owner name the plugin registers its costs under (the plugin's name). */
export const SNP_COST_OWNER = 'snp';

const GAP = 'no published per-instruction figure (arch-specs.md part D, Gaps)';

/** The plugin's costs: defaults in ns per unit, each with where the number comes from. */
export const SNP_COSTS = {
  'snp.rmpupdate': {
    ns: 550,
    unit: 'per RMPUPDATE instruction (4K or 2M entry)',
    source:
      `estimate, ${GAP}: RMPUPDATE is microcoded and must keep the RMP coherent across CPUs; taken as the cost ` +
      'of a VMRUN->#VMEXIT round trip, ~1,360 cycles (LKML 2020-12, arch-specs.md D#1) at 2.5 GHz = ~550 ns',
  },
  'snp.psmash': {
    ns: 1100,
    unit: 'per PSMASH instruction',
    source:
      `estimate, ${GAP}: PSMASH rewrites 512 RMP entries (8 KiB of table) plus the coherence step of RMPUPDATE; ` +
      'taken as twice snp.rmpupdate',
  },
  'snp.pvalidate': {
    ns: 550,
    unit: 'per PVALIDATE instruction (4K or 2M)',
    source: `estimate, ${GAP}: PVALIDATE is a single RMP entry write from the guest; taken equal to snp.rmpupdate`,
  },
  'snp.clflush_page': {
    ns: 300,
    unit: 'per 4 KiB page flushed',
    source:
      'estimate: sev_gmem_invalidate flushes freed pages with clflush_cache_range: 64 CLFLUSHOPT of 64-byte lines at ~5 ns each = ~300 ns',
  },
  'snp.vmgexit': {
    ns: 550,
    unit: 'per VMGEXIT handled in the kernel',
    source: 'SVM VMRUN->#VMEXIT round trip ~1,344-1,376 cycles (LKML 2020-12, arch-specs.md D#1) at 2.5 GHz = ~550 ns',
  },
  'snp.psc_entry': {
    ns: 20,
    unit: 'per PSC buffer entry examined',
    source: 'estimate: snp_begin_psc reads one 8-byte entry from the GHCB shared buffer and compares it with its neighbour',
  },
  'snp.fw_command': {
    ns: 100_000,
    unit: 'per AMD-SP firmware command (LAUNCH_START, LAUNCH_FINISH, PAGE_RECLAIM)',
    source:
      'estimate, no published per-command figure: a PSP mailbox round trip (sev_do_cmd polls for completion) is ' +
      'taken as 100 us; override with a measurement of your platform',
  },
  'snp.launch_update_page': {
    ns: 30_000,
    unit: 'per 4 KiB page of SNP_LAUNCH_UPDATE',
    source:
      'estimate, no published figure: one firmware command per page (sev_gmem_post_populate issues ' +
      'SEV_CMD_SNP_LAUNCH_UPDATE per 4K page) that also hashes the page with SHA-384 on the AMD-SP; taken as 30 us',
  },
} as const satisfies Readonly<Record<string, CostDef>>;
