/**
 * `cocokit directmap`: seed 002's non-confidential VM backed by guest_memfd with its folios out of
 * the host's direct map (`GUEST_MEMFD_FLAG_NO_DIRECT_MAP`, the series' KVM_GMEM_NO_DIRECT_MAP).
 * KVM still has to read some guest memory itself: on an MMIO access it emulates the instruction,
 * which it fetches with kvm_read_guest after walking the guest's page tables to translate RIP, and
 * it writes kvm-clock through a gfn_to_pfn_cache. The series makes each kvm_read_guest a
 * remap → access → unmap of the page and lets the cache hold a refcounted restoration for as long
 * as it is active.
 *
 * The same guest runs once per configuration, each on a fresh host: its driver touches a device
 * register at a few instruction sites between bursts of ordinary work, with kvm-clock enabled for
 * the whole run. The configurations differ only in which guest memory is out of the direct map:
 * none (guest_memfd as 6.18 has it), all of it (seed 002), or all but the page tables and the
 * kvm-clock page — the alternative the seed mentions, the guest sharing those ahead of time, which
 * leaves the instruction fetch as the one access that cannot be avoided.
 */
import { uapi, type TraceSink } from '@cocokit/sdk';
import { isExit, openKvm, setupGuestMemory, type GuestInsn, type GuestProgram, type KernelAccessStats, type Vm } from '@cocokit/vm';
import type { TopLevelSpec } from 'vega-lite';
import { z } from 'zod';
import { defineExperiment, type ExperimentIo, type ExperimentResult, type ResultTable } from '../experiment.js';
import { byteSize, count, formatSize } from '../params.js';

const PAGE = 4096;
const MiB = 2 ** 20;

/**
 * The low region: the guest's page tables and its kvm-clock page. A memslot of its own, so the
 * "shared ahead of time" configuration can keep it in the direct map and nothing else changes.
 */
const LOW_SIZE = 64 * 1024;
/** Paging-structure pages, root first for 5 levels; 4-level paging starts at the PML4. */
const PML5_GPA = 0x1000;
const PML4_GPA = 0x2000;
const PDPT_GPA = 0x3000;
const PD_GPA = 0x4000;
const PT_GPA = 0x5000;
/** The vCPU's pvclock_vcpu_time_info (what MSR_KVM_SYSTEM_TIME_NEW points at). */
const KVMCLOCK_GPA = 0x8000;
/** Kernel text: the driver's MMIO accessors, one instruction site per page. */
const CODE_GPA = MiB;
/** The guest's working set: ordinary memory the stage-2 tables map, which KVM never reads itself. */
const DATA_GPA = 2 * MiB;
/** The device's register window: no memslot covers it, so every access is MMIO. */
const MMIO_GPA = 0xfeb0_0000;
/** A paging-structure entry: present, writable. */
const PTE_PRESENT_RW = 0x3;

/** The configurations compared. */
export const DIRECTMAP_CONFIGS = ['direct-map', 'no-direct-map', 'no-direct-map-shared'] as const;
export type DirectmapConfigId = (typeof DIRECTMAP_CONFIGS)[number];

interface DirectmapConfig {
  readonly id: DirectmapConfigId;
  readonly label: string;
  /** NO_DIRECT_MAP on the RAM's guest_memfd (code and working set). */
  readonly ramNoDirectMap: boolean;
  /** NO_DIRECT_MAP on the low region's guest_memfd (page tables, kvm-clock). */
  readonly lowNoDirectMap: boolean;
}

const CONFIGS: Readonly<Record<DirectmapConfigId, DirectmapConfig>> = {
  'direct-map': { id: 'direct-map', label: 'guest_memfd in the direct map (6.18)', ramNoDirectMap: false, lowNoDirectMap: false },
  'no-direct-map': { id: 'no-direct-map', label: 'NO_DIRECT_MAP (seed 002)', ramNoDirectMap: true, lowNoDirectMap: true },
  'no-direct-map-shared': {
    id: 'no-direct-map-shared',
    label: 'NO_DIRECT_MAP, page tables + kvm-clock shared ahead of time',
    ramNoDirectMap: true,
    lowNoDirectMap: false,
  },
};

