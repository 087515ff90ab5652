/**
 * Test helpers: an SNP VM built by the sdk's kit, with its typed APIs, and a way to run a guest
 * operation that may exit to userspace (the kit's `ctx.exit` throws ArchExitOutsideGuestError).
 */
import { createRingBuffer, gfn as toGfn, pfn as toPfn, type ArchExit, type PageOrder, type RingBuffer } from '@cocokit/sdk';
import { createArchTestVm, type ArchTestVm } from '@cocokit/sdk/testing';
import type { SnpGuestApi, SnpVmApi } from '../src/api.js';
import type { MapGpaRangeExit } from '../src/psc.js';
import snp from '../src/plugin.js';

/** An SNP VM under test. */
export interface SnpTestVm extends ArchTestVm {
  readonly api: SnpVmApi;
  readonly guest: SnpGuestApi;
  /** gmemPrepare with plain numbers. */
  prepare(pfn: number, gfn: number, order?: PageOrder): void;
  /** gmemInvalidate with plain numbers. */
  invalidate(start: number, end: number): void;
  /** A trace ring attached to the VM's sim. */
  trace(): RingBuffer;
}

/** Creates an SNP VM on a fresh test host (2^20 frames unless told). */
export function snpVm(options: { vmOptions?: Record<string, unknown>; hostFrames?: number } = {}): SnpTestVm {
  const t = createArchTestVm(snp, 'snp', { ...(options.vmOptions && { vmOptions: options.vmOptions }), ...(options.hostFrames && { hostFrames: options.hostFrames }) });
  return {
    ...t,
    api: t.vm.vmApi as SnpVmApi,
    guest: t.vm.guestApi as SnpGuestApi,
    prepare: (pfn, gfn, order = 0) => t.vm.gmemPrepare?.(toPfn(pfn), toGfn(gfn), order),
    invalidate: (start, end) => t.vm.gmemInvalidate?.(toPfn(start), toPfn(end)),
    trace: () => {
      const ring = createRingBuffer(10_000);
      t.sim.trace.attach(ring);
      return ring;
    },
  };
}

/** What a guest operation did: returned a value, or ended the step with an exit. */
export type Step<T> = { readonly value: T } | { readonly exit: ArchExit & { ret: number } };

/** Runs a guest operation, catching the exit it may end with. */
export function step<T>(f: () => T): Step<T> {
  try {
    return { value: f() };
  } catch (e) {
    if (typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'ArchExitOutsideGuestError') {
      return { exit: (e as { exit: ArchExit & { ret: number } }).exit };
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
