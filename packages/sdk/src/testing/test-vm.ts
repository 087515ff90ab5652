/**
 * The kit's stand-in for the core around one VM of an arch plugin: {@link createArchTestVm} builds
 * the {@link ArchVmContext} the plugin's `createVm` receives, as the core (@cocokit/vm) would, so a
 * plugin's hooks can be unit-tested without the core. The conformance checks use it, and so do the
 * plugins' own tests: one context implementation for every plugin, third-party ones included.
 *
 * What the context offers: a real {@link Sim} with the plugin's costs, the kit's
 * {@link createTestHostMemory}, a `ctx.vcpu` the test sets ({@link ArchTestVm.onVcpu}) with a
 * `ctx.exit` that ends the guest operation, KVM_ENABLE_CAP state, a record of exits and
 * `markBugged` reasons, a private root that follows the plugin's private-table hooks (what
 * `ctx.translate` answers), and one guest_memfd behind `ctx.gmemPopulate` and `ctx.mapPrivatePfn`.
 */
import { KvmError } from '../errors.js';
import type { HostMemoryView } from '../host-view.js';
import { createSim } from '../sim/sim.js';
import type { Sim } from '../sim/types.js';
import { gfn as toGfn, pfn as toPfn, type Gfn, type MappingLevel, type Pfn } from '../units.js';
import type { ArchExit, ArchPlugin, ArchResult, ArchVm, ArchVmContext, TableLevel } from '../arch/contract.js';
import { createTestHostMemory, type TestHostMemory } from './host-memory.js';

/** How {@link createArchTestVm} builds the VM and its context. */
export interface ArchTestVmOptions {
  /** Options handed to `createVm` in `ctx.options`. */
  readonly vmOptions?: Readonly<Record<string, unknown>>;
  /** Frames of the test host memory (default 2^20: 4 GiB, stored sparsely). */
  readonly hostFrames?: number;
  /** The simulation seed (default 1). */
  readonly seed?: number;
  /**
   * What `ctx.enabledCap(cap)` answers at creation, by capability number (default: nothing
   * enabled); {@link ArchTestVm.enableCap} changes it later.
   */
  readonly enabledCaps?: Readonly<Record<number, number>>;
  /**
   * Which page of the kit's one guest_memfd backs a gfn, for `ctx.gmemPopulate`:
   * `'offset'` (default): gfn 2^18 + i is pfn 2^18 + i, and a gfn outside that range is in no
   * guest_memfd slot (`EINVAL`); `'allocate'`: every gfn has a page, taken from
   * {@link ArchTestVm.allocPfn} on first use and kept for later.
   */
  readonly gmemBacking?: 'offset' | 'allocate';
}

/** One 4K frame's mapping in the kit's private root: the host frame and the level it is mapped at. */
export interface ArchTestMapping {
  readonly pfn: Pfn;
  readonly level: MappingLevel;
}

/**
 * A VM of the plugin under test, with what the kit built around it.
 *
 * @typeParam Vm - the plugin's VM type (inferred from the plugin), so its `vmApi` and `guestApi` are typed.
 */
export interface ArchTestVm<Vm extends ArchVm = ArchVm> {
  /**
   * The plugin's VM. Where it has private-table hooks, they are seen through a proxy so that
   * {@link ArchTestVm.privateRoot} follows every successful call, as the core's own SPTE writes would.
   */
  readonly vm: Vm;
  readonly sim: Sim;
  readonly host: TestHostMemory;
  readonly ctx: ArchVmContext;
  /** Exits the VM asked for through `ctx.exit`, inside a guest operation or not. */
  readonly exits: readonly ArchExit[];
  /** Reasons the VM gave `ctx.markBugged`. */
  readonly bugs: readonly string[];
  /**
   * Whether KVM_PRE_FAULT_MEMORY would be allowed now (`kvm->arch.pre_fault_allowed`): the VM's
   * `capabilities.preFaultAllowed` (default true), or true once it called `ctx.allowPreFault`.
   */
  readonly preFaultAllowed: boolean;
  /**
   * The private root (the mirror root for archs with one): gfn of each 4K frame → what maps it.
   * Follows `setPrivateSpte`, `removePrivateSpte` and `splitPrivateSpte`, and `ctx.mapPrivatePfn`
   * for a VM without private-table hooks. What `ctx.translate(gfn, 'private')` answers; the
   * shared root is always empty.
   */
  readonly privateRoot: ReadonlyMap<number, ArchTestMapping>;
  /**
   * Runs `f` as a guest operation (or exit completion) of vCPU `vcpu`: `ctx.vcpu` is `vcpu` while
   * it runs, and `ctx.exit` throws {@link ArchGuestExit}. Nests; the outer vCPU is restored after.
   */
  onVcpu<T>(vcpu: number, f: () => T): T;
  /**
   * Sets what `ctx.vcpu` says until the next call, for tests that step a guest operation by hand:
   * a vCPU makes `ctx.exit` throw {@link ArchGuestExit}; `undefined` is outside any guest
   * operation, where `ctx.exit` throws {@link ArchExitOutsideGuestError}.
   */
  setVcpu(vcpu: number | undefined): void;
  /** KVM_ENABLE_CAP on the VM: what `ctx.enabledCap(cap)` answers from now on. */
  enableCap(cap: number, arg0: number): void;
  /**
   * A free host page (aligned to `level`, default 4K) for the test to map, from a bump allocator
   * that starts at pfn 2^19, above the pages the conformance checks use. Throws when host memory
   * is exhausted.
   */
  allocPfn(level?: MappingLevel): Pfn;
}

