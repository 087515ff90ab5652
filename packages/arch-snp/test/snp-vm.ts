/**
 * Test helpers: an SNP VM on a test host with a context shaped like the core's (the sdk kit's
 * `createArchTestVm`, plus a settable `ctx.vcpu` and KVM_ENABLE_CAP state), its typed APIs, and a
 * way to run a guest operation that may exit to userspace (`ctx.exit` throws
 * ArchExitOutsideGuestError, as the kit's does).
 */
import {
  createRingBuffer,
  createSim,
  gfn as toGfn,
  pfn as toPfn,
  uapi,
  type Access,
  type ArchExit,
  type ArchVmContext,
  type GuestAccess,
  type MappingLevel,
  type PageOrder,
  type RingBuffer,
  type Sim,
} from '@cocokit/sdk';
import { ArchExitOutsideGuestError, createTestHostMemory, type TestHostMemory } from '@cocokit/sdk/testing';
import type { SnpArchVm, SnpGuestApi, SnpVmApi } from '../src/api.js';
import type { MapGpaRangeExit } from '../src/psc.js';
import snp from '../src/plugin.js';

/** KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL) with the KVM_HC_MAP_GPA_RANGE bit, as every SNP VMM issues it. */
export const MAP_GPA_RANGE_EXIT_ON: Readonly<Record<number, number>> = { [uapi.KVM_CAP_EXIT_HYPERCALL]: 2 ** uapi.KVM_HC_MAP_GPA_RANGE };

/** An SNP VM under test. */
export interface SnpTestVm {
  readonly vm: SnpArchVm;
  readonly sim: Sim;
  readonly host: TestHostMemory;
  readonly ctx: ArchVmContext;
  /** Exits the VM asked for through `ctx.exit`. */
  readonly exits: readonly ArchExit[];
  /** Reasons the VM gave `ctx.markBugged`. */
  readonly bugs: readonly string[];
  readonly api: SnpVmApi;
  readonly guest: SnpGuestApi;
  /** gmemPrepare with plain numbers. */
  prepare(pfn: number, gfn: number, order?: PageOrder): void;
  /** gmemInvalidate with plain numbers. */
  invalidate(start: number, end: number): void;
  /** Sets what `ctx.vcpu` says (`undefined`: outside any guest operation). */
  onVcpu(vcpu: number | undefined): void;
  /** KVM_ENABLE_CAP on the VM: what `ctx.enabledCap(cap)` answers from now on. */
  enableCap(cap: number, arg0: number): void;
  /** A guest access as the core hands it to `guestAccess` (vCPU 0 unless told). */
  access(a: { gpa: number; access?: Access; private: boolean; pfn: number; level?: MappingLevel; vcpu?: number }): GuestAccess;
  /** A trace ring attached to the VM's sim. */
  trace(): RingBuffer;
}

/**
 * Creates an SNP VM on a fresh test host (2^20 frames unless told) with KVM_HC_MAP_GPA_RANGE exits
 * enabled unless `enabledCaps` says otherwise.
 */
export function snpVm(options: { vmOptions?: Record<string, unknown>; hostFrames?: number; enabledCaps?: Readonly<Record<number, number>> } = {}): SnpTestVm {
  const sim = createSim({ seed: 1 });
  sim.costs.register(snp.name, snp.costs);
  const host = createTestHostMemory(options.hostFrames ?? 2 ** 20);
  const exits: ArchExit[] = [];
  const bugs: string[] = [];
  const caps = new Map<number, number>(Object.entries(options.enabledCaps ?? MAP_GPA_RANGE_EXIT_ON).map(([k, v]) => [Number(k), v]));
  let vcpu: number | undefined;
  const ctx: ArchVmContext = {
    sim,
    host,
    vmType: 'snp',
    options: Object.freeze({ ...(options.vmOptions ?? {}) }),
    exit(e: ArchExit): never {
      exits.push(e);
      throw new ArchExitOutsideGuestError(e);
    },
    get vcpu() {
      return vcpu;
    },
    enabledCap: (cap) => caps.get(cap),
    markBugged: (reason) => {
      bugs.push(reason);
    },
    // No nested tables here: the plugin must not need them (it uses the pfn guestAccess is given).
    translate: () => undefined,
  };
  const vm = snp.createVm(ctx);
  return {
    vm,
    sim,
    host,
    ctx,
    exits,
    bugs,
    api: vm.vmApi,
    guest: vm.guestApi,
    prepare: (pfn, gfn, order = 0) => vm.gmemPrepare(toPfn(pfn), toGfn(gfn), order),
    invalidate: (start, end) => vm.gmemInvalidate(toPfn(start), toPfn(end)),
    onVcpu: (v) => {
      vcpu = v;
    },
    enableCap: (cap, arg0) => {
      caps.set(cap, arg0);
    },
    access: (a) => ({
      gpa: a.gpa,
      gfn: toGfn(Math.floor(a.gpa / 4096)),
      access: a.access ?? 'read',
      private: a.private,
      pfn: toPfn(a.pfn),
      level: a.level ?? 0,
      vcpu: a.vcpu ?? 0,
    }),
    trace: () => {
      const ring = createRingBuffer(10_000);
      sim.trace.attach(ring);
      return ring;
    },
  };
}

/** What a guest operation did: returned a value, or ended the step with an exit. */
export type Step<T> = { readonly value: T } | { readonly exit: ArchExit & { ret: number } };

/** Runs a guest operation (or an exit completion), catching the exit it may end with. */
export function step<T>(f: () => T): Step<T> {
  try {
    return { value: f() };
  } catch (e) {
    // Matched by name, not instanceof (STYLE.md: two copies of a package break instanceof).
    if (typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'ArchExitOutsideGuestError') {
      return { exit: (e as ArchExitOutsideGuestError).exit as ArchExit & { ret: number } };
    }
    throw e;
  }
}

/** The exit of a step (the plugin's only exit is KVM_HC_MAP_GPA_RANGE), failing the test when it returned instead. */
export function exitOf<T>(s: Step<T>): MapGpaRangeExit {
  if (!('exit' in s)) throw new Error(`expected an exit, got the value ${String(s.value)}`);
  return s.exit as MapGpaRangeExit;
}

/** The value of a step, failing the test when it exited instead. */
export function valueOf<T>(s: Step<T>): T {
  if (!('value' in s)) throw new Error(`expected a value, got the exit ${JSON.stringify(s.exit)}`);
  return s.value;
}

/**
 * What KVM_RUN does first after userspace answered `exit` of vCPU `vcpu`: the VM's completeExit
 * (complete_userspace_io), as a step: its value, or the next exit. Fails the test when the
 * plugin asks for the call to be re-issued instead.
 */
export function complete(t: SnpTestVm, exit: ArchExit, vcpu: number): Step<unknown> {
  return step(() => {
    const r = t.vm.completeExit(exit, vcpu);
    if (r === undefined) throw new Error(`completeExit(${exit.reason}) asked for a re-issue`);
    return r.value;
  });
}