/** The parameters of `cocokit directmap`, with defaults that run in about a second. */
export const directmapSchema = z
  .object({
    /** Configurations to run, in this order. */
    configs: z
      .array(z.enum(DIRECTMAP_CONFIGS))
      .min(1)
      .refine((c) => new Set(c).size === c.length, 'each configuration at most once')
      .default([...DIRECTMAP_CONFIGS]),
    /** MMIO accesses the guest's driver makes (reads of a status register and doorbell writes, alternately). */
    mmio: count.min(1).default(1000),
    /** Distinct instructions that access the device, each in its own page of kernel text. */
    sites: count.min(1).max(64).default(4),
    /** Guest paging levels: 4 (PML4) or 5 (LA57), the page-table reads of each walk. */
    levels: z.coerce.number().pipe(z.union([z.literal(4), z.literal(5)])).default(4),
    /** Ordinary guest memory writes between two MMIO accesses. */
    accesses: count.default(8),
    /** Guest work between two MMIO accesses, virtual ns. */
    computeNs: count.default(20_000),
    /** Guest RAM (one guest_memfd; the low 64 KiB are a second one). */
    memory: byteSize.default(64 * MiB),
    /** The part of RAM the guest's ordinary accesses cycle through, from 2 MiB. */
    workingSet: byteSize.default(4 * MiB),
  })
  .superRefine((p, ctx) => {
    if (DATA_GPA + p.workingSet > p.memory) {
      ctx.addIssue({ code: 'custom', path: ['workingSet'], message: `the working set [2 MiB, 2 MiB + ${formatSize(p.workingSet)}) does not fit in ${formatSize(p.memory)} of RAM` });
    }
  });

/** The parameters of `directmap` after defaults. */
export type DirectmapParams = z.output<typeof directmapSchema>;

/** What one configuration measured (the guest's run only: the VMM's setup is not counted). */
export interface DirectmapRun {
  readonly config: DirectmapConfigId;
  readonly label: string;
  readonly mmioExits: number;
  /** KVM's own accesses: kvm_read_guest pages, instructions emulated, page-table entries read. */
  readonly kvmReadGuest: number;
  readonly emulations: number;
  readonly walkReads: number;
  /** Temporary remaps by what needed them, and their sum as the host's direct map counted it. */
  readonly remaps: {
    readonly instructionFetch: number;
    readonly pageTableWalk: number;
    readonly kvmClock: number;
    readonly total: number;
  };
  /** Distinct host pages KVM put back into the direct map. */
  readonly pagesExposed: number;
  /** Bytes made visible again, summed over remaps (4 KiB each). */
  readonly bytesExposed: number;
  /** Virtual time removed pages spent mapped, summed over pages, ns: remap → unmap accesses, and the kvm-clock cache. */
  readonly exposureNs: { readonly temporary: number; readonly longTerm: number };
  /** flush_tlb_kernel_range calls for direct-map changes. */
  readonly shootdowns: number;
  /** kvm-clock updates written through the cache (one per KVM_RUN entry while enabled). */
  readonly clockUpdates: number;
  /** Allocated guest pages that stayed in the direct map: exposed for the whole run. */
  readonly directMappedGuestPages: number;
  /** The guest's run, virtual ns. */
  readonly runNs: number;
}

/** What `directmap` returns under `data`. */
export interface DirectmapData {
  readonly walkLevels: number;
  /** kvm_read_guest calls per emulated MMIO access: the walk's entries and the fetch. */
  readonly readsPerEmulation: number;
  readonly runs: readonly DirectmapRun[];
}

/** The walk entries that translate `gpa` (identity-mapped kernel text), root first. */
function walkOf(gpa: number, levels: 4 | 5): number[] {
  const idx = (shift: number): number => Math.floor(gpa / 2 ** shift) % 512;
  const four = [PML4_GPA + idx(39) * 8, PDPT_GPA + idx(30) * 8, PD_GPA + idx(21) * 8, PT_GPA + idx(12) * 8];
  return levels === 5 ? [PML5_GPA + idx(48) * 8, ...four] : four;
}

/** The instruction sites: one per page of kernel text, at an offset inside it. */
function sitesOf(p: DirectmapParams): GuestInsn[] {
  return Array.from({ length: p.sites }, (_, k) => {
    const gpa = CODE_GPA + k * PAGE + 0x120 + 0x40 * (k % 32);
    return { gpa, walk: walkOf(gpa, p.levels) };
  });
}

