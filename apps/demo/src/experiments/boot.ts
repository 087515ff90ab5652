/**
 * `cocokit boot`: seed 000's experiment. OVMF flips its one or two DMA pages between private and
 * shared on every DMA transfer; with QEMU discarding on every conversion (punch hole on to-shared,
 * madvise on to-private) a 1 GiB SNP guest booted in 1m43s, with the shared discard disabled in
 * 1m08s, and without the guest_memfd conversions at all (SNP before UPM) in 32s.
 *
 * Here the same guest boots once per configuration, each on a fresh host, under the VMM helper of
 * @cocokit/vm: the conversion path (VM attributes or guest_memfd in place) and the VMM's discard
 * policy vary, the guest program does not. Virtual time comes from the cost model; every cost
 * charged is tallied by name, so the result says which cost-model entries make the gaps.
 */
import snp from '@cocokit/arch-snp';
import tdx from '@cocokit/arch-tdx';
import pkvm from '@cocokit/arch-pkvm';
import type { CostName, Sim } from '@cocokit/sdk';
import { isGuestException, openKvm, setupGuestMemory, Vmm, type ConversionPath, type DiscardPolicy, type GuestMemory, type GuestProgram, type Vm } from '@cocokit/vm';
import { firmwareBoot, GuestPanic, touchWorkingSet } from '@cocokit/vm/guest';
import type { TopLevelSpec } from 'vega-lite';
import { z } from 'zod';
import { defineExperiment, type ExperimentIo, type ExperimentResult, type ResultTable } from '../experiment.js';
import { byteSize, count, formatSize } from '../params.js';

const PAGE = 4096;
const MiB = 2 ** 20;
/** OVMF's DMA pages: private RAM the firmware allocates its bounce buffer from. */
const DMA_GPA = MiB;
/** The OS's working set starts here, 2 MiB aligned and clear of the DMA pages. */
const WORKING_SET_GPA = 4 * MiB;
/** Linux accepts unaccepted memory in 2 MiB units (the EFI stub's PMD-sized bitmap unit). */
const ACCEPT_CHUNK = 2 * MiB;
/** SNP guest policy with only bit 17 (reserved, must be one) set: the smallest LAUNCH_START accepts. */
const SNP_POLICY_MINIMAL = 2 ** 17;

/** The VM types the boot runs on. */
export const BOOT_VM_TYPES = ['sw-protected', 'snp', 'tdx', 'pkvm'] as const;
export type BootVmType = (typeof BOOT_VM_TYPES)[number];

/** The configurations compared, slowest expected first. */
export const BOOT_CONFIGURATIONS = ['both', 'private-only', 'lazy', 'none', 'in-place', 'no-conversion'] as const;
export type BootConfigurationId = (typeof BOOT_CONFIGURATIONS)[number];

interface BootConfiguration {
  readonly id: BootConfigurationId;
  readonly label: string;
  readonly path: ConversionPath;
  readonly discard: DiscardPolicy;
  /** Whether the firmware flips its DMA pages on every transfer (seed 000) or shares them once. */
  readonly flipPerTransfer: boolean;
}

const CONFIGURATIONS: Readonly<Record<BootConfigurationId, BootConfiguration>> = {
  both: { id: 'both', label: 'punch hole on every conversion (QEMU)', path: 'attributes', discard: 'both', flipPerTransfer: true },
  'private-only': { id: 'private-only', label: 'no shared discard (seed 000)', path: 'attributes', discard: 'private-only', flipPerTransfer: true },
  lazy: { id: 'lazy', label: 'lazy, batched discard', path: 'attributes', discard: 'lazy', flipPerTransfer: true },
  none: { id: 'none', label: 'no discard', path: 'attributes', discard: 'none', flipPerTransfer: true },
  'in-place': { id: 'in-place', label: 'in-place conversion', path: 'in-place', discard: 'none', flipPerTransfer: true },
  'no-conversion': { id: 'no-conversion', label: 'no conversion cost (DMA pages shared once)', path: 'attributes', discard: 'none', flipPerTransfer: false },
};

