/**
 * A tiny stand-in for the core's vCPU loop, to run the plugin's guest-kernel generators in tests:
 *
 * - an `{ kind: 'arch', op, args }` step runs `guestApi[op](...args)` with `ctx.vcpu` set; an exit
 *   goes to "userspace" (which converts the range and sets `ret`), then the VM's `completeExit`
 *   runs (complete_userspace_io), possibly exiting again; `undefined` from it re-issues the call;
 * - an `{ kind: 'npf', fault, zap }` step is KVM's: the zap is recorded (there are no nested tables
 *   here), and the fault path prepares the guest_memfd folio backing the gfn (kvm_gmem_get_pfn →
 *   sev_gmem_prepare), then the generator resumes with `undefined`.
 *
 * guest_memfd is modelled as a fixed gfn → pfn offset (`pfnBase + gfn`), with folios of
 * `folioOrder`; userspace converts to shared by punching the pages out (gmemInvalidate) and to
 * private by doing nothing (the next fault prepares them), as a VMM with KVM_SET_MEMORY_ATTRIBUTES
 * and a hole punch does.
 */
import { gfn as toGfn, pfn as toPfn, uapi, type ArchExit, type ArchGuestOutcome, type ArchGuestStep, type GfnRange, type GuestFault, type PageOrder } from '@cocokit/sdk';
import type { MapGpaRangeExit } from '../src/psc.js';
import { step, type SnpTestVm } from './snp-vm.js';

/** How the stand-in core and VMM behave. */
export interface DriveOptions {
  /** The vCPU the operation runs on (`ctx.vcpu`); default 0. */
  readonly vcpu?: number;
  /** Host pfn of gfn 0 in the model's guest_memfd (default 2^18). */
  readonly pfnBase?: number;
  /** guest_memfd folio order the fault path prepares (default 0). */
  readonly folioOrder?: PageOrder;
  /** Userspace's `ret` for each KVM_HC_MAP_GPA_RANGE exit, after it converted (default 0). */
  readonly answer?: (exit: MapGpaRangeExit) => number;
  /** Steps after which the drive is declared stuck (default 100 000). */
  readonly maxSteps?: number;
}

/** What happened while driving. */
export interface DriveLog {
  readonly outcome: ArchGuestOutcome;
  /** Every step the generator yielded, in order. */
  readonly steps: ArchGuestStep[];
  /** Every exit userspace saw. */
  readonly exits: MapGpaRangeExit[];
  /** Every range KVM was asked to zap, and every fault it resolved. */
  readonly zaps: GfnRange[];
  readonly faults: GuestFault[];
  /** How many times the core re-issued a call because completeExit returned undefined. */
  readonly reissues: number;
}

/** Runs `op` to its end as the core would, with `t`'s plugin. */
export function drive(t: SnpTestVm, op: Generator<ArchGuestStep, ArchGuestOutcome, unknown>, o: DriveOptions = {}): DriveLog {
  const vcpu = o.vcpu ?? 0;
  const pfnBase = o.pfnBase ?? 2 ** 18;
  const order = o.folioOrder ?? 0;
  const log = { steps: [] as ArchGuestStep[], exits: [] as MapGpaRangeExit[], zaps: [] as GfnRange[], faults: [] as GuestFault[], reissues: 0 };
  const api = t.guest as unknown as Record<string, (...args: unknown[]) => unknown>;

  const userspace = (exit: MapGpaRangeExit): void => {
    const [gpa, npages, attrs] = exit.args;
    const gfn = gpa / 4096;
    if ((attrs & uapi.KVM_MAP_GPA_RANGE_ENCRYPTED) === 0) t.invalidate(pfnBase + gfn, pfnBase + gfn + npages);
    exit.ret = o.answer?.(exit) ?? 0;
  };

  const runCall = (name: string, args: readonly unknown[]): unknown => {
    const f = api[name];
    if (f === undefined) throw new Error(`the guest kernel named op '${name}', which the guest API does not have`);
    let r = step(() => f(...args));
    while ('exit' in r) {
      const exit = r.exit as ArchExit as MapGpaRangeExit;
      log.exits.push(exit);
      userspace(exit);
      r = step(() => {
        const c = t.vm.completeExit(exit, vcpu);
        if (c !== undefined) return c.value;
        log.reissues++;
        return f(...args);
      });
    }
    return r.value;
  };

  t.onVcpu(vcpu);
  try {
    let input: unknown;
    for (let n = 0; ; n++) {
      if (n >= (o.maxSteps ?? 100_000)) throw new Error(`the guest-kernel operation is stuck after ${n} steps`);
      const next = op.next(input);
      if (next.done === true) return { outcome: next.value, ...log };
      const s = next.value;
      log.steps.push(s);
      if (s.kind === 'npf') {
        if (s.zap !== undefined) log.zaps.push(s.zap);
        log.faults.push(s.fault);
        const gfn = Math.floor(s.fault.gpa / 4096);
        const base = gfn - (gfn % 2 ** order);
        if (s.fault.encrypted === true) t.vm.gmemPrepare(toPfn(pfnBase + base), toGfn(base), order);
        input = undefined;
      } else {
        input = runCall(s.op, s.args);
      }
    }
  } finally {
    t.onVcpu(undefined);
  }
}
