/**
 * Helpers for this package's tests, standing in for the core (@cocokit/vm) the way the contract
 * says it drives a plugin: a TD built by the sdk kit's `createArchTestVm` (a sim with the plugin's
 * costs, the kit's test host memory, `ctx.vcpu` set while a guest operation runs, `ctx.exit` that
 * ends it, the VM's enabled capabilities, a record of `markBugged`, `translate` over the mirror EPT
 * the kit keeps as the TDP MMU would, and a guest_memfd whose pages are allocated on first use);
 * the MMU's side of a private fault (link every missing S-EPT level from the root down, then set
 * the leaf); and a small driver that runs a guest-kernel generator as a vCPU would, catching
 * exits, answering them as a VMM does, completing them with `completeExit` and resolving NPF steps
 * by mapping the page. Not exported from the package entry.
 */
import { ArchGuestExit, createArchTestVm, type ArchTestMapping, type ArchTestVm } from '@cocokit/sdk/testing';
import { gfn as toGfn, pfn as toPfn, uapi, type ArchExit, type ArchGuestOutcome, type ArchGuestStep, type ArchResult, type GuestFault, type MappingLevel, type TableLevel } from '@cocokit/sdk';
import tdx from './plugin.js';
import { SEPT_STATE, framesAtLevel } from './sept.js';
import type { TdxArchVm, TdxVmOptions } from './vm.js';

/** What the test core's mirror EPT holds for a gfn: the page and the level it is mapped at. */
export type MirrorEntry = ArchTestMapping;

/**
 * A test TD and what the test core built around it: the kit's test VM, whose `vm` has its
 * private-table hooks seen by the kit so the mirror EPT follows them (as the MMU's own SPTE writes
 * would), `onVcpu(vcpu, f)` runs `f` as a guest operation (`ctx.exit` throws a {@link GuestExit}),
 * and `allocPfn(level)` is a bump allocator of host pages for faults.
 */
export interface TestTd extends ArchTestVm<TdxArchVm> {
  /** The mirror EPT: gfn of each 4K frame → what maps it (what `ctx.translate(gfn, 'private')` answers); the kit's `privateRoot`. */
  readonly mirror: ReadonlyMap<number, MirrorEntry>;
}

/** What `ctx.exit` throws inside {@link TestTd.onVcpu}: the kit's signal that ends a guest operation. */
export { ArchGuestExit as GuestExit } from '@cocokit/sdk/testing';

/** How the test core is set up beyond the TD's options. */
export interface TestCoreOptions {
  /** KVM_ENABLE_CAP state, by capability (`ctx.enabledCap`). */
  readonly enabledCaps?: Readonly<Record<number, number>>;
  /** Shorthand: KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL, 1 << KVM_HC_MAP_GPA_RANGE). */
  readonly mapGpaExit?: boolean;
}

/** Creates a TD with the test core's context. */
export function createTestTd(options: TdxVmOptions = {}, core: TestCoreOptions = {}): TestTd {
  const enabledCaps: Record<number, number> = { ...(core.enabledCaps ?? {}) };
  if (core.mapGpaExit) enabledCaps[uapi.KVM_CAP_EXIT_HYPERCALL] = 2 ** uapi.KVM_HC_MAP_GPA_RANGE;
  const t = createArchTestVm(tdx, 'tdx', { vmOptions: { ...options }, enabledCaps, gmemBacking: 'allocate' });
  return Object.assign(t, { mirror: t.privateRoot });
}

/**
 * What the TDP MMU does for a private fault at `gfn` mapped at `level`: link each missing S-EPT
 * page from the root down (linkPrivateTable → SEPT.ADD), then set the leaf (setPrivateSpte →
 * premap before finalize, PAGE.AUG after). Returns the first non-ok result, or ok.
 */
export function mapPrivate(vm: TdxArchVm, gfn: number, pfn: number, level: MappingLevel = 0): ArchResult {
  const sept = vm.vmApi.module.sept;
  for (let l = sept.rootLevel; l > level; l--) {
    if (sept.state(gfn, l) === SEPT_STATE.NL_MAPPED) continue;
    const r = vm.linkPrivateTable(toGfn(gfn), l as TableLevel);
    if (r.status !== 'ok') return r;
  }
  return vm.setPrivateSpte(toGfn(gfn), level, toPfn(pfn));
}

/** Runs `f` as a guest operation of `vcpu`, which must exit through `ctx.exit`; returns the exit. */
export function expectExit(t: TestTd, f: () => unknown, vcpu = 0): Record<string, unknown> {
  try {
    t.onVcpu(vcpu, f);
  } catch (e) {
    if (e instanceof ArchGuestExit) return e.exit as Record<string, unknown>;
    throw e;
  }
  throw new Error('expected an exit');
}

/** What a VMM does with an exit: returns `hypercall.ret`. */
export type Userspace = (exit: ArchExit) => number;

/**
 * The VMM's answer to KVM_HC_MAP_GPA_RANGE: convert the range and return 0. Converting to shared
 * zaps the private mappings in it (KVM_SET_MEMORY_ATTRIBUTES → kvm_mmu_unmap_gfn_range →
 * removePrivateSpte); converting to private leaves the private side to be faulted in later.
 */