/** The parameters of `cocokit boot`. */
export const bootParams = z
  .object({
    type: z.enum(BOOT_VM_TYPES).default('snp'),
    size: byteSize.default(2 ** 30),
    /** Seed 000 gives times, not a count: 10 000 transfers is the vm boot bench's default. */
    transfers: count.pipe(z.number().min(1, 'at least one DMA transfer')).default(10_000),
    dmaPages: z.coerce.number().pipe(z.union([z.literal(1), z.literal(2)])).default(2),
    workingSet: byteSize.default(64 * MiB),
    configurations: z.array(z.enum(BOOT_CONFIGURATIONS)).min(1).default([...BOOT_CONFIGURATIONS]),
    seed: count.default(0),
  })
  .superRefine((p, ctx) => {
    if (WORKING_SET_GPA + p.workingSet > p.size) {
      ctx.addIssue({
        code: 'custom',
        path: ['workingSet'],
        message: `the working set (${formatSize(p.workingSet)} at ${formatSize(WORKING_SET_GPA)}) does not fit in a ${formatSize(p.size)} guest`,
      });
    }
  });
export type BootParams = z.output<typeof bootParams>;

/** What one configuration's boot measured. */
export interface BootRun {
  readonly id: BootConfigurationId;
  readonly label: string;
  readonly path: ConversionPath;
  readonly discard: DiscardPolicy;
  /** False when the VM type cannot run it (TDX has no in-place conversion); every number is then 0. */
  readonly applicable: boolean;
  readonly reason?: string;
  /** Virtual time of the whole boot: the VMM's setup plus the guest's run, ns. */
  readonly bootNs: number;
  /** Of which the setup before the vCPU runs (memslot, guest_memfd, initial attributes, launch), ns. */
  readonly setupNs: number;
  /** Conversions the VMM made (KVM_HC_MAP_GPA_RANGE exits that changed shareability), and the pages they covered. */
  readonly conversions: number;
  readonly convertedPages: number;
  /** KVM_HC_MAP_GPA_RANGE exits for memory already in the requested state: the ioctl had nothing to do. */
  readonly noopConversions: number;
  readonly exits: Readonly<Record<string, number>>;
  readonly zaps: number;
  readonly tlbFlushes: number;
  readonly punchHoles: number;
  readonly punchedPages: number;
  readonly sharedDiscards: number;
  readonly sharedDiscardedPages: number;
  readonly lazyBatches: number;
  readonly lazyCancelledPages: number;
  readonly pendingDiscardPages: number;
  /** Host frames: the high-water mark over the boot, and what is in use at its end. */
  readonly peakHostUsedFrames: number;
  readonly hostUsedFrames: number;
  readonly guestMemfdPages: number;
  readonly sharedAnonPages: number;
  /** Guest pages backed twice at the end: a guest_memfd page and a shared page in the VMM. */
  readonly doubleAllocatedPages: number;
  /** Virtual time charged per cost-model entry, ns (setup and run). */
  readonly costNs: Readonly<Record<string, number>>;
  /** Wall time of the simulation, ms. */
  readonly wallMs: number;
}

/**
 * Tallies what `sim` charges, by cost name. The simulation kernel keeps clocks, not a ledger, and
 * naming the entries that make a gap needs one; wrapping `charge` sees every charge of every
 * package and plugin, because they all charge through the one Sim they were given.
 */
function chargeLedger(sim: Sim): Map<string, number> {
  const ledger = new Map<string, number>();
  const charge = sim.charge.bind(sim);
  sim.charge = (cost: CostName, units = 1) => {
    ledger.set(cost, (ledger.get(cost) ?? 0) + sim.costs.get(cost) * units);
    charge(cost, units);
  };
  return ledger;
}

/**
 * The boot, as the guest runs it. The firmware runs from private memory below its DMA buffer and
 * allocates the buffer from private, validated RAM, so the private copy of the DMA pages exists
 * before the first flip. Then the transfers; then the OS
 * touches its working set, accepting 2 MiB chunks on first use where the VM type needs acceptance.
 * Without per-transfer flips the firmware shares the DMA pages once, keeps them shared for every
 * transfer (what a swiotlb-style pool does) and makes them private again when it is done: the same
 * accesses and the same end state, two conversions per DMA page instead of two per transfer.
 */
