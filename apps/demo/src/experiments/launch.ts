/**
 * `cocokit launch`: the launch of a confidential VM, on TDX (upstream, and seed 001's flow) and
 * SEV-SNP. Each type builds its initial image the way KVM drives it and gets a SHA-384 measurement
 * back:
 *
 * - TDX (upstream, v6.16+): KVM_PRE_FAULT_MEMORY is EOPNOTSUPP until finalize; KVM_TDX_INIT_MEM_REGION
 *   runs kvm_gmem_populate per page, whose tdx_gmem_post_populate maps the gfn itself
 *   (kvm_tdp_map_page: TDH.MEM.SEPT.ADD for the path, TDH.MEM.PAGE.ADD for the leaf) and measures
 *   it (16 × TDH.MR.EXTEND); KVM_TDX_FINALIZE_VM closes MRTD and allows pre-faulting.
 * - TDX, seed 001 (`tdx-seed-001`, the plugin's `launchFlow: 'seed-001-premap'`): KVM_PRE_FAULT_MEMORY
 *   builds the S-EPT path and premaps each page without a SEAMCALL; KVM_TDX_INIT_MEM_REGION then
 *   PAGE.ADDs each premapped page and measures it; KVM_TDX_FINALIZE_VM closes MRTD. The MRTD equals
 *   upstream's for the same image: the measurement does not depend on who maps.
 * - SNP: SNP_LAUNCH_START; SNP_LAUNCH_UPDATE through kvm_gmem_populate, which allocates each page
 *   itself (no pre-fault: KVM refuses KVM_PRE_FAULT_MEMORY with EOPNOTSUPP until LAUNCH_FINISH);
 *   SNP_LAUNCH_FINISH seals the launch digest.
 *
 * Every step is timed on the simulation kernel's clock, the image is launched twice (the
 * measurement must repeat) and once with one byte flipped (it must change), and the refusals seed
 * 001 argues about — "Return an error" for a region that was not pre-faulted — are shown with the
 * errno the plugins return.
 */
import snp from '@cocokit/arch-snp';
import tdx, { KVM_TDX_MEASURE_MEMORY_REGION, type TdxLaunchFlow } from '@cocokit/arch-tdx';
import { isKvmError, type PageSource, type TraceSink } from '@cocokit/sdk';
import { openKvm, setupGuestMemory, type Kvm, type Vm } from '@cocokit/vm';
import type { TopLevelSpec } from 'vega-lite';
import { z } from 'zod';
import { defineExperiment, type ExperimentIo, type ExperimentResult, type ResultTable } from '../experiment.js';
import { byteSize, count, formatSize, parseSize } from '../params.js';

const PAGE = 4096;
const MiB = 2 ** 20;

/** The VM types with a measured launch. */
export const LAUNCH_TYPES = ['tdx', 'tdx-seed-001', 'snp'] as const;
/** A VM type with a measured launch. */
export type LaunchType = (typeof LAUNCH_TYPES)[number];

/** SNP guest policy with only bit 17 (reserved, must be one) set: the smallest policy LAUNCH_START accepts. */
const SNP_POLICY_MINIMAL = 2 ** 17;

/** The steps of a launch, in order; upstream TDX and SNP have no pre-fault. */
export const LAUNCH_STEPS = ['create', 'memory', 'prefault', 'populate', 'finalize'] as const;
/** One step of a launch. */
export type LaunchStep = (typeof LAUNCH_STEPS)[number];

const STEP_LABELS: Readonly<Record<LaunchStep, string>> = {
  create: 'create VM',
  memory: 'memory setup',
  prefault: 'pre-fault',
  populate: 'populate + measure',
  finalize: 'finalize',
};

/** What each step is, in KVM's ioctls, per type. */
const STEP_IOCTLS: Readonly<Record<LaunchType, Partial<Readonly<Record<LaunchStep, string>>>>> = {
  tdx: {
    create: 'KVM_CREATE_VM(KVM_X86_TDX_VM), KVM_TDX_INIT_VM',
    memory: 'guest_memfd, memslot, KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)',
    populate: 'KVM_TDX_INIT_MEM_REGION (kvm_gmem_populate): map (SEPT.ADD, PAGE.ADD) + 16 × MR.EXTEND',
    finalize: 'KVM_TDX_FINALIZE_VM: TDH.MR.FINALIZE, pre_fault_allowed',
  },
  'tdx-seed-001': {
    create: 'KVM_CREATE_VM(KVM_X86_TDX_VM), KVM_TDX_INIT_VM',
    memory: 'guest_memfd, memslot, KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)',
    prefault: 'KVM_PRE_FAULT_MEMORY: SEPT.ADD, premap',
    populate: 'KVM_TDX_INIT_MEM_REGION: PAGE.ADD + 16 × MR.EXTEND',
    finalize: 'KVM_TDX_FINALIZE_VM: TDH.MR.FINALIZE',
  },
  snp: {
    create: 'KVM_CREATE_VM(KVM_X86_SNP_VM), SNP_LAUNCH_START',
    memory: 'guest_memfd, memslot, KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)',
    populate: 'SNP_LAUNCH_UPDATE (kvm_gmem_populate): RMPUPDATE + firmware',
    finalize: 'SNP_LAUNCH_FINISH',
  },
};