export function mapGpaRangeVmm(t: TestTd): Userspace {
  return (exit) => {
    if (exit.reason !== 'HYPERCALL' || exit['nr'] !== uapi.KVM_HC_MAP_GPA_RANGE) throw new Error(`unexpected exit ${exit.reason}`);
    const [gpa, npages, attrs] = exit['args'] as readonly number[];
    if (gpa === undefined || npages === undefined || attrs === undefined) throw new Error('malformed MapGPA exit');
    const toPrivate = Math.floor(attrs / uapi.KVM_MAP_GPA_RANGE_ENCRYPTED) % 2 === 1;
    if (!toPrivate) {
      const first = gpa / 4096;
      for (let g = first; g < first + npages; g++) {
        const m = t.mirror.get(g);
        if (!m) continue;
        const base = g - (g % framesAtLevel(m.level));
        const r = t.vm.removePrivateSpte(toGfn(base), m.level, toPfn(m.pfn - (g - base)));
        if (r.status !== 'ok') throw new Error(`zap of gfn ${g} failed: ${JSON.stringify(r)}`);
      }
    }
    return 0;
  };
}

/**
 * KVM's fault path for a private NPF: maps the frame (at `level`, default 4K) on a fresh page,
 * retrying while the module is busy, as the MMU retries the fault.
 */
export function faultIn(t: TestTd, fault: GuestFault, level: MappingLevel = 0): void {
  const c = t.vm.classifyFault(fault);
  if (!c.private) throw new Error(`a shared NPF at 0x${fault.gpa.toString(16)}: the test core only maps private memory`);
  const g = c.gfn - (c.gfn % framesAtLevel(level));
  if (t.mirror.has(g)) return;
  const p = t.allocPfn(level);
  for (let tries = 0; tries < 8; tries++) {
    const r = mapPrivate(t.vm, g, p, level);
    if (r.status === 'ok') return;
    if (r.status === 'error') throw new Error(`fault-in of gfn 0x${g.toString(16)} failed: ${r.reason}`);
  }
  throw new Error(`fault-in of gfn 0x${g.toString(16)} stayed busy`);
}

/** What {@link drive} saw while running a guest-kernel operation. */
export interface DriveResult {
  readonly outcome: ArchGuestOutcome;
  /** Each guest-API call, as `op(args)` with hex addresses. */
  readonly calls: readonly string[];
  /** Each exit the vCPU took to userspace. */
  readonly exits: readonly ArchExit[];
  /** Each NPF step. */
  readonly npfs: readonly GuestFault[];
}

/** How {@link drive} plays the VMM and KVM. */
export interface DriveOptions {
  readonly vcpu?: number;
  /** The VMM's answer to each exit (default {@link mapGpaRangeVmm}). */
  readonly userspace?: Userspace;
  /** KVM's handling of an NPF step (default {@link faultIn} at 4K). */
  readonly npf?: (fault: GuestFault) => void;
  /** Called after every step, e.g. to check invariants. */
  readonly afterStep?: () => void;
}

/**
 * Runs a guest-kernel generator as the core does: each `arch` step is the guest-API call run on
 * the vCPU; an exit goes to `userspace`, which sets `ret`, and the vCPU's next run completes it
 * with `completeExit` (whose `undefined` re-issues the call, and which may exit again); an `npf`
 * step is resolved by KVM's fault path, then the generator resumes.
 */
export function drive(t: TestTd, gen: Generator<ArchGuestStep, ArchGuestOutcome, unknown>, options: DriveOptions = {}): DriveResult {
  const vcpu = options.vcpu ?? 0;
  const userspace = options.userspace ?? mapGpaRangeVmm(t);
  const npf = options.npf ?? ((f: GuestFault) => faultIn(t, f));
  const calls: string[] = [];
  const exits: ArchExit[] = [];
  const npfs: GuestFault[] = [];
  const api = t.vm.guestApi as unknown as Record<string, (...args: unknown[]) => unknown>;
  let input: unknown;
  for (let steps = 0; steps < 100_000; steps++) {
    const r = gen.next(input);
    if (r.done) return { outcome: r.value, calls, exits, npfs };
    options.afterStep?.();
    const step = r.value;
    if (step.kind === 'npf') {
      npfs.push(step.fault);
      npf(step.fault);
      input = undefined;
      continue;
    }
    const fn = api[step.op];
    if (!fn) throw new Error(`guest step names no guest-API op: ${step.op}`);
    calls.push(`${step.op}(${step.args.map((a) => (typeof a === 'number' && a > 4096 ? `0x${a.toString(16)}` : String(a))).join(', ')})`);
    const issue = (): unknown => fn.apply(t.vm.guestApi, [...step.args]);
    let run: () => unknown = issue;
    for (;;) {
      try {
        input = t.onVcpu(vcpu, run);
        break;
      } catch (e) {
        if (!(e instanceof ArchGuestExit)) throw e;
        exits.push(e.exit);
        const answered: ArchExit = { ...e.exit, ret: userspace(e.exit) };
        run = () => {
          const done = t.vm.completeExit(answered, vcpu);
          return done === undefined ? issue() : done.value;
        };
      }
    }
  }
  throw new Error('the guest-kernel operation did not finish in 100000 steps');
}