function bootProgram(p: BootParams, flipPerTransfer: boolean): GuestProgram {
  return function* (g) {
    const dmaBytes = p.dmaPages * PAGE;
    // The firmware's own memory below its DMA buffer, then the buffer itself, written privately.
    yield* touchWorkingSet(g, { gpa: 0, size: DMA_GPA + dmaBytes });
    if (flipPerTransfer) {
      yield* firmwareBoot(g, { dmaGpa: DMA_GPA, dmaPages: p.dmaPages, transfers: p.transfers });
    } else {
      // Page by page, as OVMF's IoMmu maps each buffer page.
      for (let i = 0; i < p.dmaPages; i++) {
        const shared = yield* g.convert(DMA_GPA + i * PAGE, PAGE, false);
        if (!shared.ok) throw new GuestPanic(`DMA page ${i} could not be shared: ${shared.reason}`);
      }
      for (let i = 0; i < p.transfers; i++) {
        const page = DMA_GPA + (i % p.dmaPages) * PAGE;
        const w = yield* g.write(page, BigInt(i + 1), { shared: true });
        if (w !== undefined) throw new GuestPanic(`shared DMA write faulted: ${w.name}`);
        const r = yield* g.read(page, 8, { shared: true });
        if (isGuestException(r)) throw new GuestPanic(`shared DMA read faulted: ${r.name}`);
      }
      // ExitBootServices: the firmware frees its DMA buffer, private again, as after the flips.
      for (let i = 0; i < p.dmaPages; i++) {
        const back = yield* g.convert(DMA_GPA + i * PAGE, PAGE, true);
        if (!back.ok) throw new GuestPanic(`DMA page ${i} could not be made private again: ${back.reason}`);
      }
    }
    yield* touchWorkingSet(g, { gpa: WORKING_SET_GPA, size: p.workingSet, acceptChunk: ACCEPT_CHUNK });
  };
}

/** The launch a confidential VM needs before its vCPUs run; the measured image is `cocokit launch`'s business. */
function launch(vm: Vm): void {
  if (vm.type === 'snp') {
    (vm as Vm<'snp'>).archApi.launchStart({ policy: SNP_POLICY_MINIMAL });
    vm.finalize();
  } else if (vm.type === 'tdx') {
    vm.finalize();
  }
}

/**
 * Guest pages backed by both a guest_memfd page and an anonymous page of the VMM (attributes
 * layout): the double allocation. Only pages the VMM has resident are looked at.
 */
function doubleAllocatedPages(vm: Vm, mem: GuestMemory): number {
  if (mem.file === undefined) return 0;
  const file = mem.file.file;
  const first = mem.hva / PAGE;
  const npages = mem.size / PAGE;
  let n = 0;
  for (const run of vm.process.mappedRuns()) {
    if (!run.anon) continue;
    for (let i = 0; i < run.npages; i++) {
      const index = run.hfn + i - first;
      if (index >= 0 && index < npages && file.folioAt(index) !== undefined) n++;
    }
  }
  return n;
}

const archs = [snp, tdx, pkvm];

/** Whether `type` offers in-place conversion when the module parameter is on, and why not. */
async function inPlaceSupport(type: BootVmType): Promise<string | undefined> {
  const kvm = openKvm({ archs, hostBytes: 2 ** 30, inPlaceConversion: true });
  const vm = await kvm.createVm({ type });
  const supported = vm.capabilities.inPlaceConversion;
  vm.destroy();
  return supported ? undefined : `${type} does not support in-place conversion (its private pages cannot be mapped by the host)`;
}

