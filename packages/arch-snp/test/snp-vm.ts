/**
 * Test helpers: an SNP VM built by the sdk kit's `createArchTestVm` (a context shaped like the
 * core's: a settable `ctx.vcpu`, KVM_ENABLE_CAP state, a record of exits and `markBugged`), with
 * KVM_HC_MAP_GPA_RANGE exits enabled, its typed APIs, and a way to run a guest operation that may
 * exit to userspace (`ctx.exit` throws; {@link step} catches the exit).
 */
import { createRingBuffer, gfn as toGfn, pfn as toPfn, uapi, type Access, type ArchExit, type GuestAccess, type MappingLevel, type PageOrder, type RingBuffer } from '@cocokit/sdk';
import { archExitOf, createArchTestVm, type ArchTestVm } from '@cocokit/sdk/testing';
import type { SnpArchVm, SnpGuestApi, SnpVmApi } from '../src/api.js';
import type { MapGpaRangeExit } from '../src/psc.js';
import snp from '../src/plugin.js';

/** KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL) with the KVM_HC_MAP_GPA_RANGE bit, as every SNP VMM issues it. */
export const MAP_GPA_RANGE_EXIT_ON: Readonly<Record<number, number>> = { [uapi.KVM_CAP_EXIT_HYPERCALL]: 2 ** uapi.KVM_HC_MAP_GPA_RANGE };

/** An SNP VM under test: the kit's test VM, with SNP's APIs and shorthands. */
export interface SnpTestVm extends Omit<ArchTestVm<SnpArchVm>, 'onVcpu'> {
  readonly api: SnpVmApi;
  readonly guest: SnpGuestApi;
  /** gmemPrepare with plain numbers. */
  prepare(pfn: number, gfn: number, order?: PageOrder): void;
  /** gmemInvalidate with plain numbers. */
  invalidate(start: number, end: number): void;
  /** Sets what `ctx.vcpu` says (`undefined`: outside any guest operation); the kit's `setVcpu`. */
  onVcpu(vcpu: number | undefined): void;
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
  const t = createArchTestVm(snp, 'snp', {
    vmOptions: options.vmOptions ?? {},
    hostFrames: options.hostFrames ?? 2 ** 20,
    enabledCaps: options.enabledCaps ?? MAP_GPA_RANGE_EXIT_ON,
  });
  const { vm } = t;
  return Object.assign(t, {
    api: vm.vmApi,
    guest: vm.guestApi,
    prepare: (pfn: number, gfn: number, order: PageOrder = 0) => vm.gmemPrepare(toPfn(pfn), toGfn(gfn), order),
    invalidate: (start: number, end: number) => vm.gmemInvalidate(toPfn(start), toPfn(end)),
    onVcpu: (v: number | undefined) => t.setVcpu(v),
    access: (a: Parameters<SnpTestVm['access']>[0]): GuestAccess => ({
      gpa: a.gpa,
      gfn: toGfn(Math.floor(a.gpa / 4096)),
      access: a.access ?? 'read',
      private: a.private,
      pfn: toPfn(a.pfn),
      level: a.level ?? 0,
      vcpu: a.vcpu ?? 0,
    }),
    trace: (): RingBuffer => {
      const ring = createRingBuffer(10_000);
      t.sim.trace.attach(ring);
      return ring;
    },
  });
}

/** What a guest operation did: returned a value, or ended the step with an exit. */
export type Step<T> = { readonly value: T } | { readonly exit: ArchExit & { ret: number } };

/** Runs a guest operation (or an exit completion), catching the exit it may end with. */
export function step<T>(f: () => T): Step<T> {
  try {
    return { value: f() };
  } catch (e) {
    const exit = archExitOf(e);
    if (exit !== undefined) return { exit: exit as ArchExit & { ret: number } };
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