/** Error thrown by the kit's `ctx.exit`: outside a guest operation no exit is possible. */
export class ArchExitOutsideGuestError extends Error {
  override readonly name = 'ArchExitOutsideGuestError' as const;
  /** The exit asked for. */
  readonly exit: ArchExit;
  constructor(exit: ArchExit) {
    super(`ctx.exit(${JSON.stringify(exit.reason)}) called outside a guest operation`);
    this.exit = exit;
  }
}

/**
 * What the kit's `ctx.exit` throws inside a guest operation ({@link ArchTestVm.onVcpu},
 * {@link ArchTestVm.setVcpu}): the core's signal that ends the vCPU step with an exit to userspace.
 */
export class ArchGuestExit extends Error {
  override readonly name = 'ArchGuestExit' as const;
  /** The exit asked for. */
  readonly exit: ArchExit;
  /** The vCPU whose step it ends. */
  readonly vcpu: number;
  constructor(exit: ArchExit, vcpu: number) {
    super(`vCPU ${vcpu} exited: ${JSON.stringify(exit.reason)}`);
    this.exit = exit;
    this.vcpu = vcpu;
  }
}

/**
 * The exit `e` carries when it is what the kit's `ctx.exit` threw ({@link ArchGuestExit} or
 * {@link ArchExitOutsideGuestError}), else `undefined`. Matched by name, not `instanceof`, so two
 * copies of the sdk agree.
 */
export function archExitOf(e: unknown): ArchExit | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const c = e as { name?: unknown; exit?: ArchExit };
  return c.name === 'ArchGuestExit' || c.name === 'ArchExitOutsideGuestError' ? c.exit : undefined;
}

/** Default frames of the test host memory. */
export const DEFAULT_HOST_FRAMES = 2 ** 20;
/** Where the conformance checks' pages live: 1 GiB aligned, so any order is aligned there. */
export const BASE_PFN = 2 ** 18;
/** The gfn the checks map at {@link BASE_PFN}, the first gfn of the `'offset'` guest_memfd. */
export const BASE_GFN = 2 ** 18;
/** The first pfn {@link ArchTestVm.allocPfn} hands out. */
const ALLOC_BASE_PFN = 2 ** 19;

const framesAt = (level: number): number => 512 ** level;

/** The key of the private page-table page under the entry at `level` that covers `g`. */
export const tableKey = (g: number, level: number): string => `${level}:${Math.floor(g / framesAt(level)) * framesAt(level)}`;

/** The private page-table pages linked per test VM (tables stay linked when a leaf goes, as in the mirror root). */
const linkedTables = new WeakMap<ArchVm, Set<string>>();

/** The private tables the kit has seen linked for `vm` (a VM {@link createArchTestVm} returned). */
export function linkedTablesOf(vm: ArchVm): ReadonlySet<string> {
  return linkedTables.get(vm) ?? new Set();
}

type PrivateTableHook = 'linkPrivateTable' | 'setPrivateSpte' | 'removePrivateSpte' | 'splitPrivateSpte';

/**
 * `raw`, with its private-table hooks seen by the kit: each successful call updates `root` and
 * `linked`. A proxy (other properties read through, functions bound to `raw`) rather than a copy,
 * so getters stay live and class-based VMs keep their private fields.
 */
