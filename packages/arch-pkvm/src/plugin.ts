/**
 * The pKVM arch plugin: `defineArchPlugin` wiring the hypervisor's ownership state machine
 * (ownership.ts), the guest_memfd hooks, the guest's vendor-hyp hypercalls and the guest OS's
 * conversion code (guest-kernel.ts) into one VM of type `pkvm` (a protected VM: the
 * KVM_VM_TYPE_ARM_PROTECTED type bit of arch/arm64/include/uapi/asm/kvm.h, pkvm_init_host_vm in
 * arch/arm64/kvm/pkvm.c).
 */
import {
  KvmError,
  ModelInvariantError,
  defineArchPlugin,
  uapi,
  type ArchExit,
  type ArchMemoryRequest,
  type ArchVmContext,
  type GuestNpf,
  type HostFault,
  type MappingLevel,
  type PageOrder,
  type Pfn,
} from '@cocokit/sdk';
import type { PkvmArchVm, PkvmGuestApi, PkvmHypercallExit, PkvmMemRequest, PkvmVmApi } from './api.js';
import { ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID, PKVM_GRANULE, SMCCC_RET } from './constants.js';
import { PKVM_COSTS } from './costs.js';
import { pkvmGuestKernel } from './guest-kernel.js';
import { memProtectForHost, type PkvmMemProtect } from './ownership.js';

const PAGE = 4096;
const hex = (n: number): string => `0x${n.toString(16)}`;
const FID = ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID;

/** The folio orders guest_memfd prepares: 4K, 2M, 1G. */
const ORDERS: readonly number[] = [0, 9, 18];

/**
 * What userspace is asked to do for an exit, or `undefined` when the exit is not a pKVM memory
 * hypercall: for a VMM's exit loop (`runVmm(vm, { onExit })` with `vm.convert` for share/unshare
 * and a hole punch for relinquish).
 */
export function pkvmMemRequest(exit: ArchExit): PkvmMemRequest | undefined {
  if (exit.reason !== 'HYPERCALL' || exit['exitReason'] !== uapi.KVM_EXIT_HYPERCALL) return undefined;
  const args = exit['args'];
  const gpa = Array.isArray(args) ? (args[0] as unknown) : undefined;
  if (typeof gpa !== 'number') return undefined;
  const op = exit['nr'] === FID.MEM_SHARE ? 'share' : exit['nr'] === FID.MEM_UNSHARE ? 'unshare' : exit['nr'] === FID.MEM_RELINQUISH ? 'relinquish' : undefined;
  return op === undefined ? undefined : { op, gpa, size: PKVM_GRANULE };
}

/**
 * {@link pkvmMemRequest} in the contract's words (`ArchVm.memoryRequest`), so an arch-neutral VMM
 * (`runVmm`) handles the forwarded calls with no pKVM code: MEM_SHARE → convert to shared, MEM_UNSHARE →
 * convert to private, MEM_RELINQUISH → discard. On MEM_RELINQUISH EL2 has already returned the page
 * to the host (wiped if the guest owned it alone: __pkvm_guest_relinquish_to_host in
 * arch/arm64/kvm/hyp/nvhe/mem_protect.c) and the IPA is NOPAGE; the host's side is to drop the page
 * from guest memory (in the Android kernel pkvm_host_reclaim_page unpins it and frees it; with
 * guest_memfd the VMM punches it out of the file, as a balloon does), so the guest's next access
 * faults in, and is donated, a fresh page. The shareability is left as it was: the guest gave a
 * page up, it did not ask for a conversion.
 */
export function pkvmMemoryRequest(exit: ArchExit): ArchMemoryRequest | undefined {
  const r = pkvmMemRequest(exit);
  if (r === undefined) return undefined;
  return r.op === 'relinquish' ? { op: 'discard', gpa: r.gpa, size: r.size } : { op: 'convert', gpa: r.gpa, size: r.size, toPrivate: r.op === 'unshare' };
}