/**
 * What the VMM loads before the guest runs, through its mappings of the guest_memfds: the page
 * tables (with their entries), the instruction bytes at each site, and the working set and the
 * kvm-clock page zero-filled, so every page the run touches is allocated before the run starts.
 */
function loadGuest(vm: Vm, low: number, ram: number, p: DirectmapParams, sites: readonly GuestInsn[]): void {
  const at = (gpa: number): number => (gpa < LOW_SIZE ? low + gpa : ram + (gpa - LOW_SIZE));
  const write = (gpa: number, bytes: Uint8Array): void => {
    const r = vm.process.write(at(gpa), bytes);
    if (!r.ok) throw new Error(`loading the guest at gpa 0x${gpa.toString(16)}: ${r.signal}`);
  };
  const touch = (gpa: number, size: number): void => {
    const r = vm.process.touch(at(gpa), size, 'write');
    if (!r.ok) throw new Error(`loading the guest at gpa 0x${gpa.toString(16)}: ${r.signal}`);
  };
  touch(0, LOW_SIZE);
  const entry = (next: number): Uint8Array => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(next + PTE_PRESENT_RW), true);
    return b;
  };
  const next = [PML4_GPA, PDPT_GPA, PD_GPA, PT_GPA];
  for (const s of sites) {
    const walk = s.walk ?? [];
    // Each level's entry points at the next table; the last one at the code page.
    const targets = [...next.slice(next.length - walk.length + 1), Math.floor(s.gpa / PAGE) * PAGE];
    walk.forEach((pte, i) => write(pte, entry(targets[i] ?? 0)));
    // mov eax, [rdi] (8b 07) / mov [rdi], eax (89 07): the accessor's load or store.
    write(s.gpa, new Uint8Array([0x8b, 0x07, 0x89, 0x07]));
  }
  touch(DATA_GPA, p.workingSet);
}

/** The guest: kvm-clock on, the driver's MMIO between bursts of work, idle, kvm-clock off (kvmclock_disable), power off. */
function guestProgram(p: DirectmapParams, sites: readonly GuestInsn[]): GuestProgram {
  const wsPages = p.workingSet / PAGE;
  return function* (g) {
    yield* g.wrmsr(uapi.MSR_KVM_SYSTEM_TIME_NEW, KVMCLOCK_GPA + 1);
    for (let i = 0; i < p.mmio; i++) {
      for (let k = 0; k < p.accesses; k++) {
        const page = (i * p.accesses + k) % wsPages;
        yield* g.write(DATA_GPA + page * PAGE, new Uint8Array([i & 0xff]));
      }
      if (p.computeNs > 0) yield* g.compute(p.computeNs);
      const insn = sites[i % sites.length]!;
      if (i % 2 === 0) yield* g.read(MMIO_GPA, 4, { insn });
      else yield* g.write(MMIO_GPA + 4, new Uint8Array([1, 0, 0, 0]), { insn });
    }
    // The measuring point: every temporary remap is over, only the cache still holds its page.
    yield* g.halt();
    yield* g.wrmsr(uapi.MSR_KVM_SYSTEM_TIME_NEW, 0);
  };
}