/** Boots the guest once under configuration `c` on a fresh host. */
async function bootOnce(p: BootParams, c: BootConfiguration, io: ExperimentIo): Promise<BootRun> {
  const t0 = performance.now();
  const kvm = openKvm({
    archs,
    // Room for both copies of all of RAM, the worst double allocation; nothing is allocated up front.
    hostBytes: 2 * p.size + 2 ** 30,
    inPlaceConversion: c.path === 'in-place',
    seed: p.seed,
    trace: io.trace(c.label),
  });
  const ledger = chargeLedger(kvm.sim);
  const vm = await kvm.createVm({ type: p.type });
  const mem = setupGuestMemory(vm, { size: p.size, path: c.path });
  launch(vm);
  const setupNs = kvm.sim.now;
  vm.createVcpu(0, bootProgram(p, c.flipPerTransfer));
  const vmm = new Vmm(vm, c.path === 'in-place' ? { path: 'in-place' } : { path: c.path, discard: c.discard });
  const r = vmm.run();
  if (!r.ok) throw new Error(`boot (${c.label}) on ${p.type} failed: ${r.vcpus.map((v) => v.error ?? v.state).join('; ')}`);
  vm.checkInvariants();
  kvm.checkInvariants();
  const s = vm.stats();
  const run: BootRun = {
    id: c.id,
    label: c.label,
    path: c.path,
    discard: c.discard,
    applicable: true,
    bootNs: r.nowNs,
    setupNs,
    conversions: r.conversions,
    convertedPages: r.convertedPages,
    noopConversions: r.noopConversions,
    exits: r.exits,
    zaps: s.mmu.zaps,
    tlbFlushes: s.mmu.tlbFlushes,
    punchHoles: s.conversions.punchHoles,
    punchedPages: s.conversions.punchedPages,
    sharedDiscards: s.conversions.sharedDiscards,
    sharedDiscardedPages: s.conversions.sharedDiscardedPages,
    lazyBatches: s.conversions.lazyBatches,
    lazyCancelledPages: s.conversions.lazyCancelledPages,
    pendingDiscardPages: s.conversions.pendingDiscardPages,
    peakHostUsedFrames: s.memory.peakHostUsedFrames,
    hostUsedFrames: s.memory.hostUsedFrames,
    guestMemfdPages: s.memory.guestMemfdPages,
    sharedAnonPages: s.memory.sharedAnonPages,
    doubleAllocatedPages: c.path === 'in-place' ? 0 : doubleAllocatedPages(vm, mem),
    costNs: Object.fromEntries([...ledger].filter(([, ns]) => ns > 0).sort((a, b) => b[1] - a[1])),
    wallMs: performance.now() - t0,
  };
  vm.destroy();
  return run;
}

function notApplicable(c: BootConfiguration, reason: string): BootRun {
  return {
    id: c.id,
    label: c.label,
    path: c.path,
    discard: c.discard,
    applicable: false,
    reason,
    bootNs: 0,
    setupNs: 0,
    conversions: 0,
    convertedPages: 0,
    noopConversions: 0,
    exits: {},
    zaps: 0,
    tlbFlushes: 0,
    punchHoles: 0,
    punchedPages: 0,
    sharedDiscards: 0,
    sharedDiscardedPages: 0,
    lazyBatches: 0,
    lazyCancelledPages: 0,
    pendingDiscardPages: 0,
    peakHostUsedFrames: 0,
    hostUsedFrames: 0,
    guestMemfdPages: 0,
    sharedAnonPages: 0,
    doubleAllocatedPages: 0,
    costNs: {},
    wallMs: 0,
  };
}

const ms = (ns: number): number => Math.round(ns / 1e3) / 1e3;
const fmtMs = (ns: number): string => `${ms(ns).toFixed(1)} ms`;

/** The package a cost entry belongs to (`vm`, `host`, `gmem`, `mmu`, `memslot`, `snp`, `tdx`, `pkvm`). */
const costGroup = (name: string): string => name.slice(0, name.indexOf('.'));

/** The cost entries that differ most between two runs, largest first: `name` +x.x ms. */
function gapEntries(a: BootRun, b: BootRun, top = 3): Array<{ name: string; ns: number }> {
  const names = new Set([...Object.keys(a.costNs), ...Object.keys(b.costNs)]);
  return [...names]
    .map((name) => ({ name, ns: (a.costNs[name] ?? 0) - (b.costNs[name] ?? 0) }))
    .filter((e) => e.ns > 0)
    .sort((x, y) => y.ns - x.ns)
    .slice(0, top);
}