/** Creates the arch state of one protected VM (pkvm_init_host_vm + __pkvm_init_vm: a handle and an empty stage-2). */
export function createPkvmVm(ctx: ArchVmContext): PkvmArchVm {
  for (const k of Object.keys(ctx.options)) throw new KvmError('EINVAL', 'KVM_CREATE_VM(pkvm)', `unknown option '${k}' (a pKVM VM takes none)`);
  const { sim } = ctx;
  const mp: PkvmMemProtect = memProtectForHost(ctx.host);
  const handle = mp.initVm();
  /** The forwarded hypercall each vCPU waits on (its x0 comes from userspace's answer). */
  const pending = new Map<number, PkvmHypercallExit>();
  let destroyed = false;

  const vcpuOf = (): number => ctx.vcpu ?? -1;
  const trace = (op: string, pfn: number, gfn: number): void => {
    if (!sim.trace.enabled) return;
    const p = mp.page(pfn);
    sim.trace.emit('pkvm.transition', { op, vm: handle, pfn, gfn, host: p.host, guest: mp.guestPte(handle, gfn)?.state ?? 'nopage' });
  };
  const traceCall = (fn: number, ipa: number, ret: number | 'exit' | 'abort'): void => {
    if (sim.trace.enabled) sim.trace.emit('pkvm.hypercall', { vcpu: vcpuOf(), fn, ipa, ret });
  };
  const alive = (op: string): void => {
    if (destroyed) throw new KvmError('EIO', op, `protected VM ${handle} is destroyed`);
  };

  /** Checks a frame number from the core: an integer inside host memory. */
  const checkPfn = (op: string, p: number, n = 1): void => {
    if (!Number.isSafeInteger(p) || p < 0 || p + n > ctx.host.nrFrames) throw new KvmError('EINVAL', op, `pfn ${String(p)} (+${n}) is not host memory`);
  };

  /**
   * kvm_arch_gmem_prepare for a protected VM: the host donates each page of the folio to the guest
   * (__pkvm_host_donate_guest; pkvm_pgtable_stage2_map in arch/arm64/kvm/pkvm.c). Every page is
   * checked before any moves. A page the guest already owns at that gfn is skipped: the fault path
   * finds the stage-2 entry already there.
   */
  function gmemPrepare(pfn: Pfn, gfn: number, order: PageOrder): void {
    const op = 'kvm_arch_gmem_prepare';
    alive(op);
    if (!ORDERS.includes(order)) throw new KvmError('EINVAL', op, `order ${String(order)} is not a folio order (0, 9, 18)`);
    const n = 2 ** order;
    checkPfn(op, pfn, n);
    if (!Number.isSafeInteger(gfn) || gfn < 0) throw new KvmError('EINVAL', op, `gfn ${String(gfn)} is not a frame number`);
    if (pfn % n !== 0 || gfn % n !== 0) throw new KvmError('EINVAL', op, `pfn ${hex(pfn)} / gfn ${hex(gfn)} not aligned to order ${order}`);
    const todo: number[] = [];
    for (let i = 0; i < n; i++) {
      const pte = mp.guestPte(handle, gfn + i);
      if (pte?.pfn === pfn + i) continue;
      mp.checkHostDonateGuest(handle, pfn + i, gfn + i);
      todo.push(i);
    }
    for (const i of todo) {
      sim.charge('pkvm.hvc');
      // The host's identity mapping goes (with a TLBI), the guest's entry comes.
      sim.charge('pkvm.stage2_update', 2);
      sim.charge('pkvm.tlbi');
      mp.hostDonateGuest(handle, pfn + i, gfn + i);
      trace('host_donate_guest', pfn + i, gfn + i);
    }
  }

  /**
   * kvm_arch_gmem_invalidate: guest_memfd frees the pages or converts them to shared, and the host
   * takes each page of this VM back (the pending force-reclaim hypercall, __pkvm_host_reclaim_page):
   * a page the guest owned alone is wiped first; a page the guest had shared keeps its contents.
   */
  function gmemInvalidate(start: Pfn, end: Pfn): void {
    const op = 'kvm_arch_gmem_invalidate';
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > ctx.host.nrFrames) {
      throw new KvmError('EINVAL', op, `[${String(start)}, ${String(end)}) is not a range of host memory`);
    }
    if (destroyed) return;
    const mine: number[] = [];
    if (end - start <= mp.guestGfns(handle).length) {
      for (let p = start; p < end; p++) if (mp.page(p).owner?.vm === handle) mine.push(p);
    } else {
      for (const g of mp.guestGfns(handle)) {
        const p = mp.guestPte(handle, g)?.pfn;
        if (p !== undefined && p >= start && p < end) mine.push(p);
      }
    }
    for (const p of mine) {
      sim.charge('pkvm.hvc');
      sim.charge('pkvm.stage2_update', 2);
      sim.charge('pkvm.tlbi');
      const r = mp.hostReclaimPage(handle, p);
      if (r?.wiped === true) sim.charge('pkvm.page_wipe');
      if (r !== undefined) trace('host_reclaim_page', p, r.gfn);
    }
  }

  function hostAccess(pfn: Pfn): 'ok' | HostFault {
    checkPfn('host_stage2_idmap', pfn);
    const owner = mp.hostAccessOwner(pfn);
    if (owner === undefined) return 'ok';
    // The host stage-2 entry is invalid: EL2 refuses to map it and injects the abort back into the
    // host (host_inject_abort in the Android kernel); a userspace access is a SIGSEGV (pending
    // "Inject SIGSEGV on illegal accesses").
    return { signal: 'SIGSEGV', kind: 'stage2', reason: `host stage-2 abort: pfn ${hex(pfn)} is owned by ${owner}` };
  }

  /** The guest's SMCCC argument checks: a granule-aligned IPA, unused arguments zero. */
  function badArgs(ipa: number, a2: number, a3: number): boolean {
    return !Number.isSafeInteger(ipa) || ipa < 0 || ipa % PKVM_GRANULE !== 0 || a2 !== 0 || a3 !== 0;
  }

  function refuseInFlight(vcpu: number): void {
    const p = pending.get(vcpu);
    if (p !== undefined) {
      throw new KvmError('EINVAL', 'HVC', `vCPU ${vcpu} has a forwarded hypercall ${hex(p.nr)} waiting for userspace: complete it (completeExit, what KVM_RUN does first) before the guest issues another`);
    }
  }

  /** Forwards a hypercall EL2 has done to userspace; never returns. */
  function forward(fn: number, ipa: number): never {
    const exit: PkvmHypercallExit = { reason: 'HYPERCALL', exitReason: uapi.KVM_EXIT_HYPERCALL, nr: fn, args: [ipa, 0, 0, 0, 0, 0], ret: 0, flags: 0 };
    pending.set(vcpuOf(), exit);
    traceCall(fn, ipa, 'exit');
    return ctx.exit(exit);
  }

  /** Runs an EL2 transition; a refusal becomes INVALID_PARAMETER in the guest's x0. */
  function el2<T>(fn: number, ipa: number, f: () => T): T | typeof SMCCC_RET.INVALID_PARAMETER {
    try {
      return f();
    } catch (e) {
      if (e instanceof KvmError || (typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'KvmError')) {
        traceCall(fn, ipa, SMCCC_RET.INVALID_PARAMETER);
        return SMCCC_RET.INVALID_PARAMETER;
      }
      throw e;
    }
  }

  const guestApi: PkvmGuestApi = {
    hypMeminfo(a1 = 0, a2 = 0, a3 = 0) {
      // pkvm_meminfo_call (arch/arm64/kvm/hyp/nvhe/pkvm.c).
      sim.charge('pkvm.hvc');
      return a1 !== 0 || a2 !== 0 || a3 !== 0 ? SMCCC_RET.INVALID_PARAMETER : PKVM_GRANULE;
    },
    memShare(ipa, a2 = 0, a3 = 0): number | GuestNpf {
      const fn = FID.MEM_SHARE;
      const vcpu = vcpuOf();
      refuseInFlight(vcpu);
      alive('MEM_SHARE');
      sim.charge('pkvm.hvc');
      if (badArgs(ipa, a2, a3)) return SMCCC_RET.INVALID_PARAMETER;
      const gfn = ipa / PAGE;
      if (mp.guestPte(handle, gfn) === undefined) {
        // pkvm_memshare_call: -EFAULT from __pkvm_guest_share_host becomes a data abort for the
        // host (__pkvm_memshare_page_req), which maps the page; the guest's HVC is issued again.
        traceCall(fn, ipa, 'abort');
        return { kind: 'npf', fault: { gpa: ipa, access: 'write' } };
      }
      const r = el2(fn, ipa, () => mp.guestShareHost(handle, gfn));
      if (r === SMCCC_RET.INVALID_PARAMETER) return r;
      sim.charge('pkvm.stage2_update', 2);
      trace('guest_share_host', r, gfn);
      return forward(fn, ipa);
    },
    memUnshare(ipa, a2 = 0, a3 = 0): number {
      const fn = FID.MEM_UNSHARE;
      const vcpu = vcpuOf();
      refuseInFlight(vcpu);
      alive('MEM_UNSHARE');
      sim.charge('pkvm.hvc');
      if (badArgs(ipa, a2, a3)) return SMCCC_RET.INVALID_PARAMETER;
      const gfn = ipa / PAGE;
      const r = el2(fn, ipa, () => mp.guestUnshareHost(handle, gfn) ?? null);
      if (r === SMCCC_RET.INVALID_PARAMETER) return r;
      sim.charge('pkvm.stage2_update', 2);
      sim.charge('pkvm.tlbi');
      if (r !== null) trace('guest_unshare_host', r, gfn);
      return forward(fn, ipa);
    },
    memRelinquish(ipa, a2 = 0, a3 = 0): number {
      const fn = FID.MEM_RELINQUISH;
      const vcpu = vcpuOf();
      refuseInFlight(vcpu);
      alive('MEM_RELINQUISH');
      sim.charge('pkvm.hvc');
      if (badArgs(ipa, a2, a3)) return SMCCC_RET.INVALID_PARAMETER;
      const gfn = ipa / PAGE;
      const r = mp.guestRelinquishToHost(handle, gfn);
      // pkvm_memrelinquish_call: "This was a NOP as no page was actually mapped at the IPA."
      if (r === undefined) {
        traceCall(fn, ipa, SMCCC_RET.SUCCESS);
        return SMCCC_RET.SUCCESS;
      }
      sim.charge('pkvm.stage2_update', 2);
      sim.charge('pkvm.tlbi');
      if (r.wiped) sim.charge('pkvm.page_wipe');
      trace('guest_relinquish_to_host', r.pfn, gfn);
      return forward(fn, ipa);
    },
  };

  const vmApi: PkvmVmApi = {
    handle,
    page: (pfn) => mp.page(pfn),
    guestPte: (gfn) => (destroyed ? undefined : mp.guestPte(handle, gfn)),
    get guestPages() {
      return destroyed ? 0 : mp.guestGfns(handle).filter((g) => mp.guestPte(handle, g)?.pfn !== undefined).length;
    },
  };

  return {
    capabilities: {
      privateMem: true,
      // Every page a protected guest faults on is donated: private until the guest shares it
      // (arch-specs.md C.4).
      privateByDefault: true,
      // Donation to a protected guest is per 4K page (__pkvm_host_donate_guest); 2M blocks exist
      // only for non-protected guests' host_share_guest.
      maxPrivateLevel: 0,
      mirrorRoot: false,
      // MEM_SHARE shares the very page the guest owns: no copy.
      inPlaceConversion: true,
    },
    gmemPrepare,
    gmemInvalidate,
    maxMappingLevel: (_gfn, _pfn, isPrivate): MappingLevel => (isPrivate ? 0 : 2),
    hostAccess,
    // complete_userspace_io of a forwarded hypercall: x0 is SUCCESS when userspace did its part.
    completeExit(exit, vcpu) {
      const p = pending.get(vcpu);
      if (p === undefined || p !== exit) return undefined;
      pending.delete(vcpu);
      const ret = p.ret === 0 ? SMCCC_RET.SUCCESS : SMCCC_RET.INVALID_PARAMETER;
      traceCall(p.nr, p.args[0] ?? 0, ret);
      return { value: ret };
    },
    memoryRequest: pkvmMemoryRequest,
    guestKernel: pkvmGuestKernel,
    checkInvariants() {
      mp.checkInvariants();
      if (destroyed) return;
      for (const g of mp.guestGfns(handle)) {
        const pte = mp.guestPte(handle, g);
        const mapped = ctx.translate(g as never, 'private');
        if (pte?.pfn !== undefined && mapped !== undefined && mapped.pfn !== pte.pfn) {
          throw new ModelInvariantError('pkvm.vm.stage2', `gfn ${hex(g)} is the guest's pfn ${hex(pte.pfn)} at EL2 but the core maps pfn ${hex(mapped.pfn)}`);
        }
      }
    },
    // pkvm_destroy_hyp_vm: __pkvm_teardown_vm, then every page the VM still holds is reclaimed.
    destroy() {
      if (destroyed) return;
      for (const r of mp.teardownVm(handle)) {
        sim.charge('pkvm.hvc');
        if (r.wiped) sim.charge('pkvm.page_wipe');
      }
      pending.clear();
      destroyed = true;
    },
    vmApi,
    guestApi,
  };
}

/**
 * The pKVM plugin: VM type `pkvm`. Found by the core as `@cocokit/arch-pkvm` (its package.json
 * declares `"cocokit": { "arch": ["pkvm"] }`) or passed directly (`openKvm({ archs: [pkvm] })`).
 */
const pkvm = defineArchPlugin({
  name: 'pkvm',
  apiVersion: 1,
  vmTypes: ['pkvm'],
  description: 'Arm pKVM: hypervisor page ownership, donation to protected guests, MEM_SHARE/MEM_UNSHARE/MEM_RELINQUISH',
  costs: PKVM_COSTS,
  createVm: createPkvmVm,
});

export default pkvm;