async function runConfig(c: DirectmapConfig, p: DirectmapParams, io: ExperimentIo, trace: TraceSink[]): Promise<DirectmapRun> {
  const kvm = openKvm({ trace });
  const vm = await kvm.createVm({ type: 'default', proposals: { noDirectMap: c.ramNoDirectMap || c.lowNoDirectMap } });
  const ndm = (on: boolean): number => (on ? uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP : 0);
  // GMEM_ONLY memslots (MMAP | INIT_SHARED): the guest's memory is the file's, the VMM maps it.
  const low = setupGuestMemory(vm, { gpa: 0, size: LOW_SIZE, slot: 0, path: 'in-place', fileFlags: ndm(c.lowNoDirectMap) });
  const ram = setupGuestMemory(vm, { gpa: LOW_SIZE, size: p.memory - LOW_SIZE, slot: 1, path: 'in-place', fileFlags: ndm(c.ramNoDirectMap) });
  const sites = sitesOf(p);
  loadGuest(vm, low.hva, ram.hva, p, sites);

  const host = vm.host;
  const dm0 = host.directMapStats();
  const ka0 = vm.kernelAccess.stats();
  const t0 = kvm.sim.now;
  const vcpu = vm.createVcpu(0, guestProgram(p, sites));
  let mmioExits = 0;
  let atHalt = dm0;
  for (;;) {
    const e = vcpu.run();
    if (isExit(e, 'MMIO')) {
      // The device: the status register reads as ready; doorbell writes are taken.
      if (!e.isWrite) e.data.set([1, 0, 0, 0]);
      mmioExits++;
      io.progress.tick();
    } else if (e.reason === 'HLT') {
      atHalt = host.directMapStats();
    } else if (e.reason === 'SYSTEM_EVENT') {
      break;
    } else {
      throw new Error(`${c.id}: unexpected exit ${e.reason}${'message' in e ? `: ${String(e.message)}` : ''}`);
    }
  }
  const runNs = kvm.sim.now - t0;
  const dm = host.directMapStats();
  const ka = diff(vm.kernelAccess.stats(), ka0);
  vm.checkInvariants();
  let directMappedGuestPages = 0;
  for (const f of vm.gmem.liveFiles()) if (!f.noDirectMap) directMappedGuestPages += f.allocatedPages;
  vm.destroy();
  const walkRemaps = ka.walkRemaps;
  return {
    config: c.id,
    label: c.label,
    mmioExits,
    kvmReadGuest: ka.reads,
    emulations: ka.emulations,
    walkReads: ka.walkReads,
    remaps: { instructionFetch: ka.tempRemaps - walkRemaps, pageTableWalk: walkRemaps, kvmClock: ka.gpcRemaps, total: dm.tempRemaps - dm0.tempRemaps },
    pagesExposed: ka.pagesExposed,
    bytesExposed: dm.bytesExposed - dm0.bytesExposed,
    exposureNs: { temporary: atHalt.exposureNs - dm0.exposureNs, longTerm: dm.exposureNs - atHalt.exposureNs },
    shootdowns: dm.shootdowns - dm0.shootdowns,
    clockUpdates: ka.clockUpdates,
    directMappedGuestPages,
    runNs,
  };
}

function diff(a: KernelAccessStats, b: KernelAccessStats): KernelAccessStats {
  const out: Record<string, number> = {};
  for (const k of Object.keys(a) as Array<keyof KernelAccessStats>) out[k] = a[k] - b[k];
  return out as unknown as KernelAccessStats;
}

const us = (ns: number): number => Math.round(ns / 100) / 10;

function exposureTable(runs: readonly DirectmapRun[]): ResultTable {
  const base = runs.find((r) => r.config === 'direct-map');
  return {
    title: 'Direct-map exposure (the guest run, virtual time)',
    columns: [
      { key: 'config', header: 'configuration' },
      { key: 'mmio', header: 'MMIO exits' },
      { key: 'reads', header: 'kvm_read_guest' },
      { key: 'remaps', header: 'direct-map remaps' },
      { key: 'pages', header: 'pages exposed' },
      { key: 'bytes', header: 'bytes exposed' },
      { key: 'temporary', header: 'exposure, remaps', unit: 'µs' },
      { key: 'longTerm', header: 'exposure, kvm-clock cache', unit: 'µs' },
      { key: 'run', header: 'run time', unit: 'µs' },
      { key: 'perExit', header: 'extra per MMIO exit', unit: 'µs' },
      { key: 'mapped', header: 'guest memory always mapped' },
    ],
    rows: runs.map((r) => ({
      config: r.config,
      mmio: r.mmioExits,
      reads: r.kvmReadGuest,
      remaps: r.remaps.total,
      pages: r.pagesExposed,
      bytes: formatSize(r.bytesExposed),
      temporary: us(r.exposureNs.temporary),
      longTerm: us(r.exposureNs.longTerm),
      run: us(r.runNs),
      perExit: base === undefined || r.mmioExits === 0 ? '' : Math.round((r.runNs - base.runNs) / r.mmioExits) / 1000,
      mapped: formatSize(r.directMappedGuestPages * PAGE),
    })),
  };
}

