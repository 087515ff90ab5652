/**
 * The TD guest's operations as KVM and the TDX module handle them: TDG.MEM.PAGE.ACCEPT, what a
 * guest access to private memory meets (the `guestAccess` hook: #VE on a PENDING page, or KVM
 * killing the TD with SEPT_VE_DISABLE), and TDG.VP.VMCALL<MapGPA>, which KVM turns into
 * KVM_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE) exits in 2 MiB chunks completed by the `completeExit`
 * hook (tdx_map_gpa, __tdx_map_gpa, tdx_complete_vmcall_map_gpa and tdx_handle_ept_violation in
 * arch/x86/kvm/vmx/tdx.c). The guest OS's side of the same operations is guest-kernel.ts.
 */
import {
  uapi,
  type KvmError,
  type ArchExit,
  type ArchVmContext,
  type GuestAccess,
  type GuestException,
  type GuestFault,
  type GuestNpf,
} from '@cocokit/sdk';
import type { TdxModule } from './module.js';
import { SEPT_STATE, framesAtLevel, isBlocked, isLeaf, septStateName, type SeptLevel } from './sept.js';
import { TDVMCALL_STATUS, TDX_STATUS } from './status.js';

/** TDG.VP.VMCALL<MapGPA> sub-function (GHCI). */
export const TDVMCALL_MAP_GPA = 0x10001;
/** KVM_EXIT_HYPERCALL_LONG_MODE (include/uapi/linux/kvm.h): kvm_run.hypercall.flags bit 0. */
export const KVM_EXIT_HYPERCALL_LONG_MODE = 1;
/** TDX_MAP_GPA_MAX_LEN in tdx.c: KVM exits to userspace for at most 2 MiB of a MapGPA at a time. */
export const TDX_MAP_GPA_MAX_LEN = 2 * 1024 * 1024;
/** X86_TRAP_VE: the #VE vector. */
export const X86_TRAP_VE = 20;

/** What TDG.MEM.PAGE.ACCEPT returns to the guest. */
export type TdxAcceptResult =
  | { readonly kind: 'status'; readonly status: bigint }
  /** The module exited to KVM (EPT violation, type ACCEPT, at `level`); after KVM maps, the guest retries. */
  | { readonly kind: 'ept-violation'; readonly fault: GuestFault; readonly level: SeptLevel };

/** A TDVMCALL's completion as the guest sees it: R10 (`status`) and, when KVM sets it, R11. */
export interface TdvmcallResult {
  readonly status: bigint;
  readonly r11?: number;
}

/**
 * The KVM_EXIT_HYPERCALL exit a MapGPA produces, as __tdx_map_gpa fills kvm_run: `args` is
 * `[gpa, npages, attrs, 0, 0, 0]` with the shared bit stripped from `gpa` and `attrs`
 * KVM_MAP_GPA_RANGE_ENCRYPTED for a private range (DECRYPTED, 0, for a shared one). Userspace
 * converts the range, writes `ret` (0: done) and runs the vCPU again.
 */
export interface TdxMapGpaExit extends ArchExit {
  readonly reason: 'HYPERCALL';
  readonly exitReason: typeof uapi.KVM_EXIT_HYPERCALL;
  readonly nr: typeof uapi.KVM_HC_MAP_GPA_RANGE;
  readonly args: readonly [number, number, number, 0, 0, 0];
  /** kvm_run.hypercall.ret: KVM presets 0 (__tdx_map_gpa), userspace overwrites it. */
  readonly ret: number;
  readonly flags: typeof KVM_EXIT_HYPERCALL_LONG_MODE;
}

