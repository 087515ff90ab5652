/**
 * `cocokit accept`: seed 003's experiment. A large guest whose RAM is a HugeTLB guest_memfd of
 * 1 GiB folios, shared at creation (GUEST_MEMFD_FLAG_INIT_SHARED, the layout where userspace could
 * write the payload through mmap), lazily accepted by the guest in 4 MiB chunks. On SNP each
 * acceptance is snp_accept_memory: a PSC to private (KVM_HC_MAP_GPA_RANGE → the VMM converts the
 * chunk in place) then PVALIDATE of its two 2M entries. Every acceptance leaves its 1 GiB folio
 * mixed until the last chunk of it is accepted, and the two huge-folio policies of the thread part
 * there:
 *
 * - `split-eager` (the 1G RFC v2): the mixed folio is split at once, to 4 KiB folios, and merged
 *   when uniform again. Its pages are prepared (RMPUPDATE) 4K at a time, so PVALIDATE of a 2M entry
 *   fails with SIZEMISMATCH and the guest validates page by page; after the merge the RMP stays
 *   4K ("RMP entries are effectively all split"), so do the nested mappings.
 * - `split-on-fault` (Michael Roth's lpage_info-like proposal): the folio stays whole, the mixed
 *   range only lowers the mapping order to 2M, and only a host fault would split it.
 *
 * The guest program samples the MMU's leaves per level (the mapping-level histogram) every few
 * chunks, at that point of its own progress, so the samples fall at the same places for both
 * policies and cost nothing between them. Everything scales with what the guest accepts, not with
 * the guest's size: a 1 TiB guest accepting 8 GiB costs what 8 GiB costs.
 */
import snp from '@cocokit/arch-snp';
import { PAGE_SIZE, uapi } from '@cocokit/sdk';
import { openKvm, runVmm, setupGuestMemory, type GuestProgram, type Kvm, type Vm } from '@cocokit/vm';
import { AcceptedChunks, acceptChunk, GuestPanic } from '@cocokit/vm/guest';
import type { GuestMemfd, HugeFolioPolicy } from '@cocokit/gmem';
import type { TopLevelSpec } from 'vega-lite';
import { z } from 'zod';
import { defineExperiment, type ExperimentIo, type ExperimentResult, type ResultTable } from '../experiment.js';
import { byteSize, count, formatSize } from '../params.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** Bytes one leaf maps, by level (4K, 2M, 1G). */
const LEVEL_BYTES = [PAGE_SIZE, 2 * MiB, GiB] as const;
const LEVEL_NAMES = ['4K', '2M', '1G'] as const;

/** The VM types the experiment runs: seed 003's SNP, and sw-protected (no acceptance: the guest converts each chunk with KVM_HC_MAP_GPA_RANGE instead). */
export const ACCEPT_TYPES = ['snp', 'sw-protected'] as const;
export type AcceptType = (typeof ACCEPT_TYPES)[number];

/** The huge-folio policies of seed 003, in the order they are compared. */
export const HUGE_POLICIES = ['split-eager', 'split-on-fault'] as const satisfies readonly HugeFolioPolicy[];

export const acceptSchema = z
  .object({
    /** The VM type. */
    type: z.enum(ACCEPT_TYPES).default('snp'),
    /** Guest RAM: one HugeTLB guest_memfd of 1 GiB folios at GPA 0 (a multiple of 1 GiB). */
    size: byteSize.default(8 * GiB),
    /** How much of it the guest accepts, from GPA 0 up (clamped to `size`). */
    accept: byteSize.default(8 * GiB),
    /** The acceptance unit (Linux's accept_memory=lazy on SNP: 4 MiB); must divide 1 GiB. */
    chunk: byteSize.default(4 * MiB),
    /** The policies to compare. */
    policies: z
      .array(z.enum(HUGE_POLICIES))
      .min(1)
      .refine((p) => new Set(p).size === p.length, 'each policy at most once')
      .default([...HUGE_POLICIES]),
    /** The order chunks are accepted in: by address (the zone's unaccepted list) or shuffled. */
    pattern: z.enum(['sequential', 'random']).default('sequential'),
    /** Pages the guest writes in each chunk right after accepting it, spread over the chunk. */
    touches: count.min(1).default(2),
    /** Histogram samples over the run, at most (at least 2: the start and the end). */
    samples: count.min(2).default(64),
    /** Seed of the simulation (the random pattern's shuffle). */
    seed: count.default(1),
  })
  .superRefine((p, ctx) => {
    if (p.size % GiB !== 0) ctx.addIssue({ code: 'custom', path: ['size'], message: `${formatSize(p.size)} is not a whole number of 1 GiB folios` });
    if (GiB % p.chunk !== 0) ctx.addIssue({ code: 'custom', path: ['chunk'], message: `${formatSize(p.chunk)} does not divide 1 GiB` });
    else if (Math.min(p.accept, p.size) % p.chunk !== 0) ctx.addIssue({ code: 'custom', path: ['accept'], message: `${formatSize(p.accept)} is not a whole number of ${formatSize(p.chunk)} chunks` });
    if (p.touches > p.chunk / PAGE_SIZE) ctx.addIssue({ code: 'custom', path: ['touches'], message: `a ${formatSize(p.chunk)} chunk has only ${p.chunk / PAGE_SIZE} pages` });
  });