function causesTable(runs: readonly DirectmapRun[]): ResultTable {
  return {
    title: 'What the remaps were for',
    columns: [
      { key: 'config', header: 'configuration' },
      { key: 'label', header: 'guest memory out of the direct map' },
      { key: 'fetch', header: 'instruction fetch' },
      { key: 'walk', header: 'page-table walk' },
      { key: 'clock', header: 'kvm-clock cache (long-term)' },
      { key: 'shootdowns', header: 'TLB shootdowns' },
      { key: 'clockUpdates', header: 'kvm-clock updates' },
    ],
    rows: runs.map((r) => ({
      config: r.config,
      label: r.label,
      fetch: r.remaps.instructionFetch,
      walk: r.remaps.pageTableWalk,
      clock: r.remaps.kvmClock,
      shootdowns: r.shootdowns,
      clockUpdates: r.clockUpdates,
    })),
  };
}

/** The remap causes, as the chart's series. */
export const REMAP_SERIES = ['instruction fetch', 'page-table walk', 'kvm-clock cache'] as const;
/** The time series of the second chart. */
export const TIME_SERIES = ['run time', 'exposure, remaps', 'exposure, kvm-clock cache'] as const;

function remapsChart(runs: readonly DirectmapRun[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Temporary direct-map remaps by cause',
    width: 300,
    height: 280,
    data: {
      values: runs.flatMap((r) => [
        { config: r.config, cause: REMAP_SERIES[0], remaps: r.remaps.instructionFetch },
        { config: r.config, cause: REMAP_SERIES[1], remaps: r.remaps.pageTableWalk },
        { config: r.config, cause: REMAP_SERIES[2], remaps: r.remaps.kvmClock },
      ]),
    },
    mark: { type: 'bar' },
    encoding: {
      x: { field: 'config', type: 'nominal', title: 'configuration', sort: null, axis: { labelAngle: 0 } },
      y: { field: 'remaps', type: 'quantitative', stack: 'zero', title: 'remaps' },
      color: { field: 'cause', type: 'nominal', title: 'cause', sort: [...REMAP_SERIES] },
      tooltip: [
        { field: 'config', type: 'nominal' },
        { field: 'cause', type: 'nominal' },
        { field: 'remaps', type: 'quantitative' },
      ],
    },
  };
}

function timeChart(runs: readonly DirectmapRun[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Run time and direct-map exposure (virtual time)',
    width: 300,
    height: 280,
    data: {
      values: runs.flatMap((r) => [
        { config: r.config, series: TIME_SERIES[0], us: us(r.runNs) },
        { config: r.config, series: TIME_SERIES[1], us: us(r.exposureNs.temporary) },
        { config: r.config, series: TIME_SERIES[2], us: us(r.exposureNs.longTerm) },
      ]),
    },
    mark: { type: 'bar' },
    encoding: {
      x: { field: 'config', type: 'nominal', title: 'configuration', sort: null, axis: { labelAngle: 0 } },
      xOffset: { field: 'series', type: 'nominal', sort: [...TIME_SERIES] },
      y: { field: 'us', type: 'quantitative', title: 'virtual time (µs)' },
      color: { field: 'series', type: 'nominal', title: 'measure', sort: [...TIME_SERIES] },
      tooltip: [
        { field: 'config', type: 'nominal' },
        { field: 'series', type: 'nominal' },
        { field: 'us', type: 'quantitative', title: 'µs' },
      ],
    },
  };
}