/** The guest operations of a TD (the plugin's `guestApi`), each run by the core on a vCPU. */
export interface TdxGuestApi {
  /** TDG.VP.INFO's GPAW (RCX[5:0]); the guest's shared bit is GPAW - 1. */
  vpInfo(): { readonly gpaw: number };
  /** TDG.MEM.PAGE.ACCEPT of the private `gpa` at `level` (0 = 4K, 1 = 2M; 2 = 1G is OPERAND_INVALID). */
  accept(gpa: number, level?: number): TdxAcceptResult;
  /**
   * TDG.VP.VMCALL<MapGPA>(gpa, size) on the current vCPU (`ctx.vcpu`): the errors KVM returns
   * directly (SUBFUNC_UNSUPPORTED without KVM_CAP_EXIT_HYPERCALL's KVM_HC_MAP_GPA_RANGE bit,
   * INVALID_OPERAND, ALIGN_ERROR; R11 = gpa), or the first {@link TdxMapGpaExit} through `ctx.exit`
   * (never returns then); the result comes from `completeExit` once userspace has answered.
   */
  mapGpa(gpa: number, size: number): TdvmcallResult;
}

/** A MapGPA in progress on one vCPU (tdx->map_gpa_next / map_gpa_end, bytes, shared bit kept). */
export interface MapGpaProgress {
  next: number;
  readonly end: number;
}

/** What the guest side shares with the VM (vm.ts owns it). */
export interface TdxGuestState {
  /** SEPT_VE_DISABLE (TD attribute bit 28): a PENDING access exits to KVM instead of raising #VE. */
  readonly septVeDisable: boolean;
  /** MapGPA progress per vCPU. */
  readonly mapGpa: Map<number, MapGpaProgress>;
  /** Events the model says are pending per vCPU (kvm_vcpu_has_events), consumed one per MapGPA chunk. */
  readonly pendingEvents: Map<number, number>;
  /** Throws the KvmError KVM_RUN fails with when no vCPU may run: TD not finalized, VM bugged, dead or destroyed. */
  assertRunnable(): void;
  /** KVM_BUG_ON: marks the VM bugged and returns the error KVM_RUN fails with (EIO). */
  bug(reason: string): KvmError;
  /** kvm_vm_dead: marks the VM dead and returns the error KVM_RUN fails with (EIO). */
  kill(reason: string): KvmError;
}