export type AcceptParams = z.output<typeof acceptSchema>;

/** One point of the run: what the guest had accepted and what the layers held then. */
export interface AcceptSample {
  /** Chunks accepted so far. */
  readonly chunks: number;
  readonly acceptedBytes: number;
  /** The vCPU's virtual clock, ns. */
  readonly nowNs: number;
  /** Present leaves by level (4K, 2M, 1G), both roots: the mapping-level histogram. */
  readonly leaves: readonly [number, number, number];
  /** Every leaf present (the MMU's own count, to check the histogram against). */
  readonly mappedLeaves: number;
  /** guest_memfd folio splits and merges so far (the file's statistics). */
  readonly splits: number;
  readonly merges: number;
  /** Folios in the file's page cache. */
  readonly folios: number;
  /** 1 GiB blocks whose shareability is mixed (lpage_info's KVM_LPAGE_MIXED_FLAG at 1G). */
  readonly mixedBlocks: number;
  readonly pageTablePages: number;
  readonly hostUsedFrames: number;
}

/** One policy's run. */
export interface AcceptRun {
  readonly policy: HugeFolioPolicy;
  readonly samples: readonly AcceptSample[];
  /** The file's statistics at the end. */
  readonly splits: number;
  readonly merges: number;
  readonly conversions: number;
  /** MMU faults (private and shared) and guest-visible exits. */
  readonly faults: number;
  readonly exits: Readonly<Record<string, number>>;
  /** Highs over every chunk (not only the samples). */
  readonly peakFolios: number;
  readonly peakPageTablePages: number;
  readonly peakHostUsedFrames: number;
  /** RMP pages assigned to the guest at the end (SNP only). */
  readonly rmpAssignedPages: number | undefined;
  /** The guest's virtual run time, ns, and the wall time the run took, ms. */
  readonly nowNs: number;
  readonly wallMs: number;
}

/** Folios held in `[0, nrPages)` of a file: the heads of its folio runs. */
function folioCount(file: GuestMemfd): number {
  let n = 0;
  for (const r of file.folioRuns()) {
    const size = 2 ** r.order;
    n += Math.floor((r.end - 1) / size) - Math.ceil(r.start / size) + 1;
  }
  return n;
}

function mixedBlocks(file: GuestMemfd): number {
  let n = 0;
  for (const r of file.mixedRanges(18)) n += (r.end - r.start) / 2 ** 18;
  return n;
}

function leavesByLevel(vm: Vm): [number, number, number] {
  const d = vm.mmu.direct.leafCount;
  const m = vm.mmu.mirror?.leafCount ?? [0, 0, 0];
  return [d[0] + m[0], d[1] + m[1], d[2] + m[2]];
}

/** The chunk indices in the order the guest accepts them. */
function chunkOrder(n: number, pattern: AcceptParams['pattern'], next: () => number): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  if (pattern === 'random') {
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
  }
  return order;
}