function notes(runs: readonly DirectmapRun[], p: DirectmapParams): string[] {
  const per = p.levels + 1;
  const out: string[] = [
    `The guest made ${p.mmio} MMIO accesses from ${p.sites} instruction site${p.sites === 1 ? '' : 's'} (${p.accesses} ordinary writes and ${us(p.computeNs)} µs of work between two), ` +
      `with kvm-clock enabled throughout. KVM emulates each MMIO access (VMX: EPT misconfiguration → x86_emulate_instruction): it walks the guest's ${p.levels}-level page tables ` +
      `to translate RIP (paging64_walk_addr_generic, one 8-byte entry per level) and fetches the instruction with kvm_read_guest — ${per} kvm_read_guest calls per exit. ` +
      'Ordinary guest accesses go through the stage-2 tables and never touch the direct map.',
  ];
  const ndm = runs.find((r) => r.config === 'no-direct-map');
  if (ndm !== undefined) {
    out.push(
      `With NO_DIRECT_MAP every one of those reads finds its page out of the direct map and remaps it for the access (${ndm.remaps.total} remaps = ${ndm.mmioExits} exits × ${per} + ` +
        `${ndm.remaps.kvmClock} for the kvm-clock cache): each costs two \`host.direct_map_update\`, the unmap's \`host.tlb_shootdown\` (flush_tlb_kernel_range) and ` +
        '`vm.kvm_guest_access`. The cache is the long-term exposure: it keeps the kvm-clock page in the direct map from the guest\'s WRMSR to its kvmclock_disable — ' +
        `${us(ndm.exposureNs.longTerm)} µs of a ${us(ndm.runNs)} µs run — while the ${ndm.remaps.total - ndm.remaps.kvmClock} temporary remaps add up to ${us(ndm.exposureNs.temporary)} µs.`,
    );
  }
  const shared = runs.find((r) => r.config === 'no-direct-map-shared');
  if (shared !== undefined) {
    out.push(
      `Sharing the page tables and the kvm-clock page ahead of time (their own guest_memfd, left in the direct map) removes the walk's and the cache's remaps, ` +
        `${shared.remaps.total} remain: the instruction fetch, which the guest cannot share ahead of time because it cannot know which instruction will hit MMIO — ` +
        'the case that motivated the series. The price is that those pages are always mapped.',
    );
  }
  out.push(
    'Model notes: the guest names the physical addresses its walk reads (the model has no guest virtual memory); KVM treats every KVM_RUN as landing on another CPU, ' +
      'so kvm-clock is rewritten on every entry (writes through the cache, no remap); the VMM loads every page the run touches before it starts, so allocation — ' +
      'which in this model zeroes a NO_DIRECT_MAP folio through a remap of its own — is not part of the counts.',
  );
  return out;
}

async function runDirectmap(p: DirectmapParams, io: ExperimentIo): Promise<ExperimentResult> {
  const runs: DirectmapRun[] = [];
  io.progress.start(p.configs.length * p.mmio, 'directmap');
  try {
    for (const id of p.configs) runs.push(await runConfig(CONFIGS[id], p, io, io.trace(id)));
  } finally {
    io.progress.stop();
  }
  const data: DirectmapData = { walkLevels: p.levels, readsPerEmulation: p.levels + 1, runs };
  return {
    experiment: 'directmap',
    params: { ...p },
    tables: [exposureTable(runs), causesTable(runs)],
    charts: [
      { name: 'directmap-remaps', title: 'Temporary direct-map remaps by cause', spec: remapsChart(runs) },
      { name: 'directmap-time', title: 'Run time and direct-map exposure', spec: timeChart(runs) },
    ],
    notes: notes(runs, p),
    data,
  };
}

/** `cocokit directmap`. */
export const directmapExperiment = defineExperiment({
  name: 'directmap',
  summary: 'Seed 002: guest_memfd out of the direct map — count the remaps MMIO emulation and kvm-clock make, and the bytes and time exposed',
  description:
    'Seed 002 (unmapping guest_memfd from the direct map: KVM_GMEM_NO_DIRECT_MAP). A non-confidential VM backed by guest_memfd ' +
    'makes MMIO accesses, which KVM emulates by walking the guest page tables and fetching the instruction with kvm_read_guest, ' +
    'and runs with kvm-clock, which KVM writes through a gfn_to_pfn_cache. Compares guest_memfd in the direct map, NO_DIRECT_MAP ' +
    '(every such read a temporary remap, the cache a long-term one), and NO_DIRECT_MAP with the page tables and the kvm-clock page ' +
    'shared ahead of time; counts remaps, pages and bytes exposed and the virtual time they stay exposed.',
  schema: directmapSchema,
  options: [
    { flags: '--configs <list>', key: 'configs', description: `configurations to run, comma-separated: ${DIRECTMAP_CONFIGS.join(', ')}`, list: true },
    { flags: '--mmio <n>', key: 'mmio', description: 'MMIO accesses the guest makes' },
    { flags: '--sites <n>', key: 'sites', description: 'distinct instructions accessing the device, one page of code each' },
    { flags: '--levels <n>', key: 'levels', description: 'guest paging levels: 4 or 5' },
    { flags: '--accesses <n>', key: 'accesses', description: 'ordinary guest memory writes between two MMIO accesses' },
    { flags: '--compute <ns>', key: 'computeNs', description: 'guest work between two MMIO accesses, virtual ns' },
    { flags: '--memory <bytes>', key: 'memory', description: 'guest RAM' },
    { flags: '--working-set <bytes>', key: 'workingSet', description: 'RAM the ordinary accesses cycle through' },
  ],
  run: runDirectmap,
});