function watchPrivateTables<Vm extends ArchVm>(raw: Vm, root: Map<number, ArchTestMapping>, linked: Set<string>): Vm {
  const { linkPrivateTable: link, setPrivateSpte: set, removePrivateSpte: remove, splitPrivateSpte: split } = raw;
  if (!link && !set && !remove && !split) return raw;
  /** Sets (or, for `p` undefined, clears) the frames of `span` (default: the level's) from `g`. */
  const setRoot = (g: number, level: MappingLevel, p: number | undefined, span = framesAt(level)): void => {
    for (let i = 0; i < span; i++) {
      if (p === undefined) root.delete(g + i);
      else root.set(g + i, Object.freeze({ pfn: toPfn(p + i), level }));
    }
  };
  const watched: Pick<ArchVm, PrivateTableHook> = {};
  if (link) {
    watched.linkPrivateTable = (g, level): ArchResult => {
      const r = link.call(raw, g, level);
      if (r.status === 'ok') linked.add(tableKey(g, level));
      return r;
    };
  }
  if (set) {
    watched.setPrivateSpte = (g, level, p): ArchResult => {
      const r = set.call(raw, g, level, p);
      if (r.status === 'ok') setRoot(g, level, p);
      return r;
    };
  }
  if (remove) {
    watched.removePrivateSpte = (g, level, p): ArchResult => {
      const r = remove.call(raw, g, level, p);
      if (r.status === 'ok') setRoot(g, level, undefined);
      return r;
    };
  }
  if (split) {
    watched.splitPrivateSpte = (g, level): ArchResult => {
      const r = split.call(raw, g, level);
      const big = root.get(g);
      if (r.status === 'ok') {
        // The leaf at `level` became a table of leaves one level down.
        linked.add(tableKey(g, level));
        if (big) setRoot(g, (level - 1) as MappingLevel, big.pfn, framesAt(level));
      }
      return r;
    };
  }
  const bound = new WeakMap<object, unknown>();
  return new Proxy(raw, {
    get(target, key) {
      if (Object.hasOwn(watched, key)) return watched[key as PrivateTableHook];
      const v: unknown = Reflect.get(target, key, target);
      if (typeof v !== 'function') return v;
      let b = bound.get(v);
      if (b === undefined) bound.set(v, (b = (v as (...args: unknown[]) => unknown).bind(target)));
      return b;
    },
  });
}

/**
 * The kit's kvm_tdp_mmu_map_private_pfn: links the tables `g` lacks (with a mirror root) and sets
 * its 4K leaf, retrying `busy` a bounded number of times, as the core's fault path would.
 */
function kitMapPrivate(vm: ArchVm, linked: ReadonlySet<string>, g: number, p: number): ArchResult {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (vm.capabilities.mirrorRoot) {
      let busy: ArchResult | undefined;
      for (let level = vm.capabilities.privateRootLevel ?? 3; level >= 1 && busy === undefined; level--) {
        if (linked.has(tableKey(g, level))) continue;
        const r = vm.linkPrivateTable?.(toGfn(Math.floor(g / framesAt(level)) * framesAt(level)), level as TableLevel) ?? { status: 'ok' };
        if (r.status === 'error') return r;
        if (r.status === 'busy') busy = r;
      }
      if (busy !== undefined) continue;
    }
    const r = vm.setPrivateSpte?.(toGfn(g), 0, toPfn(p)) ?? { status: 'ok' };
    if (r.status !== 'busy') return r;
  }
  return { status: 'busy', reason: 'still busy after 100 retries' };
}

/**
 * Creates one VM of `plugin` for `vmType` as the core would: a fresh {@link Sim} with the plugin's
 * costs registered (under the plugin's name), a {@link createTestHostMemory}, and a context whose
 * `ctx.exit` records the exit and throws ({@link ArchGuestExit} inside a guest operation,
 * {@link ArchExitOutsideGuestError} outside one). For a plugin's own unit tests:
 *
 * ```ts
 * import { uapi } from '@cocokit/sdk';
 * import { archExitOf, createArchTestVm } from '@cocokit/sdk/testing';
 * import myArch from './index.js';
 *
 * const t = createArchTestVm(myArch, 'my-arch', { enabledCaps: { [uapi.KVM_CAP_EXIT_HYPERCALL]: 2 ** uapi.KVM_HC_MAP_GPA_RANGE } });
 * try {
 *   t.onVcpu(0, () => t.vm.guestApi.share(0x1000));
 * } catch (e) {
 *   const exit = archExitOf(e); // the KVM_HC_MAP_GPA_RANGE exit, also in t.exits
 * }
 * ```
 */