async function runPolicy(p: AcceptParams, policy: HugeFolioPolicy, io: ExperimentIo): Promise<AcceptRun> {
  const started = performance.now();
  const accepted = Math.min(p.accept, p.size);
  const chunks = accepted / p.chunk;
  // Host memory only for what is touched (whole 1 GiB folios) and the page tables; nothing is
  // allocated for the rest of the guest.
  const kvm: Kvm = openKvm({
    archs: [snp],
    hostBytes: Math.ceil(accepted / GiB) * GiB + 4 * GiB,
    seed: p.seed,
    inPlaceConversion: true,
    trace: io.trace(`${p.type}: ${policy}`),
  });
  const vm = await kvm.createVm({ type: p.type, hugePolicy: policy, proposals: { hugetlb: true } });
  const mem = setupGuestMemory(vm, {
    size: p.size,
    path: 'in-place',
    private: false,
    fileFlags: uapi.GUEST_MEMFD_FLAG_HUGETLB | uapi.GUEST_MEMFD_HUGE_1GB,
  });
  if (mem.file === undefined) throw new Error('setupGuestMemory made no guest_memfd');
  const file = mem.file.file;
  const every = Math.max(1, Math.ceil(chunks / (p.samples - 1)));
  const samples: AcceptSample[] = [];
  let peakFolios = 0;
  let peakTables = 0;
  let peakHost = 0;
  const sample = (done: number): void => {
    const leaves = leavesByLevel(vm);
    samples.push({
      chunks: done,
      acceptedBytes: done * p.chunk,
      nowNs: vm.sim.now,
      leaves,
      mappedLeaves: vm.mmu.mappedLeaves,
      splits: file.stats().splits,
      merges: file.stats().merges,
      folios: folioCount(file),
      mixedBlocks: mixedBlocks(file),
      pageTablePages: vm.mmu.pageTablePages,
      hostUsedFrames: kvm.host.buddy.usedFrames,
    });
  };
  const stride = p.chunk / PAGE_SIZE / p.touches;
  const program: GuestProgram = function* (g) {
    const set = new AcceptedChunks(p.chunk);
    const order = chunkOrder(chunks, p.pattern, () => g.rng.next());
    sample(0);
    for (let i = 0; i < chunks; i++) {
      const base = order[i]! * p.chunk;
      if (p.type === 'snp') {
        yield* acceptChunk(g, set, base);
      } else {
        // sw-protected has nothing to accept: the guest makes the chunk private before first use.
        const r = yield* g.convert(base, p.chunk, true);
        if (!r.ok) throw new GuestPanic(`converting chunk 0x${base.toString(16)} failed: ${r.reason}`);
      }
      for (let t = 0; t < p.touches; t++) {
        const gpa = base + Math.floor(t * stride + stride / 2) * PAGE_SIZE;
        const w = yield* g.write(gpa, BigInt(gpa / PAGE_SIZE));
        if (w !== undefined) throw new GuestPanic(`${w.name} writing accepted page 0x${gpa.toString(16)}`);
      }
      const folios = folioCount(file);
      if (folios > peakFolios) peakFolios = folios;
      if (vm.mmu.pageTablePages > peakTables) peakTables = vm.mmu.pageTablePages;
      if (kvm.host.buddy.usedFrames > peakHost) peakHost = kvm.host.buddy.usedFrames;
      io.progress.tick();
      if ((i + 1) % every === 0 || i + 1 === chunks) sample(i + 1);
    }
  };
  vm.createVcpu(0, program);
  const r = runVmm(vm, { path: 'in-place' });
  if (!r.ok) throw new Error(`${p.type} guest under ${policy} did not finish: ${r.vcpus.map((v) => v.error ?? v.state).join('; ')}`);
  // The model checks itself before its numbers are reported: folios against the policy and the
  // mixed records, leaves against guest_memfd and the arch (the RMP on SNP).
  vm.checkInvariants();
  kvm.host.checkInvariants();
  const s = file.stats();
  const st = vm.stats();
  const rmp = p.type === 'snp' ? (vm as Vm<'snp'>).archApi.rmpStats().assignedPages : undefined;
  return {
    policy,
    samples,
    splits: s.splits,
    merges: s.merges,
    conversions: s.conversions,
    faults: (st.mmu.faults['private'] ?? 0) + (st.mmu.faults['shared'] ?? 0),
    exits: r.exits,
    peakFolios,
    peakPageTablePages: peakTables,
    peakHostUsedFrames: peakHost,
    rmpAssignedPages: rmp,
    nowNs: r.nowNs,
    wallMs: Math.round(performance.now() - started),
  };
}