/** The guest side of one TD: its `guestApi` and the `guestAccess` and `completeExit` hooks. */
export interface TdxGuest {
  readonly guestApi: TdxGuestApi;
  guestAccess(a: GuestAccess): 'ok' | GuestException | GuestNpf;
  completeExit(exit: ArchExit, vcpu: number): { readonly value: TdvmcallResult } | undefined;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/** Creates the guest side of one TD. */
export function createTdxGuest(ctx: ArchVmContext, module: TdxModule, state: TdxGuestState): TdxGuest {
  const bit = 2 ** module.sharedBit;
  const limit = 2 ** module.gpaw;
  const isShared = (gpa: number): boolean => Math.floor(gpa / bit) % 2 === 1;
  const strip = (gpa: number): number => (isShared(gpa) ? gpa - bit : gpa);

  /** user_exit_on_hypercall(kvm, KVM_HC_MAP_GPA_RANGE): the bit in KVM_CAP_EXIT_HYPERCALL's args[0]. */
  const mapGpaExitEnabled = (): boolean => {
    const bitmap = ctx.enabledCap(uapi.KVM_CAP_EXIT_HYPERCALL);
    return bitmap !== undefined && Math.floor(bitmap / 2 ** uapi.KVM_HC_MAP_GPA_RANGE) % 2 === 1;
  };

  /** __tdx_map_gpa: one exit for the next ≤ 2 MiB of the request. */
  function exitChunk(p: MapGpaProgress): never {
    const size = Math.min(p.end - p.next, TDX_MAP_GPA_MAX_LEN);
    const isPrivate = !isShared(p.next);
    const gpa = strip(p.next);
    if (ctx.sim.trace.enabled) ctx.sim.trace.emit('tdx.map_gpa', { gpa, npages: size / 4096, private: isPrivate });
    const exit: TdxMapGpaExit = {
      reason: 'HYPERCALL',
      exitReason: uapi.KVM_EXIT_HYPERCALL,
      nr: uapi.KVM_HC_MAP_GPA_RANGE,
      args: [gpa, size / 4096, isPrivate ? uapi.KVM_MAP_GPA_RANGE_ENCRYPTED : uapi.KVM_MAP_GPA_RANGE_DECRYPTED, 0, 0, 0],
      // In principle -KVM_ENOSYS, but QEMU <= 9.2 assumed KVM never changes hypercall.ret, so KVM
      // presets it to 0 (__tdx_map_gpa).
      ret: 0,
      flags: KVM_EXIT_HYPERCALL_LONG_MODE,
    };
    return ctx.exit(exit);
  }

  /** Consumes one pending event of `vcpu`, if it has one (kvm_vcpu_has_events). */
  function takePendingEvent(vcpu: number): boolean {
    const n = state.pendingEvents.get(vcpu);
    if (n === undefined) return false;
    if (n <= 1) state.pendingEvents.delete(vcpu);
    else state.pendingEvents.set(vcpu, n - 1);
    return true;
  }

  /** An EPT violation on a private GPA: KVM treats it as a write whatever the access (tdx_handle_ept_violation). */
  const npf = (gpa: number): GuestNpf => ({ kind: 'npf', fault: { gpa, access: 'write' } });

  const guestApi: TdxGuestApi = {
    vpInfo: () => ({ gpaw: module.gpaw }),

    accept(gpa, level = 0) {
      state.assertRunnable();
      if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa >= limit || isShared(gpa) || gpa % 4096 !== 0) {
        ctx.sim.charge('tdx.accept');
        return { kind: 'status', status: TDX_STATUS.TDX_OPERAND_INVALID };
      }
      const r = module.accept(gpa / 4096, level);
      if (r.kind === 'status') return r;
      return { kind: 'ept-violation', fault: { gpa, access: 'write' }, level: r.level };
    },

    mapGpa(gpa, size) {
      state.assertRunnable();
      ctx.sim.charge('tdx.vmcall');
      // KVM has no way to know userspace implements the GHCI, so without the exit the guest gets
      // SUBFUNC_UNSUPPORTED (tdx_map_gpa).
      if (!mapGpaExitEnabled()) return { status: TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED, r11: gpa };
      const end = gpa + size;
      if (
        !Number.isSafeInteger(gpa) ||
        !Number.isSafeInteger(size) ||
        gpa < 0 ||
        end <= gpa ||
        gpa >= limit ||
        end - 1 >= limit ||
        isShared(gpa) !== isShared(end - 1)
      ) {
        return { status: TDVMCALL_STATUS.INVALID_OPERAND, r11: gpa };
      }
      if (gpa % 4096 !== 0 || size % 4096 !== 0) return { status: TDVMCALL_STATUS.ALIGN_ERROR, r11: gpa };
      // Outside a vCPU (a test driving the plugin without a core) the request is vCPU 0's.
      const p: MapGpaProgress = { next: gpa, end };
      state.mapGpa.set(ctx.vcpu ?? 0, p);
      return exitChunk(p);
    },
  };