function describeGap(slow: BootRun, fast: BootRun): string {
  const entries = gapEntries(slow, fast)
    .map((e) => `\`${e.name}\` +${fmtMs(e.ns)}`)
    .join(', ');
  return `**${slow.label}** vs **${fast.label}**: +${fmtMs(slow.bootNs - fast.bootNs)}, led by ${entries}`;
}

function resultTable(p: BootParams, runs: readonly BootRun[]): ResultTable {
  const na = 'n/a';
  return {
    title: `Booting a ${formatSize(p.size)} ${p.type} guest: ${p.transfers} DMA transfers over ${p.dmaPages} page${p.dmaPages === 1 ? '' : 's'}, then a ${formatSize(p.workingSet)} working set`,
    columns: [
      { key: 'configuration', header: 'configuration' },
      { key: 'path', header: 'path' },
      { key: 'boot', header: 'virtual boot time', unit: 'ms' },
      { key: 'setup', header: 'of which setup', unit: 'ms' },
      { key: 'conversions', header: 'conversions' },
      { key: 'noops', header: 'no-op conversions' },
      { key: 'zaps', header: 'zaps' },
      { key: 'punchHoles', header: 'punch holes' },
      { key: 'sharedDiscards', header: 'shared discards' },
      { key: 'peak', header: 'peak host memory', unit: 'MiB' },
      { key: 'double', header: 'double-allocated', unit: 'KiB' },
    ],
    rows: runs.map((r) =>
      r.applicable
        ? {
            configuration: r.label,
            path: r.path === 'in-place' ? 'in place' : `attributes, discard ${r.discard}`,
            boot: ms(r.bootNs),
            setup: ms(r.setupNs),
            conversions: r.conversions,
            noops: r.noopConversions,
            zaps: r.zaps,
            punchHoles: r.punchHoles,
            sharedDiscards: r.sharedDiscards,
            peak: Math.round((r.peakHostUsedFrames * PAGE * 100) / MiB) / 100,
            double: (r.doubleAllocatedPages * PAGE) / 1024,
          }
        : { configuration: r.label, path: na, boot: na, setup: na, conversions: na, noops: na, zaps: na, punchHoles: na, sharedDiscards: na, peak: na, double: na },
    ),
  };
}

/** The cost entries that make the differences: those whose time varies most across the runs. */
function costTable(runs: readonly BootRun[], top = 8): ResultTable {
  const ran = runs.filter((r) => r.applicable);
  const names = new Set(ran.flatMap((r) => Object.keys(r.costNs)));
  const spread = (name: string) => {
    const v = ran.map((r) => r.costNs[name] ?? 0);
    return Math.max(...v) - Math.min(...v);
  };
  const rows = [...names].sort((a, b) => spread(b) - spread(a)).slice(0, top);
  return {
    title: 'Where the virtual time goes: the cost-model entries that differ most between configurations',
    columns: [{ key: 'cost', header: 'cost entry' }, ...ran.map((r) => ({ key: r.id, header: r.id, unit: 'ms' }))],
    rows: rows.map((name) => ({ cost: name, ...Object.fromEntries(ran.map((r) => [r.id, ms(r.costNs[name] ?? 0)])) })),
  };
}

/** A horizontal bar per configuration, stacked by the package whose costs make up the time. */
function chartSpec(p: BootParams, runs: readonly BootRun[]): TopLevelSpec {
  const values = runs
    .filter((r) => r.applicable)
    .flatMap((r) => {
      const byGroup = new Map<string, number>();
      for (const [name, ns] of Object.entries(r.costNs)) byGroup.set(costGroup(name), (byGroup.get(costGroup(name)) ?? 0) + ns);
      return [...byGroup].map(([group, ns]) => ({ configuration: r.label, costs: group, ms: ms(ns) }));
    });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: `Virtual boot time, ${formatSize(p.size)} ${p.type} guest, ${p.transfers} DMA transfers`, subtitle: 'stacked by the package whose cost-model entries were charged' },
    width: 560,
    data: { values },
    mark: { type: 'bar', tooltip: true },
    encoding: {
      y: { field: 'configuration', type: 'nominal', title: null, axis: { labelLimit: 320 }, sort: runs.filter((r) => r.applicable).map((r) => r.label) },
      x: { field: 'ms', type: 'quantitative', aggregate: 'sum', stack: 'zero', title: 'virtual time (ms)' },
      color: { field: 'costs', type: 'nominal', title: 'costs of' },
    },
  };
}