export function createArchTestVm<Vm extends ArchVm = ArchVm>(plugin: ArchPlugin<string, Vm>, vmType: string, options: ArchTestVmOptions = {}): ArchTestVm<Vm> {
  const sim = createSim({ seed: options.seed ?? 1 });
  sim.costs.register(plugin.name, plugin.costs);
  const host = createTestHostMemory(options.hostFrames ?? DEFAULT_HOST_FRAMES);
  const exits: ArchExit[] = [];
  const bugs: string[] = [];
  const caps = new Map<number, number>(Object.entries(options.enabledCaps ?? {}).map(([k, v]) => [Number(k), v]));
  let vcpu: number | undefined;
  let preFaultAllowedByVm = false;
  let nextPfn = ALLOC_BASE_PFN;
  const late: { vm?: Vm } = {};
  const privateRoot = new Map<number, ArchTestMapping>();
  const linked = new Set<string>();
  /** The kit's guest_memfd: pages handed out (`'allocate'`), and pages `ctx.gmemPopulate` prepared. */
  const gmemPages = new Map<number, Pfn>();
  const prepared = new Set<number>();
  const gmemBacking = options.gmemBacking ?? 'offset';

  const allocPfn = (level: MappingLevel = 0): Pfn => {
    const n = framesAt(level);
    const p = Math.ceil(nextPfn / n) * n;
    if (p + n > host.nrFrames) throw new Error(`allocPfn: the test host's ${host.nrFrames} frames are used up`);
    nextPfn = p + n;
    return toPfn(p);
  };
  /** The guest_memfd page backing `g`, or a refusal. */
  const gmemPage = (g: number): Pfn => {
    const op = 'kvm_gmem_populate';
    if (gmemBacking === 'allocate') {
      const p = gmemPages.get(g) ?? allocPfn(0);
      gmemPages.set(g, p);
      return p;
    }
    // The 'offset' guest_memfd backs gfn BASE_GFN + i with pfn BASE_PFN + i.
    if (g < BASE_GFN || g - BASE_GFN + BASE_PFN >= host.nrFrames) throw new KvmError('EINVAL', op, `gfn 0x${g.toString(16)} is in no guest_memfd slot of the kit`);
    return toPfn(g - BASE_GFN + BASE_PFN);
  };

  const ctx: ArchVmContext = {
    sim,
    host: host satisfies HostMemoryView,
    vmType,
    options: Object.freeze({ ...(options.vmOptions ?? {}) }),
    exit(e: ArchExit): never {
      exits.push(e);
      if (vcpu === undefined) throw new ArchExitOutsideGuestError(e);
      throw new ArchGuestExit(e, vcpu);
    },
    get vcpu(): number | undefined {
      return vcpu;
    },
    enabledCap: (cap: number): number | undefined => caps.get(cap),
    markBugged(reason: string): void {
      bugs.push(reason);
    },
    translate: (g: Gfn, root) => (root === 'private' ? privateRoot.get(g) : undefined),
    allowPreFault(): void {
      preFaultAllowedByVm = true;
    },
    gmemPopulate(g, npages, src, kind): number {
      const op = 'kvm_gmem_populate';
      if (!Number.isSafeInteger(npages) || npages <= 0) throw new KvmError('EINVAL', op, 'npages must be positive');
      let done = 0;
      for (; done < npages; done++) {
        const gi = g + done;
        try {
          const p = gmemPage(gi);
          if (prepared.has(gi)) throw new KvmError('EEXIST', op, `gfn 0x${gi.toString(16)} is already prepared`);
          late.vm?.populate?.(toGfn(gi), p, src[done] ?? null, kind);
          prepared.add(gi);
        } catch (e) {
          if (done === 0) throw e;
          break;
        }
      }
      return done;
    },
    mapPrivatePfn(g, p): void {
      const op = 'kvm_tdp_mmu_map_private_pfn';
      const vm = late.vm;
      if (vm === undefined || !vm.capabilities.privateMem) throw new KvmError('EINVAL', op, 'the VM has no private memory');
      const r = kitMapPrivate(vm, linked, g, p);
      if (r.status !== 'ok') throw new KvmError(r.status === 'error' ? r.errno : 'EINTR', op, r.reason);
      // Without private-table hooks the private root is the core's own: the kit maps it itself.
      if (!vm.setPrivateSpte) privateRoot.set(g, Object.freeze({ pfn: p, level: 0 }));
    },
  };
  const vm = watchPrivateTables(plugin.createVm(ctx), privateRoot, linked);
  linkedTables.set(vm, linked);
  late.vm = vm;
  return {
    vm,
    sim,
    host,
    ctx,
    exits,
    bugs,
    get preFaultAllowed(): boolean {
      return preFaultAllowedByVm || vm.capabilities.preFaultAllowed !== false;
    },
    privateRoot,
    onVcpu<T>(id: number, f: () => T): T {
      const outer = vcpu;
      vcpu = id;
      try {
        return f();
      } finally {
        vcpu = outer;
      }
    },
    setVcpu(id: number | undefined): void {
      vcpu = id;
    },
    enableCap(cap: number, arg0: number): void {
      caps.set(cap, arg0);
    },
    allocPfn,
  };
}
