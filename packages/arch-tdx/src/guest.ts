/**
 * The TD guest's side: TDG.MEM.PAGE.ACCEPT, what a guest access to a private page meets (#VE on a
 * PENDING page), and TDG.VP.VMCALL<MapGPA>, which KVM turns into KVM_HC_MAP_GPA_RANGE exits in
 * 2 MiB chunks (tdx_map_gpa, __tdx_map_gpa, tdx_complete_vmcall_map_gpa in
 * arch/x86/kvm/vmx/tdx.c).
 */
import { KvmError, uapi, type Access, type ArchVmContext, type GuestFault } from '@cocokit/sdk';
import type { TdxModule } from './module.js';
import { SEPT_STATE, type SeptLevel } from './sept.js';
import { TDVMCALL_STATUS, TDX_STATUS } from './status.js';

/** TDG.VP.VMCALL<MapGPA> sub-function (GHCI). */
export const TDVMCALL_MAP_GPA = 0x10001;
/** KVM_EXIT_HYPERCALL_LONG_MODE (include/uapi/linux/kvm.h): kvm_run.hypercall.flags bit 0. */
export const KVM_EXIT_HYPERCALL_LONG_MODE = 1;
/** TDX_MAP_GPA_MAX_LEN in tdx.c: KVM exits to userspace for at most 2 MiB of a MapGPA at a time. */
export const TDX_MAP_GPA_MAX_LEN = 2 * 1024 * 1024;
/** The #VE vector. */
export const X86_TRAP_VE = 20;
/** EXIT_REASON_EPT_VIOLATION, as the #VE info reports it. */
export const EXIT_REASON_EPT_VIOLATION = 48;

/** The #VE a guest takes touching a PENDING page with SEPT_VE_DISABLE clear (TDG.VP.VEINFO.GET fields). */
export interface TdxVirtualizationException {
  readonly vector: typeof X86_TRAP_VE;
  readonly exitReason: typeof EXIT_REASON_EPT_VIOLATION;
  /** The faulting GPA, bytes. */
  readonly gpa: number;
}

/** What a guest access to a GPA meets. */
export type TdxAccessResult =
  /** The page is MAPPED in the S-EPT: the access completes. */
  | { readonly kind: 'ok'; readonly pfn: number }
  /** The shared bit is set: the shared EPT (the core's MMU) decides. `gfn` has the bit stripped. */
  | { readonly kind: 'shared'; readonly gfn: number }
  /** A PENDING page with SEPT_VE_DISABLE clear: a #VE is injected into the guest (A.5). */
  | { readonly kind: 've'; readonly ve: TdxVirtualizationException }
  /**
   * A TD exit to KVM as an EPT violation: a missing or FREE or blocked entry (KVM's fault path maps
   * it; tdx_handle_ept_violation treats it as a write), or, with `pending` true, a PENDING page
   * with SEPT_VE_DISABLE set, which KVM reports as "Guest access before accepting" and kills the
   * VM (kvm_vm_dead; KVM_RUN fails with -EIO).
   */
  | { readonly kind: 'ept-violation'; readonly fault: GuestFault; readonly pending: boolean };

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

/** The guest operations of a TD (the plugin's `guestApi`). */
export interface TdxGuestApi {
  /** TDG.VP.INFO's GPAW (RCX[5:0]); the guest's shared bit is GPAW - 1. */
  vpInfo(): { readonly gpaw: number };
  /** TDG.MEM.PAGE.ACCEPT of the private `gpa` at `level` (0 = 4K, 1 = 2M). */
  accept(gpa: number, level?: number): TdxAcceptResult;
  /** A guest access to `gpa`: what it meets (see {@link TdxAccessResult}). */
  access(gpa: number, access: Access): TdxAccessResult;
  /**
   * TDG.VP.VMCALL<MapGPA>(gpa, size) on `vcpu`: the errors KVM returns directly (SUBFUNC_UNSUPPORTED,
   * INVALID_OPERAND, ALIGN_ERROR, with R11 = gpa), or the first KVM_HC_MAP_GPA_RANGE exit through
   * `ctx.exit` (never returns then); userspace's answer comes back through the VM API's
   * `completeMapGpa`.
   */
  mapGpa(gpa: number, size: number, vcpu?: number): TdvmcallResult;
}

/** A MapGPA in progress on one vCPU (tdx->map_gpa_next / map_gpa_end). */
interface MapGpaProgress {
  next: number;
  readonly end: number;
}

/** What the guest API shares with the VM: per-vCPU MapGPA progress and the hypercall-exit setting. */
export interface TdxGuestState {
  /** Whether userspace enabled KVM_CAP_EXIT_HYPERCALL with the KVM_HC_MAP_GPA_RANGE bit. */
  mapGpaExit: boolean;
  /** SEPT_VE_DISABLE (TD attribute bit 28): a PENDING access exits to KVM instead of raising #VE. */
  readonly septVeDisable: boolean;
  readonly mapGpa: Map<number, MapGpaProgress>;
}