function notesFor(p: BootParams, runs: readonly BootRun[]): string[] {
  const by = new Map(runs.filter((r) => r.applicable).map((r) => [r.id, r]));
  const notes: string[] = [
    `Each configuration boots a fresh ${formatSize(p.size)} ${p.type} guest (seed ${p.seed}) with one vCPU: the firmware writes its own memory and its ${p.dmaPages} DMA page${p.dmaPages === 1 ? '' : 's'} privately (accepting them first where the type needs it), makes ${p.transfers} DMA transfers, flipping the page to shared and back around each (seed 000's OVMF pattern, two KVM_HC_MAP_GPA_RANGE exits per transfer), then the OS touches ${formatSize(p.workingSet)}, accepting 2 MiB chunks on first use. Boot time is virtual: the VMM's setup (memslot, guest_memfd, the initial KVM_SET_MEMORY_ATTRIBUTES over all of RAM, the launch) plus the guest's run, as the cost model charges them; seed 000 reports times (1m43s, 1m08s, 32s), not a transfer count, so ${p.transfers} is a parameter.`,
    '**No conversion cost** is the same guest on the same VM type whose firmware shares its DMA pages once, keeps them shared for every transfer and makes them private again at the end (two conversions per DMA page instead of two per transfer), and its VMM discards nothing; every other access, validation and acceptance is the same, so its distance to the other rows is what conversions and their discards cost. A non-confidential `default` VM would also drop validation and acceptance, and the gap would no longer be the conversions alone.',
  ];
  const flipped = runs.find((r) => r.applicable && r.id !== 'no-conversion');
  if (flipped !== undefined && flipped.conversions > 2 * p.transfers) {
    notes.push(
      `The conversions column counts every page-state change the VMM handled that changed shareability: ${2 * p.transfers} for the DMA flips and ${flipped.conversions - 2 * p.transfers} more.`,
    );
  }
  if (flipped !== undefined && flipped.noopConversions > 0) {
    notes.push(
      `The no-op conversions column counts the page-state changes the VMM handled for memory already in the requested state (on ${p.type} accepting memory asks for a change to private before validation, and the memory is private already): the kernel's ioctl returns 0 with nothing to do (kvm_vm_set_mem_attributes, and guest_memfd's in-place conversion, when the range already has the attributes), so no arch hook and no zap.`,
    );
  }
  const both = by.get('both');
  const privateOnly = by.get('private-only');
  const none = by.get('none');
  const base = by.get('no-conversion');
  const gaps: string[] = [];
  if (both !== undefined && privateOnly !== undefined) gaps.push(describeGap(both, privateOnly));
  if (privateOnly !== undefined && base !== undefined) gaps.push(describeGap(privateOnly, base));
  if (privateOnly !== undefined && none !== undefined) gaps.push(describeGap(privateOnly, none));
  if (gaps.length > 0) {
    const ordered = both !== undefined && privateOnly !== undefined && base !== undefined && both.bootNs > privateOnly.bootNs && privateOnly.bootNs > base.bootNs;
    notes.push(
      `${ordered ? "Seed 000's direction holds: punching a hole on every conversion is slower than leaving the shared copy alone, which is slower than not converting per transfer. " : ''}The gaps and the cost-model entries that make most of them (override any with \`openKvm({ costs })\`): ${gaps.join('; ')}.`,
    );
  }
  const kept = runs.filter((r) => r.applicable && r.doubleAllocatedPages > 0);
  if (kept.length > 0) {
    const peakRange = runs.filter((r) => r.applicable).map((r) => r.peakHostUsedFrames);
    notes.push(
      `Peak host memory is the host allocator's high-water mark (every purpose: guest_memfd, the VMM's anonymous memory, page tables). The working set dominates it; the policies differ by ${Math.max(...peakRange) - Math.min(...peakRange)} frames at most. Double allocation — a guest page backed both by guest_memfd and by the VMM's shared memory — is left by ${kept.map((r) => `*${r.label}* (${formatSize(r.doubleAllocatedPages * PAGE)})`).join(', ')}: only the DMA pages ever flip, so it is bounded by them whatever the transfer count, while the discards' time grows with every transfer. That is why seed 000 could trade the shared discard away.`,
    );
  }
  const inPlace = by.get('in-place');
  if (inPlace !== undefined && none !== undefined) {
    notes.push(
      `In place (PROPOSED-CONV) keeps one copy of each page, so there is nothing to discard and no double allocation; every conversion zaps, though (${inPlace.zaps} zaps against ${none.zaps} for attributes without discard), and there is no initial KVM_SET_MEMORY_ATTRIBUTES over RAM (setup ${fmtMs(inPlace.setupNs)} against ${fmtMs(none.setupNs)}).`,
    );
  }
  for (const r of runs) if (!r.applicable && r.reason !== undefined) notes.push(`*${r.label}*: not applicable: ${r.reason}.`);
  const wall = runs.reduce((s, r) => s + r.wallMs, 0);
  notes.push(`Simulated in ${(wall / 1000).toFixed(1)} s of wall time.`);
  return notes;
}