function summaryTable(p: AcceptParams, runs: readonly AcceptRun[]): ResultTable {
  return {
    title: `${p.type}: ${formatSize(Math.min(p.accept, p.size))} of a ${formatSize(p.size)} guest accepted in ${formatSize(p.chunk)} chunks (1 GiB HugeTLB folios)`,
    columns: [
      { key: 'policy', header: 'policy' },
      { key: 'splits', header: 'splits' },
      { key: 'merges', header: 'merges' },
      { key: 'faults', header: 'MMU faults' },
      { key: 'leaves4k', header: '4K leaves' },
      { key: 'leaves2m', header: '2M leaves' },
      { key: 'leaves1g', header: '1G leaves' },
      { key: 'peakFolios', header: 'peak folios' },
      { key: 'peakTables', header: 'peak page tables', unit: 'MiB' },
      { key: 'peakHost', header: 'peak host memory', unit: 'MiB' },
      { key: 'guestMs', header: 'guest time', unit: 'ms' },
    ],
    rows: runs.map((r) => {
      const end = r.samples.at(-1)?.leaves ?? [0, 0, 0];
      return {
        policy: r.policy,
        splits: r.splits,
        merges: r.merges,
        faults: r.faults,
        leaves4k: end[0],
        leaves2m: end[1],
        leaves1g: end[2],
        peakFolios: r.peakFolios,
        peakTables: round((r.peakPageTablePages * PAGE_SIZE) / MiB, 2),
        peakHost: round((r.peakHostUsedFrames * PAGE_SIZE) / MiB, 1),
        guestMs: round(r.nowNs / 1e6, 1),
      };
    }),
  };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/**
 * The mapping-level histogram over the guest's progress (what it has accepted: the same points for
 * both policies, whose virtual times differ by the cost being compared), one panel per policy.
 */
function levelsChart(p: AcceptParams, runs: readonly AcceptRun[]): TopLevelSpec {
  const values = runs.flatMap((r) =>
    r.samples.flatMap((s) =>
      LEVEL_NAMES.map((level, l) => ({ policy: r.policy, ms: round(s.nowNs / 1e6, 3), accepted: s.acceptedBytes / GiB, level, mappedGiB: (s.leaves[l]! * LEVEL_BYTES[l]!) / GiB })),
    ),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `Guest memory mapped at each level while ${p.type} accepts ${formatSize(p.chunk)} chunks`,
    data: { values },
    mark: { type: 'area', line: true },
    width: 320,
    height: 200,
    encoding: {
      column: { field: 'policy', type: 'nominal', title: 'huge-folio policy', sort: [...HUGE_POLICIES] },
      x: { field: 'accepted', type: 'quantitative', title: 'accepted by the guest (GiB)' },
      y: { field: 'mappedGiB', type: 'quantitative', stack: 'zero', title: 'mapped (GiB)' },
      color: { field: 'level', type: 'nominal', title: 'mapping level', sort: [...LEVEL_NAMES], scale: { domain: [...LEVEL_NAMES] } },
      order: { field: 'level', sort: 'ascending' },
      tooltip: [
        { field: 'policy', type: 'nominal' },
        { field: 'accepted', type: 'quantitative', title: 'accepted (GiB)' },
        { field: 'ms', type: 'quantitative', title: 'guest virtual time (ms)' },
        { field: 'level', type: 'nominal' },
        { field: 'mappedGiB', type: 'quantitative', title: 'mapped (GiB)' },
      ],
    },
  };
}

function notes(p: AcceptParams, runs: readonly AcceptRun[]): string[] {
  const by = new Map(runs.map((r) => [r.policy, r]));
  const eager = by.get('split-eager');
  const lazy = by.get('split-on-fault');
  const out = [
    `The guest's RAM is one guest_memfd created shared (INIT_SHARED) with 1 GiB HugeTLB folios; the guest accepts ${formatSize(Math.min(p.accept, p.size))} of it in ${formatSize(p.chunk)} chunks, ${p.pattern === 'sequential' ? 'in address order' : 'in a shuffled order'}, and writes ${p.touches} page(s) of each. ` +
      (p.type === 'snp'
        ? 'Each acceptance is a PSC to private (the VMM converts the chunk in place) followed by PVALIDATE, so every 1 GiB folio is mixed from its first accepted chunk until its last.'
        : 'sw-protected has no acceptance: the guest converts each chunk to private with KVM_HC_MAP_GPA_RANGE before using it, which leaves the 1 GiB folio mixed the same way.'),
    'The histogram is sampled by the guest program itself, every few chunks of its own progress (the MMU\'s present leaves per level in both roots), so both policies are sampled at the same points of the guest\'s work (the chart\'s x axis); the vCPU\'s virtual time at each sample is in the data.',
  ];
  if (eager !== undefined) {
    out.push(
      `**split-eager** (the 1G RFC v2): ${eager.splits} split(s) and ${eager.merges} merge(s). A mixed folio is split straight to 4 KiB folios, so the pages it backs are prepared and mapped at 4K` +
        (p.type === 'snp' ? ': sev_gmem_prepare makes 4K RMP entries, PVALIDATE of a 2M entry fails with SIZEMISMATCH and the guest validates page by page. The merge brings the folio back, but not the RMP (no un-PSMASH), so the nested mappings stay 4K — seed 003\'s "we end up splitting every 1GB to 4K and the guest can\'t even accept/PVALIDATE it 2MB".' : '; once the last chunk of a block is converted the folio merges and the next fault maps the whole 1 GiB (hugepage recovery on fault), replacing the 4K tables.') +
        ` Peak folios ${eager.peakFolios}, peak page tables ${formatSize(eager.peakPageTablePages * PAGE_SIZE)}.`,
    );
  }
  if (lazy !== undefined) {
    out.push(
      `**split-on-fault** (Michael Roth's lpage_info-like tracking): ${lazy.splits} split(s), ${lazy.merges} merge(s). The folio stays whole; the mixed record only lowers the mapping order to 2M, and guest_memfd prepares only the uniform private 2M sub-block a fault lands in` +
        (p.type === 'snp' ? ', so the RMP gets 2M entries and PVALIDATE succeeds at 2M. SNP maps private memory no larger than its RMP entry (1G is treated as 2M), so 2M is the best it gets.' : '; when a block becomes uniform the next fault maps it at 1G.') +
        ` Peak folios ${lazy.peakFolios}, peak page tables ${formatSize(lazy.peakPageTablePages * PAGE_SIZE)}.`,
    );
  }
  if (eager !== undefined && lazy !== undefined) {
    out.push(
      `Memory: HugeTLB keeps each touched 1 GiB allocated whatever its folios look like (peak host memory ${formatSize(eager.peakHostUsedFrames * PAGE_SIZE)} vs ${formatSize(lazy.peakHostUsedFrames * PAGE_SIZE)}); what splitting costs is folios (struct page metadata), page tables and faults (${eager.faults} vs ${lazy.faults}), and guest time (${round(eager.nowNs / 1e6, 1)} ms vs ${round(lazy.nowNs / 1e6, 1)} ms). Cost-model entries behind it: \`mmu.fault\`, \`mmu.spte_set\`, \`mmu.table_alloc\`, \`gmem.folio_split\`, \`gmem.folio_merge\`` +
        (p.type === 'snp' ? ', `snp.rmpupdate`, `snp.pvalidate`, `snp.vmgexit`.' : ', `vm.hypercall`, `vm.exit_to_userspace`.'),
    );
  }
  return out;
}

async function runAccept(p: AcceptParams, io: ExperimentIo): Promise<ExperimentResult> {
  const chunks = Math.min(p.accept, p.size) / p.chunk;
  const runs: AcceptRun[] = [];
  io.progress.start(chunks * p.policies.length, 'accept');
  try {
    for (const policy of p.policies) runs.push(await runPolicy(p, policy, io));
  } finally {
    io.progress.stop();
  }
  return {
    experiment: 'accept',
    params: p,
    tables: [summaryTable(p, runs)],
    charts: [{ name: 'accept-levels', title: 'Mapping levels over time, per huge-folio policy', spec: levelsChart(p, runs) }],
    notes: notes(p, runs),
    data: { type: p.type, acceptedBytes: chunks * p.chunk, chunks, runs },
  };
}

export const acceptExperiment = defineExperiment({
  name: 'accept',
  summary: "Seed 003: lazy acceptance of a 1 GiB-folio guest under the eager-split and split-on-fault policies",
  description:
    'Seed 003 (the INIT_PRIVATE / shareability thread): a guest whose RAM is a shared HugeTLB guest_memfd of 1 GiB folios accepts it lazily in 4 MiB chunks, ' +
    'as SNP guests do with accept_memory=lazy. Compares the 1G RFC v2 policy (split a mixed folio at once to 4K, merge when uniform) with split-on-fault ' +
    '(keep the folio, lower the mapping order, split only on a host fault): folio splits and merges, the mapping-level histogram over time, peak memory, faults and guest time.',
  schema: acceptSchema,
  options: [
    { flags: '--type <type>', key: 'type', description: 'VM type: snp or sw-protected' },
    { flags: '--size <bytes>', key: 'size', description: 'guest RAM, a multiple of 1 GiB' },
    { flags: '--accept <bytes>', key: 'accept', description: 'how much the guest accepts, from GPA 0; at most --size' },
    { flags: '--chunk <bytes>', key: 'chunk', description: 'acceptance unit, dividing 1 GiB' },
    { flags: '--policies <policies>', key: 'policies', description: 'huge-folio policies, comma-separated', list: true },
    { flags: '--pattern <pattern>', key: 'pattern', description: 'chunk order: sequential or random' },
    { flags: '--touches <n>', key: 'touches', description: 'pages written per chunk after accepting it' },
    { flags: '--samples <n>', key: 'samples', description: 'histogram samples over the run, at most' },
    { flags: '--seed <n>', key: 'seed', description: 'simulation seed' },
  ],
  run: runAccept,
});