const MEASUREMENT_NAMES: Readonly<Record<LaunchType, string>> = { tdx: 'MRTD', 'tdx-seed-001': 'MRTD', snp: 'launch digest' };

/** The TDX plugin's launch flow behind each TDX launch type. */
const TDX_FLOWS: Readonly<Partial<Record<LaunchType, TdxLaunchFlow>>> = { tdx: 'upstream', 'tdx-seed-001': 'seed-001-premap' };

/** A guest physical address: page-aligned, given as a number, `0x100000` or a size such as `1MiB`. */
const gpaParam = z
  .union([z.number(), z.string()])
  .transform((v, ctx) => {
    try {
      return typeof v === 'string' && /^0x[0-9a-f]+$/i.test(v.trim()) ? Number.parseInt(v.trim(), 16) : parseSize(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  })
  .pipe(z.number().int().nonnegative().multipleOf(PAGE, 'must be a multiple of 4 KiB'));

/** The parameters of `launch`, with defaults that finish in about a second. */
export const launchSchema = z
  .object({
    /** The VM types to launch. */
    types: z
      .array(z.enum(LAUNCH_TYPES))
      .min(1)
      .refine((t) => new Set(t).size === t.length, 'each type at most once')
      .default([...LAUNCH_TYPES]),
    /** The measured image (the firmware volume): launched page by page. */
    imageSize: byteSize.default(4 * MiB),
    /** Guest RAM, one guest_memfd-backed memslot at GPA 0; the image must fit in it. */
    memory: byteSize.default(64 * MiB),
    /** Where the image starts in guest physical memory. */
    gpa: gpaParam.default(0),
    /** The byte of the image to flip (bit 0) for the second measurement; default the middle byte. */
    flipByte: count.optional(),
    /** Also show the refusals seed 001 discusses, one small VM each. */
    refusals: z.boolean().default(true),
  })
  .superRefine((p, ctx) => {
    if (p.gpa + p.imageSize > p.memory) {
      ctx.addIssue({ code: 'custom', path: ['imageSize'], message: `the image [${p.gpa}, ${p.gpa + p.imageSize}) does not fit in ${formatSize(p.memory)} of guest memory` });
    }
    if (p.flipByte !== undefined && p.flipByte >= p.imageSize) {
      ctx.addIssue({ code: 'custom', path: ['flipByte'], message: `byte ${p.flipByte} is outside the ${p.imageSize}-byte image` });
    }
  });

/** The parameters of `launch` after defaults. */
export type LaunchParams = z.output<typeof launchSchema>;

/** One step's virtual time. */
export interface StepTime {
  readonly step: LaunchStep;
  readonly ns: number;
}

/** What the plugins themselves counted during one launch. */
export interface LaunchCounts {
  /** Pages KVM_PRE_FAULT_MEMORY mapped (seed-001 TDX: nr_premapped right after it; upstream TDX, SNP: 0). */
  readonly prefaultedPages: number;
  /** S-EPT page tables the TDX module added (TDH.MEM.SEPT.ADD); 0 for SNP. */
  readonly septTables: number;
  /** Pages put into the image: TDH.MEM.PAGE.ADD, or SNP_LAUNCH_UPDATE pages. */
  readonly populatedPages: number;
  /** Measurement updates: TDH.MR.EXTEND (256 bytes each), or launch-digest PAGE_INFO updates. */
  readonly measureUpdates: number;
  /** Private pages after finalize: the TDX module's PAMT, or pages assigned in the RMP. */
  readonly privatePages: number;
}

/** One launch of one image on one type. */
export interface LaunchRun {
  readonly type: LaunchType;
  readonly steps: readonly StepTime[];
  readonly totalNs: number;
  /** The measurement's kind as the plugin names it (`mrtd`, `snp-launch-digest`). */
  readonly measurementKind: string;
  readonly measurement: string;
  readonly counts: LaunchCounts;
}

/** A refusal the model gives, as KVM would. */
export interface LaunchRefusal {
  readonly type: LaunchType;
  readonly attempt: string;
  /** The ioctl or kernel function that refused (the error's `op`); empty when nothing did. */
  readonly op: string;
  /** The errno, or `'none'` when the model accepted the attempt. */
  readonly errno: string;
  readonly reason: string;
}

/** Per type: the image, the same image again, the image with one byte flipped. */
export interface LaunchTypeResult {
  readonly type: LaunchType;
  readonly original: LaunchRun;
  readonly again: LaunchRun;
  readonly flipped: LaunchRun;
  /** The same image gave the same measurement. */
  readonly reproducible: boolean;
  /** The flipped byte changed the measurement. */
  readonly flipChanges: boolean;
}

/** What `launch` returns under `data`. */
export interface LaunchData {
  readonly image: { readonly size: number; readonly pages: number; readonly gpa: number; readonly flipByte: number };
  readonly memory: number;
  readonly types: readonly LaunchTypeResult[];
  readonly refusals: readonly LaunchRefusal[];
}

/** A deterministic image: xorshift32 words, so no two pages are alike (as a firmware volume's). */
export function launchImage(size: number): Uint8Array {
  const words = new Uint32Array(size / 4);
  let x = 0x2545f491;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return new Uint8Array(words.buffer);
}

function pageSources(image: Uint8Array): PageSource[] {
  return Array.from({ length: image.length / PAGE }, (_, i) => ({ kind: 'bytes', bytes: image.subarray(i * PAGE, (i + 1) * PAGE) }) as const);
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Laps of the simulation kernel's clock: each `lap(step)` records the time since the previous one. */
function stopwatch(kvm: Kvm): { lap(step: LaunchStep): void; readonly steps: StepTime[] } {
  const steps: StepTime[] = [];
  let mark = kvm.sim.now;
  return {
    steps,
    lap(step) {
      const now = kvm.sim.now;
      steps.push({ step, ns: now - mark });
      mark = now;
    },
  };
}

function openLaunchKvm(trace: TraceSink[]): Kvm {
  return openKvm({ archs: [tdx, snp], trace });
}

/**
 * A TDX launch. Upstream: INIT_MEM_REGION maps, adds and measures each page itself, then finalize.
 * Seed 001: pre-fault the image's range, INIT_MEM_REGION the premapped pages, finalize.
 */
async function launchTdx(type: LaunchType, image: Uint8Array, p: LaunchParams, trace: TraceSink[]): Promise<LaunchRun> {
  const flow = TDX_FLOWS[type] ?? 'upstream';
  const kvm = openLaunchKvm(trace);
  const clock = stopwatch(kvm);
  const vm = await kvm.createVm({ type: 'tdx', archOptions: { gpaw: 48, launchFlow: flow } });
  clock.lap('create');
  setupGuestMemory(vm, { size: p.memory, path: 'attributes' });
  clock.lap('memory');
  const nrPages = image.length / PAGE;
  let prefaultedPages = 0;
  if (flow === 'seed-001-premap') {
    const range = { gpa: p.gpa, size: image.length };
    vm.preFaultMemory(range);
    // KVM_PRE_FAULT_MEMORY returns 0 after partial progress; `size` says what is left.
    if (range.size !== 0) throw new Error(`KVM_PRE_FAULT_MEMORY left ${range.size} bytes of the image unmapped`);
    prefaultedPages = vm.archApi.premapped;
    clock.lap('prefault');
  }
  // Upstream: kvm_gmem_populate per page, tdx_gmem_post_populate maps it. Seed 001: the plugin
  // PAGE.ADDs the pfn the mirror root premapped (kvm_gmem_populate would refuse these pages with
  // EEXIST: the pre-fault prepared each folio, see the refusals).
  vm.archApi.initMemRegion({ gpa: p.gpa, nrPages, sources: pageSources(image) }, KVM_TDX_MEASURE_MEMORY_REGION);
  clock.lap('populate');
  const m = vm.finalize();
  clock.lap('finalize');
  if (m === undefined) throw new Error('KVM_TDX_FINALIZE_VM gave no measurement');
  const s = vm.archApi.module.stats();
  const counts: LaunchCounts = {
    prefaultedPages,
    septTables: s.calls['TDH.MEM.SEPT.ADD'],
    populatedPages: s.calls['TDH.MEM.PAGE.ADD'],
    measureUpdates: s.calls['TDH.MR.EXTEND'],
    privatePages: s.privatePages,
  };
  vm.checkInvariants();
  return finish(type, clock.steps, m, counts);
}

/** SNP: LAUNCH_START, LAUNCH_UPDATE as kvm_gmem_populate's post-populate callback, LAUNCH_FINISH. */
async function launchSnp(image: Uint8Array, p: LaunchParams, trace: TraceSink[]): Promise<LaunchRun> {
  const kvm = openLaunchKvm(trace);
  const clock = stopwatch(kvm);
  const vm = await kvm.createVm({ type: 'snp' });
  vm.archApi.launchStart({ policy: SNP_POLICY_MINIMAL });
  clock.lap('create');
  setupGuestMemory(vm, { size: p.memory, path: 'attributes' });
  clock.lap('memory');
  const npages = image.length / PAGE;
  const updated = snpLaunchUpdate(vm, p.gpa / PAGE, pageSources(image));
  if (updated !== npages) throw new Error(`SNP_LAUNCH_UPDATE did ${updated} of ${npages} pages`);
  clock.lap('populate');
  const m = vm.finalize();
  clock.lap('finalize');
  if (m === undefined) throw new Error('SNP_LAUNCH_FINISH gave no measurement');
  const counts: LaunchCounts = {
    prefaultedPages: 0,
    septTables: 0,
    populatedPages: updated,
    // One PAGE_INFO per page; no VMSA is measured, the experiment creates no vCPU.
    measureUpdates: updated,
    privatePages: vm.archApi.rmpStats().assignedPages,
  };
  vm.checkInvariants();
  return finish('snp', clock.steps, m, counts);
}

/**
 * snp_launch_update: kvm_gmem_populate over the range with sev_gmem_post_populate (the plugin's
 * LAUNCH_UPDATE of the page guest_memfd chose) as the callback. Returns the pages done.
 */
function snpLaunchUpdate(vm: Vm<'snp'>, gfn: number, src: readonly PageSource[]): number {
  const slot = vm.memslots.lookup(gfn);
  if (slot === undefined) throw new Error(`no memslot at gfn 0x${gfn.toString(16)}`);
  let updated = 0;
  vm.gmem.populate({
    slot,
    gfn,
    npages: src.length,
    src,
    kind: 'normal',
    callback: (g, pfn, s) => {
      vm.archApi.launchUpdate({ gfnStart: g, npages: 1, type: 'normal' }, () => ({ pfn, src: s }));
      updated++;
    },
  });
  return updated;
}

function finish(type: LaunchType, steps: readonly StepTime[], m: { kind: string; digest: Uint8Array }, counts: LaunchCounts): LaunchRun {
  return { type, steps, totalNs: steps.reduce((t, s) => t + s.ns, 0), measurementKind: m.kind, measurement: hex(m.digest), counts };
}

function launchOnce(type: LaunchType, image: Uint8Array, p: LaunchParams, trace: TraceSink[]): Promise<LaunchRun> {
  return type === 'snp' ? launchSnp(image, p, trace) : launchTdx(type, image, p, trace);
}

/** Runs `f`, which should be refused; who refused it, with which errno and why, or `'none'`. */
function refusal(type: LaunchType, attempt: string, f: () => unknown): LaunchRefusal {
  try {
    f();
  } catch (e) {
    if (!isKvmError(e)) throw e;
    return { type, attempt, op: e.op, errno: e.errno, reason: e.reason };
  }
  return { type, attempt, op: '', errno: 'none', reason: 'accepted' };
}

/** Upstream TDX's refusals, one small VM each, so each starts from the state the attempt needs. */
async function tdxUpstreamRefusals(trace: TraceSink[]): Promise<LaunchRefusal[]> {
  const kvm = openLaunchKvm(trace);
  const td = async (shared = false): Promise<Vm<'tdx'>> => {
    const vm = await kvm.createVm({ type: 'tdx', archOptions: { gpaw: 48 } });
    setupGuestMemory(vm, { size: 2 * MiB, path: 'attributes', ...(shared ? { private: false } : {}) });
    return vm;
  };
  const onePage = (): PageSource[] => [{ kind: 'bytes', bytes: launchImage(PAGE) }];
  const init = (vm: Vm<'tdx'>, gpa: number) => vm.archApi.initMemRegion({ gpa, nrPages: 1, sources: onePage() }, KVM_TDX_MEASURE_MEMORY_REGION);
  const out: LaunchRefusal[] = [];

  // kvm_arch_vcpu_pre_fault_memory: tdx_vm_init leaves pre_fault_allowed false until tdx_td_finalize.
  const fresh = await td();
  out.push(refusal('tdx', 'KVM_PRE_FAULT_MEMORY before FINALIZE', () => fresh.preFaultMemory({ gpa: 0, size: PAGE })));
  // kvm_gmem_populate: a page already populated is prepared.
  init(fresh, 0);
  out.push(refusal('tdx', 'INIT_MEM_REGION of a page already populated', () => init(fresh, 0)));
  // kvm_gmem_populate: every gfn must carry KVM_MEMORY_ATTRIBUTE_PRIVATE.
  const shared = await td(true);
  out.push(refusal('tdx', 'INIT_MEM_REGION of a shared gfn', () => init(shared, 0)));
  // tdx_vcpu_init_mem_region: "Once TD is finalized, the initial guest memory is fixed."
  fresh.finalize();
  out.push(refusal('tdx', 'INIT_MEM_REGION after FINALIZE (MRTD is sealed)', () => init(fresh, PAGE)));
  return out;
}

/** Seed 001's TDX refusals, one small VM each. */
async function tdxSeedRefusals(trace: TraceSink[]): Promise<LaunchRefusal[]> {
  const kvm = openLaunchKvm(trace);
  const td = async (): Promise<Vm<'tdx'>> => {
    const vm = await kvm.createVm({ type: 'tdx', archOptions: { gpaw: 48, launchFlow: 'seed-001-premap' } });
    setupGuestMemory(vm, { size: 2 * MiB, path: 'attributes' });
    return vm;
  };
  const onePage = (): PageSource[] => [{ kind: 'bytes', bytes: launchImage(PAGE) }];
  const out: LaunchRefusal[] = [];

  const unfaulted = await td();
  out.push(
    refusal('tdx-seed-001', 'INIT_MEM_REGION of a page KVM_PRE_FAULT_MEMORY did not map (seed 001: "Return an error")', () =>
      unfaulted.archApi.initMemRegion({ gpa: 0, nrPages: 1, sources: onePage() }, KVM_TDX_MEASURE_MEMORY_REGION),
    ),
  );

  const premapped = await td();
  premapped.preFaultMemory({ gpa: 0, size: PAGE });
  const slot = premapped.memslots.lookup(0);
  if (slot === undefined) throw new Error('no memslot at gfn 0');
  out.push(
    refusal('tdx-seed-001', 'INIT_MEM_REGION through kvm_gmem_populate after the pre-fault', () =>
      premapped.gmem.populate({ slot, gfn: 0, npages: 1, src: onePage(), kind: 'measured' }),
    ),
  );
  out.push(refusal('tdx-seed-001', 'FINALIZE with a pre-faulted page never added', () => premapped.finalize()));

  const finalized = await td();
  finalized.preFaultMemory({ gpa: 0, size: PAGE });
  finalized.archApi.initMemRegion({ gpa: 0, nrPages: 1, sources: onePage() }, KVM_TDX_MEASURE_MEMORY_REGION);
  finalized.finalize();
  out.push(
    refusal('tdx-seed-001', 'INIT_MEM_REGION after FINALIZE (MRTD is sealed)', () =>
      finalized.archApi.initMemRegion({ gpa: PAGE, nrPages: 1, sources: onePage() }, KVM_TDX_MEASURE_MEMORY_REGION),
    ),
  );
  return out;
}

async function snpRefusals(trace: TraceSink[]): Promise<LaunchRefusal[]> {
  const kvm = openLaunchKvm(trace);
  const guest = async (launchStart: boolean): Promise<Vm<'snp'>> => {
    const vm = await kvm.createVm({ type: 'snp' });
    if (launchStart) vm.archApi.launchStart({ policy: SNP_POLICY_MINIMAL });
    setupGuestMemory(vm, { size: 2 * MiB, path: 'attributes' });
    return vm;
  };
  const onePage = (): PageSource[] => [{ kind: 'bytes', bytes: launchImage(PAGE) }];
  const out: LaunchRefusal[] = [];

  // kvm_arch_vcpu_pre_fault_memory: pre_fault_allowed is false on SNP until SNP_LAUNCH_FINISH, so
  // the launch cannot be fed pre-faulted pages in the first place.
  const started = await guest(true);
  out.push(refusal('snp', 'KVM_PRE_FAULT_MEMORY before SNP_LAUNCH_FINISH', () => started.preFaultMemory({ gpa: 0, size: PAGE })));

  // kvm_gmem_populate: every gfn must carry KVM_MEMORY_ATTRIBUTE_PRIVATE.
  const shared = await kvm.createVm({ type: 'snp' });
  shared.archApi.launchStart({ policy: SNP_POLICY_MINIMAL });
  setupGuestMemory(shared, { size: 2 * MiB, path: 'attributes', private: false });
  out.push(refusal('snp', 'LAUNCH_UPDATE of a shared gfn', () => snpLaunchUpdate(shared, 0, onePage())));

  // snp_launch_update: no firmware guest context (sev->snp_context) before LAUNCH_START.
  const unstarted = await guest(false);
  out.push(refusal('snp', 'LAUNCH_UPDATE before LAUNCH_START', () => snpLaunchUpdate(unstarted, 0, onePage())));
  return out;
}

const us = (ns: number): number => Math.round(ns / 100) / 10;

function stepsTable(results: readonly LaunchTypeResult[], pages: number): ResultTable {
  const rows: Array<Record<string, string | number>> = [];
  for (const r of results) {
    const run = r.original;
    for (const s of run.steps) {
      const handled = s.step === 'prefault' ? run.counts.prefaultedPages : s.step === 'populate' ? run.counts.populatedPages : '';
      rows.push({
        type: r.type,
        step: STEP_LABELS[s.step],
        ioctls: STEP_IOCTLS[r.type][s.step] ?? '',
        pages: handled,
        time: us(s.ns),
        perPage: typeof handled === 'number' && handled > 0 ? us(s.ns / handled) : '',
        share: Math.round((1000 * s.ns) / run.totalNs) / 10,
      });
    }
    rows.push({ type: r.type, step: 'total', ioctls: '', pages, time: us(run.totalNs), perPage: '', share: 100 });
  }
  return {
    title: 'Launch steps (virtual time)',
    columns: [
      { key: 'type', header: 'type' },
      { key: 'step', header: 'step' },
      { key: 'ioctls', header: 'what KVM does' },
      { key: 'pages', header: 'pages' },
      { key: 'time', header: 'time', unit: 'µs' },
      { key: 'perPage', header: 'per page', unit: 'µs' },
      { key: 'share', header: 'share', unit: '%' },
    ],
    rows,
  };
}

function measurementTable(results: readonly LaunchTypeResult[], flipByte: number): ResultTable {
  const rows: Array<Record<string, string | number>> = [];
  for (const r of results) {
    const name = MEASUREMENT_NAMES[r.type];
    rows.push({ type: r.type, measurement: name, image: 'image', digest: r.original.measurement, same: '—' });
    rows.push({ type: r.type, measurement: name, image: 'same image, new VM', digest: r.again.measurement, same: r.reproducible ? 'yes' : 'NO' });
    rows.push({ type: r.type, measurement: name, image: `byte ${flipByte} flipped`, digest: r.flipped.measurement, same: r.flipChanges ? 'no' : 'YES' });
  }
  return {
    title: 'Measurements (SHA-384)',
    columns: [
      { key: 'type', header: 'type' },
      { key: 'measurement', header: 'measurement' },
      { key: 'image', header: 'image' },
      { key: 'digest', header: 'digest' },
      { key: 'same', header: 'same as image' },
    ],
    rows,
  };
}

function countsTable(results: readonly LaunchTypeResult[]): ResultTable {
  return {
    title: 'What the plugins counted',
    columns: [
      { key: 'type', header: 'type' },
      { key: 'prefaulted', header: 'pre-faulted pages' },
      { key: 'sept', header: 'S-EPT tables (SEPT.ADD)' },
      { key: 'populated', header: 'pages added (PAGE.ADD / LAUNCH_UPDATE)' },
      { key: 'measured', header: 'measurement updates (MR.EXTEND / PAGE_INFO)' },
      { key: 'private', header: 'private pages (PAMT / RMP)' },
    ],
    rows: results.map((r) => {
      const c = r.original.counts;
      return { type: r.type, prefaulted: c.prefaultedPages, sept: c.septTables, populated: c.populatedPages, measured: c.measureUpdates, private: c.privatePages };
    }),
  };
}

function refusalsTable(refusals: readonly LaunchRefusal[]): ResultTable {
  return {
    title: 'Refusals',
    columns: [
      { key: 'type', header: 'type' },
      { key: 'attempt', header: 'attempt' },
      { key: 'op', header: 'refused by' },
      { key: 'errno', header: 'errno' },
      { key: 'reason', header: 'reason' },
    ],
    rows: refusals.map((r) => ({ type: r.type, attempt: r.attempt, op: r.op, errno: r.errno, reason: r.reason })),
  };
}

function stepsChart(results: readonly LaunchTypeResult[]): TopLevelSpec {
  const order = LAUNCH_STEPS.map((s) => STEP_LABELS[s]);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Launch steps per VM type (virtual time)',
    width: 240,
    height: 320,
    data: {
      values: results.flatMap((r) => r.original.steps.map((s) => ({ type: r.type, step: STEP_LABELS[s.step], order: LAUNCH_STEPS.indexOf(s.step), us: us(s.ns) }))),
    },
    mark: { type: 'bar' },
    encoding: {
      x: { field: 'type', type: 'nominal', title: 'VM type' },
      y: { field: 'us', type: 'quantitative', stack: 'zero', title: 'virtual time (µs)' },
      color: { field: 'step', type: 'nominal', title: 'step', sort: order },
      order: { field: 'order', type: 'ordinal' },
      tooltip: [
        { field: 'type', type: 'nominal' },
        { field: 'step', type: 'nominal' },
        { field: 'us', type: 'quantitative', title: 'µs' },
      ],
    },
  };
}

async function runLaunch(p: LaunchParams, io: ExperimentIo): Promise<ExperimentResult> {
  const image = launchImage(p.imageSize);
  const pages = p.imageSize / PAGE;
  const flipByte = p.flipByte ?? Math.floor(p.imageSize / 2);
  const flipped = image.slice();
  flipped[flipByte] = (flipped[flipByte] ?? 0) ^ 1;

  io.progress.start(p.types.length * (p.refusals ? 4 : 3), 'launch');
  const results: LaunchTypeResult[] = [];
  const refusals: LaunchRefusal[] = [];
  try {
    for (const type of p.types) {
      const original = await launchOnce(type, image, p, io.trace(`${type}: image`));
      io.progress.tick();
      const again = await launchOnce(type, image, p, io.trace(`${type}: same image`));
      io.progress.tick();
      const changed = await launchOnce(type, flipped, p, io.trace(`${type}: byte ${flipByte} flipped`));
      io.progress.tick();
      results.push({
        type,
        original,
        again,
        flipped: changed,
        reproducible: again.measurement === original.measurement,
        flipChanges: changed.measurement !== original.measurement,
      });
      if (p.refusals) {
        const t = io.trace(`${type}: refusals`);
        refusals.push(...(type === 'tdx' ? await tdxUpstreamRefusals(t) : type === 'tdx-seed-001' ? await tdxSeedRefusals(t) : await snpRefusals(t)));
        io.progress.tick();
      }
    }
  } finally {
    io.progress.stop();
  }

  const data: LaunchData = { image: { size: p.imageSize, pages, gpa: p.gpa, flipByte }, memory: p.memory, types: results, refusals };
  const tables = [stepsTable(results, pages), measurementTable(results, flipByte), countsTable(results)];
  if (p.refusals) tables.push(refusalsTable(refusals));
  return {
    experiment: 'launch',
    params: { ...p, flipByte },
    tables,
    charts: [{ name: 'launch-steps', title: 'Launch steps per VM type', spec: stepsChart(results) }],
    notes: notes(results, p, flipByte),
    data,
  };
}

function populateShare(run: LaunchRun): number {
  const ns = run.steps.find((s) => s.step === 'populate')?.ns ?? 0;
  return Math.round((1000 * ns) / run.totalNs) / 10;
}

function notes(results: readonly LaunchTypeResult[], p: LaunchParams, flipByte: number): string[] {
  const out: string[] = [];
  const size = formatSize(p.imageSize);
  const page = Math.floor(flipByte / PAGE);
  out.push(
    `Each type launched a ${size} image (${p.imageSize / PAGE} pages at GPA 0x${p.gpa.toString(16)}) three times, each in a new VM: ` +
      `the same image twice and once with bit 0 of byte ${flipByte} (page ${page}) flipped. ` +
      results
        .map((r) => `${r.type}: the ${MEASUREMENT_NAMES[r.type]} ${r.reproducible ? 'repeats' : 'does NOT repeat'} for the same image and ${r.flipChanges ? 'changes' : 'does NOT change'} with the flipped byte.`)
        .join(' '),
  );
  out.push(
    `Memory setup is KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) over all ${formatSize(p.memory)} of RAM (\`memslot.attribute_page\` per page), as QEMU does for a ` +
      'guest_memfd RAM block; it is the same for every type and grows with --memory, not with the image.',
  );
  const upRun = results.find((r) => r.type === 'tdx');
  if (upRun) {
    const c = upRun.original.counts;
    out.push(
      'TDX (upstream) has no pre-fault step (`KVM_PRE_FAULT_MEMORY` is EOPNOTSUPP until FINALIZE): `KVM_TDX_INIT_MEM_REGION` runs kvm_gmem_populate per page, ' +
        `whose tdx_gmem_post_populate maps the gfn itself through the MMU (kvm_tdp_map_page: ${c.septTables} × TDH.MEM.SEPT.ADD for the path, then ` +
        `TDH.MEM.PAGE.ADD from the S-EPT hook) and measures it (${c.measureUpdates} × TDH.MR.EXTEND); populate is ${populateShare(upRun.original)}% of the launch.`,
    );
  }
  const seedRun = results.find((r) => r.type === 'tdx-seed-001');
  if (upRun && seedRun) {
    out.push(
      `The MRTD is ${seedRun.original.measurement === upRun.original.measurement ? 'identical' : 'DIFFERENT'} in both TDX flows for the same image: ` +
        'TDH.MEM.PAGE.ADD records the GPA and TDH.MR.EXTEND the contents, not who mapped the page; only the step timings differ.',
    );
  }
  const tdxRun = seedRun;
  if (tdxRun) {
    const c = tdxRun.original.counts;
    out.push(
      `TDX with seed 001's flow (tdx-seed-001): \`KVM_PRE_FAULT_MEMORY\` runs the MMU's fault path for each page (\`mmu.fault\`, guest_memfd allocation and zeroing), builds the ` +
        `S-EPT path (${c.septTables} × TDH.MEM.SEPT.ADD, \`tdx.sept_add\`; it does not touch MRTD) and premaps ${c.prefaultedPages} pages without a SEAMCALL; ` +
        '`KVM_TDX_INIT_MEM_REGION` then only checks that the pfn is the premapped one and issues TDH.MEM.PAGE.ADD plus 16 × TDH.MR.EXTEND per page ' +
        `(${c.measureUpdates} in all): \`tdx.page_add\` + 16 × \`tdx.mr_extend\` per page, ${populateShare(tdxRun.original)}% of the launch.`,
    );
  }
  const snpRun = results.find((r) => r.type === 'snp');
  if (snpRun) {
    out.push(
      'SNP has no pre-fault step: `SNP_LAUNCH_UPDATE` runs kvm_gmem_populate, which allocates each page; the page is copied, made private and Immutable ' +
        '(`snp.rmpupdate`) and measured by the firmware into the launch digest (`snp.launch_update_page` per page; `snp.fw_command` for LAUNCH_START and ' +
        `LAUNCH_FINISH); populate is ${populateShare(snpRun.original)}% of the launch. No VMSA is measured: the experiment creates no vCPU.`,
    );
  }
  if (p.refusals) {
    out.push(
      'Upstream TDX refuses KVM_PRE_FAULT_MEMORY before FINALIZE (EOPNOTSUPP), a page populated twice (kvm_gmem_populate: EEXIST), a shared gfn (EINVAL) ' +
        'and INIT_MEM_REGION after FINALIZE (EINVAL). ' +
        'The tdx-seed-001 refusals are seed 001\'s questions answered by the model: INIT_MEM_REGION on a range that was not pre-faulted fails ("Return an error", ENOENT); ' +
        'going through kvm_gmem_populate after a pre-fault fails with EEXIST, because the pre-fault already prepared each folio and 6.18\'s guest_memfd will not populate a prepared page — ' +
        'which is why that flow calls the plugin\'s INIT_MEM_REGION on the premapped pfns, and why upstream since v6.16 maps inside populate instead. ' +
        'On SNP, KVM_PRE_FAULT_MEMORY is refused (EOPNOTSUPP) until SNP_LAUNCH_FINISH sets pre_fault_allowed, and kvm_gmem_populate refuses a gfn without ' +
        'KVM_MEMORY_ATTRIBUTE_PRIVATE (EINVAL) before the firmware sees it.',
    );
  }
  return out;
}

/** `cocokit launch`. */
export const launchExperiment = defineExperiment({
  name: 'launch',
  summary: 'Seed 001: launch a TD and an SNP guest, time each step and show what one flipped byte does to the measurement',
  description:
    'Seed 001 (KVM_MAP_MEMORY / KVM_PRE_FAULT_MEMORY, then KVM_TDX_INIT_MEM_REGION doing PAGE.ADD on a pre-built S-EPT). ' +
    'Launches the same image on TDX (pre-fault, INIT_MEM_REGION with measurement, FINALIZE: MRTD) and SEV-SNP ' +
    '(LAUNCH_START, LAUNCH_UPDATE through guest_memfd, LAUNCH_FINISH: launch digest), timing each step in virtual time; ' +
    'launches it again to show the measurement repeats, and with one byte flipped to show it changes; ' +
    'and shows the errno each plugin returns for the orderings seed 001 argues about.',
  schema: launchSchema,
  options: [
    { flags: '--types <types>', key: 'types', description: 'VM types to launch, comma-separated', list: true },
    { flags: '--image-size <bytes>', key: 'imageSize', description: 'size of the measured image' },
    { flags: '--memory <bytes>', key: 'memory', description: 'guest RAM, one guest_memfd memslot at GPA 0' },
    { flags: '--gpa <address>', key: 'gpa', description: 'guest physical address of the image, 4 KiB-aligned' },
    { flags: '--flip <byte>', key: 'flipByte', description: 'offset of the image byte to flip; by default the middle byte' },
    { flags: '--no-refusals', key: 'refusals', description: 'skip the refusals (INIT_MEM_REGION without pre-fault, populate after pre-fault, ...)' },
  ],
  run: runLaunch,
});