/** `cocokit boot`. */
export const bootExperiment = defineExperiment({
  name: 'boot',
  summary: "Seed 000: a guest boots with OVMF's DMA flips under each conversion path and discard policy",
  description:
    "Seed 000 (Michael Roth, 2022): OVMF flips one or two DMA pages between private and shared on every transfer, and QEMU's discard on every conversion made a 1 GiB SNP guest boot in 1m43s instead of 1m08s with the shared discard disabled (32s without UPM's conversions). This boots a guest of the chosen size and type with that pattern once per configuration — punch hole on every conversion (QEMU), no shared discard, lazy batched discard, no discard, in-place conversion, and no per-transfer conversion at all — and reports virtual boot time, conversions, zaps, punch holes, peak host memory and the double allocation, with the cost-model entries that make the differences.",
  schema: bootParams,
  options: [
    { flags: '--type <type>', key: 'type', description: `VM type: ${BOOT_VM_TYPES.join(', ')}` },
    { flags: '--size <bytes>', key: 'size', description: 'guest RAM, e.g. 1GiB' },
    { flags: '--transfers <n>', key: 'transfers', description: 'DMA transfers the firmware makes, two conversions each' },
    { flags: '--dma-pages <n>', key: 'dmaPages', description: 'DMA pages the firmware cycles through: 1 or 2' },
    { flags: '--working-set <bytes>', key: 'workingSet', description: 'memory the OS touches after the firmware' },
    { flags: '--configs <list>', key: 'configurations', description: `configurations to run, comma-separated: ${BOOT_CONFIGURATIONS.join(', ')}`, list: true },
    { flags: '--seed <n>', key: 'seed', description: 'seed of the simulation' },
  ],
  async run(p, io): Promise<ExperimentResult> {
    const configurations = BOOT_CONFIGURATIONS.filter((id) => p.configurations.includes(id)).map((id) => CONFIGURATIONS[id]);
    const inPlaceRefused = configurations.some((c) => c.path === 'in-place') ? await inPlaceSupport(p.type) : undefined;
    const runs: BootRun[] = [];
    io.progress.start(configurations.length, `boot ${p.type}`);
    try {
      for (const c of configurations) {
        runs.push(c.path === 'in-place' && inPlaceRefused !== undefined ? notApplicable(c, inPlaceRefused) : await bootOnce(p, c, io));
        io.progress.tick();
        // Lets the progress bar draw between the synchronous boots.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      io.progress.stop();
    }
    return {
      experiment: 'boot',
      params: p,
      tables: [resultTable(p, runs), costTable(runs)],
      charts: [{ name: 'boot-time', title: 'Virtual boot time by configuration', spec: chartSpec(p, runs) }],
      notes: notesFor(p, runs),
      data: { runs },
    };
  },
});