  /**
   * The S-EPT's view of a private access, as the hardware walks it: MAPPED completes; PENDING is a
   * #VE (SEPT_VE_DISABLE clear) or a pending EPT violation KVM answers by killing the TD ("Guest
   * access before accepting", kvm_vm_dead in tdx_handle_ept_violation; KVM_RUN fails with -EIO);
   * a blocked leaf or table, a FREE entry or a missing table is an EPT violation for KVM to fault in.
   *
   * KVM's mirror EPT and the S-EPT change together through the private-table hooks, so they must
   * agree: the mirror mapping the core hands in (`a.pfn`, `a.level`), and `ctx.translate` where
   * the S-EPT has no leaf. A disagreement means KVM lost track of the module's tables (the model
   * reaches it only when the module's SEAMCALLs are driven behind KVM's back): it is KVM_BUG_ON,
   * the VM is bugged and KVM_RUN fails with EIO.
   */
  function guestAccess(a: GuestAccess): 'ok' | GuestException | GuestNpf {
    state.assertRunnable();
    // A shared access goes through the shared EPT, the core's own tables: nothing of TDX's to check.
    if (!a.private) return 'ok';
    const gfn: number = a.gfn;
    const sept = module.sept;
    let level = -1;
    for (let l = sept.rootLevel; l >= 0; l--) {
      if (sept.state(gfn, l) === SEPT_STATE.NL_MAPPED) continue;
      level = l;
      break;
    }
    const entry = level < 0 ? SEPT_STATE.FREE : sept.state(gfn, level);
    // A blocked S-EPT page stops the walk as a blocked leaf does: whatever lies below it waits.
    if (entry === SEPT_STATE.NL_BLOCKED) return npf(a.gpa);
    if (!isLeaf(entry)) {
      const mirror = ctx.translate(a.gfn, 'private');
      if (mirror) {
        throw state.bug(
          `the mirror EPT maps gfn ${hex(gfn)} to pfn ${hex(mirror.pfn)} but the S-EPT has no leaf for it (${septStateName(entry)} at level ${level})`,
        );
      }
      return npf(a.gpa);
    }
    const pfn = (sept.pfn(gfn, level) ?? 0) + (gfn % framesAtLevel(level));
    if (pfn !== a.pfn || level !== a.level) {
      throw state.bug(
        `the mirror EPT maps gfn ${hex(gfn)} to pfn ${hex(a.pfn)} at level ${a.level} but the S-EPT to pfn ${hex(pfn)} at level ${level}`,
      );
    }
    if (isBlocked(entry)) return npf(a.gpa);
    if (entry === SEPT_STATE.MAPPED) return 'ok';
    if (!state.septVeDisable) return { kind: 'exception', vector: X86_TRAP_VE, name: '#VE', gpa: a.gpa };
    throw state.kill(`Guest access before accepting ${hex(a.gpa)} on vCPU ${a.vcpu}`);
  }

  /**
   * tdx_complete_vmcall_map_gpa, KVM's complete_userspace_io for a MapGPA chunk: userspace answered
   * with `ret`. Upstream, any non-zero `ret` fails the MapGPA (INVALID_OPERAND, R11 = the chunk's
   * GPA); otherwise KVM advances 2 MiB and either completes (SUCCESS), stops because the vCPU has
   * events to deliver (RETRY, R11 = the next GPA; the guest re-issues from there), or exits for the
   * next chunk (through `ctx.exit`). An exit that is not this vCPU's MapGPA is not TDX's:
   * `undefined`. kvm-x86/next has queued "KVM: TDX: Allow userspace to return errors to guest for
   * MAPGPA" (ret EAGAIN → RETRY, EINVAL → INVALID_OPERAND, anything else fails KVM_RUN with
   * -EINVAL); not in mainline, so not modelled.
   */
  function completeExit(exit: ArchExit, vcpu: number): { readonly value: TdvmcallResult } | undefined {
    if (exit.reason !== 'HYPERCALL' || exit['nr'] !== uapi.KVM_HC_MAP_GPA_RANGE) return undefined;
    const p = state.mapGpa.get(vcpu);
    if (!p) return undefined;
    state.assertRunnable();
    const ret = exit['ret'];
    if (ret !== 0 && ret !== 0n) {
      state.mapGpa.delete(vcpu);
      return { value: { status: TDVMCALL_STATUS.INVALID_OPERAND, r11: p.next } };
    }
    p.next += TDX_MAP_GPA_MAX_LEN;
    if (p.next >= p.end) {
      state.mapGpa.delete(vcpu);
      return { value: { status: TDVMCALL_STATUS.SUCCESS } };
    }
    // Stop between chunks when an interrupt may be deliverable, so the guest's lockup detection
    // does not fire during a long conversion (the comment above TDX_MAP_GPA_MAX_LEN).
    if (takePendingEvent(vcpu)) {
      state.mapGpa.delete(vcpu);
      return { value: { status: TDVMCALL_STATUS.RETRY, r11: p.next } };
    }
    ctx.sim.charge('tdx.vmcall');
    return exitChunk(p);
  }

  return { guestApi, guestAccess, completeExit };
}