/** Creates the guest API and the MapGPA completion of one TD. */
export function createTdxGuest(
  ctx: ArchVmContext,
  module: TdxModule,
  state: TdxGuestState,
): { guestApi: TdxGuestApi; completeMapGpa(vcpu: number, ret: number, pendingEvents?: boolean): TdvmcallResult } {
  const bit = 2 ** module.sharedBit;
  const limit = 2 ** module.gpaw;
  const isShared = (gpa: number): boolean => Math.floor(gpa / bit) % 2 === 1;
  const strip = (gpa: number): number => (isShared(gpa) ? gpa - bit : gpa);

  /** __tdx_map_gpa: one exit for the next ≤ 2 MiB of the request. */
  function exitChunk(vcpu: number, p: MapGpaProgress): never {
    const size = Math.min(p.end - p.next, TDX_MAP_GPA_MAX_LEN);
    const isPrivate = !isShared(p.next);
    const gpa = strip(p.next);
    if (ctx.sim.trace.enabled) ctx.sim.trace.emit('tdx.map_gpa', { gpa, npages: size / 4096, private: isPrivate });
    return ctx.exit({
      reason: 'KVM_EXIT_HYPERCALL',
      exitReason: uapi.KVM_EXIT_HYPERCALL,
      vcpu,
      nr: uapi.KVM_HC_MAP_GPA_RANGE,
      args: [gpa, size / 4096, isPrivate ? uapi.KVM_MAP_GPA_RANGE_ENCRYPTED : uapi.KVM_MAP_GPA_RANGE_DECRYPTED, 0, 0, 0],
      // QEMU <= 9.2 assumed KVM never changes hypercall.ret, so KVM presets it to 0 (__tdx_map_gpa).
      ret: 0,
      flags: KVM_EXIT_HYPERCALL_LONG_MODE,
    });
  }

  const guestApi: TdxGuestApi = {
    vpInfo: () => ({ gpaw: module.gpaw }),

    accept(gpa, level = 0) {
      if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa >= limit || isShared(gpa) || gpa % 4096 !== 0) {
        ctx.sim.charge('tdx.accept');
        return { kind: 'status', status: TDX_STATUS.TDX_OPERAND_INVALID };
      }
      const r = module.accept(gpa / 4096, level);
      if (r.kind === 'status') return r;
      return { kind: 'ept-violation', fault: { gpa, access: 'write' }, level: r.level };
    },

    access(gpa, access) {
      if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa >= limit) {
        throw new KvmError('EINVAL', 'tdx guest access', `GPA 0x${gpa.toString(16)} is beyond GPAW ${module.gpaw}`);
      }
      if (isShared(gpa)) return { kind: 'shared', gfn: Math.floor(strip(gpa) / 4096) };
      const gfn = Math.floor(gpa / 4096);
      const sept = module.sept;
      let level = -1;
      for (let l = sept.rootLevel; l >= 0; l--) {
        const s = sept.state(gfn, l);
        if (s === SEPT_STATE.NL_MAPPED) continue;
        level = l;
        break;
      }
      const entry = level < 0 ? SEPT_STATE.FREE : sept.state(gfn, level);
      if (entry === SEPT_STATE.MAPPED) return { kind: 'ok', pfn: (sept.pfn(gfn, level) ?? 0) + (gfn % 512 ** level) };
      if (entry === SEPT_STATE.PENDING) {
        if (!state.septVeDisable) return { kind: 've', ve: { vector: X86_TRAP_VE, exitReason: EXIT_REASON_EPT_VIOLATION, gpa } };
        return { kind: 'ept-violation', fault: { gpa, access }, pending: true };
      }
      // Private S-EPT violations are handled as writes whatever the access (tdx_handle_ept_violation).
      return { kind: 'ept-violation', fault: { gpa, access: 'write' }, pending: false };
    },

    mapGpa(gpa, size, vcpu = 0) {
      ctx.sim.charge('tdx.vmcall');
      if (!state.mapGpaExit) return { status: TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED, r11: gpa };
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
      const p: MapGpaProgress = { next: gpa, end };
      state.mapGpa.set(vcpu, p);
      return exitChunk(vcpu, p);
    },
  };

  /**
   * tdx_complete_vmcall_map_gpa: userspace answered the chunk's exit with `ret`. A non-zero `ret`
   * fails the MapGPA (INVALID_OPERAND, R11 = the chunk's GPA); otherwise KVM advances 2 MiB and
   * either completes (SUCCESS), stops for pending events (RETRY, R11 = the next GPA; the guest
   * re-issues from there), or exits for the next chunk (through `ctx.exit`).
   */
  function completeMapGpa(vcpu: number, ret: number, pendingEvents = false): TdvmcallResult {
    const p = state.mapGpa.get(vcpu);
    if (!p) throw new KvmError('EINVAL', 'tdx MapGPA completion', `vCPU ${vcpu} has no MapGPA in progress`);
    if (ret !== 0) {
      state.mapGpa.delete(vcpu);
      return { status: TDVMCALL_STATUS.INVALID_OPERAND, r11: p.next };
    }
    p.next += TDX_MAP_GPA_MAX_LEN;
    if (p.next >= p.end) {
      state.mapGpa.delete(vcpu);
      return { status: TDVMCALL_STATUS.SUCCESS };
    }
    if (pendingEvents) {
      state.mapGpa.delete(vcpu);
      return { status: TDVMCALL_STATUS.RETRY, r11: p.next };
    }
    ctx.sim.charge('tdx.vmcall');
    return exitChunk(vcpu, p);
  }

  return { guestApi, completeMapGpa };
}
