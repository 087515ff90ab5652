/**
 * One TD as the core sees it: the {@link ArchVm} hooks of the contract, implemented the way
 * arch/x86/kvm/vmx/tdx.c implements the matching kvm_x86_ops, on top of a {@link TdxModule} that
 * holds the real (Secure) EPT while the core's MMU keeps the mirror root (capabilities.mirrorRoot).
 *
 * Launch, upstream (the default, `launchFlow: 'upstream'`): tdx_vm_init leaves
 * kvm->arch.pre_fault_allowed false, so KVM_PRE_FAULT_MEMORY is EOPNOTSUPP until
 * KVM_TDX_FINALIZE_VM. KVM_TDX_INIT_MEM_REGION (tdx_vcpu_init_mem_region) runs kvm_gmem_populate
 * per page (`ctx.gmemPopulate`), whose post_populate callback, tdx_gmem_post_populate (the
 * `populate` hook), maps the gfn itself into the mirror root (`ctx.mapPrivatePfn`:
 * kvm_tdp_mmu_map_private_pfn, kvm_tdp_map_page before v6.19): the MMU links the S-EPT path
 * (`linkPrivateTable` → TDH.MEM.SEPT.ADD) and sets the leaf, and `setPrivateSpte` does
 * TDH.MEM.PAGE.ADD from the source page the hook lent it (kvm_tdx->page_add_src, tdx_mem_page_add,
 * kvm-x86 commit 6b5b71f "ADD pages to the TD image while populating mirror EPT entries"; v6.16 to
 * v6.18 did the same PAGE.ADD in tdx_gmem_post_populate right after the map, with a premap count
 * that could not be left non-zero since pre-faulting was refused). Then 16 × TDH.MR.EXTEND when
 * measured. KVM_TDX_FINALIZE_VM closes MRTD (TDH.MR.FINALIZE) and sets pre_fault_allowed
 * (`ctx.allowPreFault`). After finalize, `setPrivateSpte` is TDH.MEM.PAGE.AUG.
 *
 * Launch, seed 001 (`launchFlow: 'seed-001-premap'`, the 2024 RFC "[PATCH 19/21] KVM: TDX: Add an
 * ioctl to create initial guest memory"): pre-faulting is allowed from creation; KVM_PRE_FAULT_MEMORY
 * builds the S-EPT path and `setPrivateSpte` only records the page as premapped
 * (tdx_mem_page_record_premap_cnt, nr_premapped); KVM_TDX_INIT_MEM_REGION PAGE.ADDs each premapped
 * page, refusing ENOENT for one that was not pre-faulted; FINALIZE refuses EINVAL while
 * nr_premapped != 0. The measurement is the same in both flows: MRTD records GPAs and contents,
 * not who mapped the page.
 */
import {
  KvmError,
  ModelInvariantError,
  archError,
  archOk,
  isKvmError,
  type ArchCapabilities,
  type ArchGuestKernel,
  type ArchMeasurement,
  type ArchResult,
  type ArchVm,
  type ArchVmContext,
  type FaultClass,
  type Gfn,
  type GuestFault,
  type HostFault,
  type MappingLevel,
  type TableLevel,
  type PageSource,
  type Pfn,
  gfn as toGfn,
} from '@cocokit/sdk';
import { createTdxGuest, type TdxGuestApi, type TdxGuestState } from './guest.js';
import { createTdxGuestKernel } from './guest-kernel.js';
import { TDX_EXTENDMR_CHUNKSIZE } from './measure.js';
import { TdxModule, type Gpaw } from './module.js';
import { SEPT_STATE, framesAtLevel, isLeaf, type SeptLevel } from './sept.js';
import { TDX_STATUS, isTdxOperandBusy, seamcallToArchResult, tdxStatusName } from './status.js';

/** KVM_TDX_MEASURE_MEMORY_REGION (arch/x86/include/uapi/asm/kvm.h): measure each page with MR.EXTEND. */
export const KVM_TDX_MEASURE_MEMORY_REGION = 1;

/** The page kinds `populate` takes for TDX: measured (PAGE.ADD + 16 × MR.EXTEND) or not. */
export const TDX_POPULATE_KINDS = ['measured', 'unmeasured'] as const;

/**
 * How a TD's initial image is built: `'upstream'` (v6.16+: KVM_TDX_INIT_MEM_REGION maps each page
 * itself, KVM_PRE_FAULT_MEMORY only after finalize) or `'seed-001-premap'` (seed 001's 2024 RFC:
 * pre-fault first, INIT_MEM_REGION adds the premapped pages).
 */
export const TDX_LAUNCH_FLOWS = ['upstream', 'seed-001-premap'] as const;
/** One of {@link TDX_LAUNCH_FLOWS}. */
export type TdxLaunchFlow = (typeof TDX_LAUNCH_FLOWS)[number];

/** Options of a TD, passed by the VMM in `createVm({ type: 'tdx', archOptions })`. */
export interface TdxVmOptions {
  /** The launch flow; default `'upstream'`. See {@link TDX_LAUNCH_FLOWS}. */
  readonly launchFlow?: TdxLaunchFlow;
  /** GPAW: 48 (shared bit 47, 4-level S-EPT; default) or 52 (bit 51, 5-level). */
  readonly gpaw?: Gpaw;
  /**
   * Model the pending "KVM: TDX huge page support for private memory" series (A.8): private
   * mappings up to 2M (PAGE.AUG at 2M, split with BLOCK/TRACK/DEMOTE). Default false: upstream
   * maps private memory at 4K only.
   */
  readonly hugePages?: boolean;
  /**
   * TD attribute SEPT_VE_DISABLE (bit 28). Default false: a guest access to a PENDING page raises
   * #VE. Set, it exits to KVM, which kills the VM ("Guest access before accepting", kvm_vm_dead:
   * KVM_RUN fails with EIO).
   */
  readonly septVeDisable?: boolean;
}

/** KVM_TDX_INIT_MEM_REGION's region (struct kvm_tdx_init_mem_region), with the source pages' contents. */
export interface TdxInitMemRegion {
  /** First GPA, bytes; 4 KiB-aligned and private (shared bit clear). */
  readonly gpa: number;
  /** Pages; at least 1. */
  readonly nrPages: number;
  /** The contents of each source page (what `source_addr` points to), one per page. */
  readonly sources: readonly PageSource[];
}

/** How far KVM_TDX_INIT_MEM_REGION got: the region as KVM writes it back (gpa advanced, nr_pages decremented). */
export interface TdxInitMemRegionProgress {
  readonly gpa: number;
  readonly nrPages: number;
}

/** What the TDX plugin offers the VMM beyond the generic ioctls (the plugin's `vmApi`). */
export interface TdxVmApi {
  /** The TD's TDX module: the S-EPT, MRTD and every SEAMCALL, for inspection and experiments. */
  readonly module: TdxModule;
  /** The TD's launch flow (the `launchFlow` option). */
  readonly launchFlow: TdxLaunchFlow;
  /**
   * Pages premapped by KVM_PRE_FAULT_MEMORY and not yet added by KVM_TDX_INIT_MEM_REGION
   * (nr_premapped); always 0 with the upstream flow, where nothing premaps.
   */
  readonly premapped: number;
  /**
   * KVM_TDX_INIT_MEM_REGION: PAGE.ADD each page of `region` (and, with
   * {@link KVM_TDX_MEASURE_MEMORY_REGION} in `flags`, MR.EXTEND it in 256-byte chunks) through
   * `populate`. Upstream: per page kvm_gmem_populate (`ctx.gmemPopulate`), which maps the page
   * itself. Seed 001: every page must have been pre-faulted (KVM_PRE_FAULT_MEMORY) first.
   *
   * @throws {@link KvmError} EINVAL (flags, alignment, empty or wrapping region, shared GPA, TD
   *   finalized, wrong number of sources, a gfn not private or without guest_memfd); EEXIST
   *   (upstream: the page was already populated or faulted in, kvm_gmem_populate); ENOENT (seed
   *   001: a page was not pre-faulted); EAGAIN, EBUSY, EIO, EOPNOTSUPP from `populate`. The error's
   *   `data` is the region written back (`gpa`, `nrPages` left), as KVM copies it to userspace so
   *   the VMM can resume.
   */
  initMemRegion(region: TdxInitMemRegion, flags?: number): TdxInitMemRegionProgress;
  /** KVM_TDX_FINALIZE_VM: the same as the `finalize` hook. */
  finalizeVm(): ArchMeasurement;
  /**
   * Makes the next `times` MapGPA completions of `vcpu` (`completeExit`) find an event to deliver
   * (kvm_vcpu_has_events), so KVM stops the MapGPA with TDVMCALL_STATUS_RETRY between 2 MiB chunks
   * and the guest re-issues the rest. The core's interrupt state is not visible to a plugin (the
   * contract has no kvm_vcpu_has_events), so experiments inject it here, as `module.injectBusy`
   * injects contention. `times` 0 clears it.
   */
  injectPendingEvents(vcpu: number, times?: number): void;
}

declare module '@cocokit/sdk' {
  interface ArchVmApis {
    tdx: TdxVmApi;
  }
  interface ArchGuestApis {
    tdx: TdxGuestApi;
  }
}

/** The hooks a TD implements (all but gmemPrepare, gmemInvalidate and the conversion hooks). */
type TdxHooks =
  | 'classifyFault'
  | 'maxMappingLevel'
  | 'populate'
  | 'linkPrivateTable'
  | 'setPrivateSpte'
  | 'removePrivateSpte'
  | 'splitPrivateSpte'
  | 'hostAccess'
  | 'guestAccess'
  | 'completeExit'
  | 'destroy'
  | 'checkInvariants';

/** The ArchVm of a TD: the hooks TDX implements, present, and its VM and guest APIs. */
export type TdxArchVm = Omit<ArchVm<TdxVmApi, TdxGuestApi>, 'finalize'> &
  Required<Pick<ArchVm<TdxVmApi, TdxGuestApi>, TdxHooks>> & {
    readonly vmApi: TdxVmApi;
    readonly guestApi: TdxGuestApi;
    readonly guestKernel: ArchGuestKernel;
    finalize(): ArchMeasurement;
  };

const KNOWN_OPTIONS = new Set(['gpaw', 'hugePages', 'septVeDisable', 'launchFlow']);

function parseOptions(options: Readonly<Record<string, unknown>>): Required<TdxVmOptions> {
  for (const k of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(k)) throw new KvmError('EINVAL', 'KVM_CREATE_VM(tdx)', `unknown TDX option '${k}' (known: ${[...KNOWN_OPTIONS].join(', ')})`);
  }
  const gpaw = options['gpaw'] ?? 48;
  // KVM_TDX_INIT_VM: GPAW must be 48 or 52 (52 only with 5-level EPT), else -EINVAL.
  if (gpaw !== 48 && gpaw !== 52) throw new KvmError('EINVAL', 'KVM_TDX_INIT_VM', `GPAW ${String(gpaw)} is neither 48 nor 52`);
  for (const k of ['hugePages', 'septVeDisable'] as const) {
    if (options[k] !== undefined && typeof options[k] !== 'boolean') throw new KvmError('EINVAL', 'KVM_CREATE_VM(tdx)', `option ${k} must be a boolean`);
  }
  const launchFlow = options['launchFlow'] ?? 'upstream';
  if (!(TDX_LAUNCH_FLOWS as readonly unknown[]).includes(launchFlow)) {
    throw new KvmError('EINVAL', 'KVM_CREATE_VM(tdx)', `option launchFlow must be one of ${TDX_LAUNCH_FLOWS.join(', ')}`);
  }
  return { gpaw, hugePages: options['hugePages'] === true, septVeDisable: options['septVeDisable'] === true, launchFlow: launchFlow as TdxLaunchFlow };
}

/**
 * Creates the arch state of one TD.
 *
 * @throws {@link KvmError} EINVAL for an unknown option or a GPAW other than 48/52.
 */
export function createTdxVm(ctx: ArchVmContext): TdxArchVm {
  const opts = parseOptions(ctx.options);
  const module = new TdxModule({ sim: ctx.sim, host: ctx.host, gpaw: opts.gpaw });
  const maxLevel: MappingLevel = opts.hugePages ? 1 : 0;
  /** gfn → pfn premapped by the MMU before finalize, not yet PAGE.ADDed (nr_premapped). */
  const premapped = new Map<number, number>();
  const premappedPfns = new Set<number>();
  const upstream = opts.launchFlow === 'upstream';
  /**
   * kvm_tdx->page_add_src: the source page tdx_gmem_post_populate lends the S-EPT hook while it
   * maps a gfn (upstream flow), for TDH.MEM.PAGE.ADD in `setPrivateSpte`.
   */
  let pageAddSrc: PageSource | undefined;
  let addsAtFinalize: number | undefined;
  /** Set by a KVM_BUG_ON after a failed SEAMCALL: the VM is dead to every later hook (kvm_vm_bugged). */
  let bugged: string | undefined;
  /**
   * Set by kvm_vm_dead (a guest touched a PENDING page with SEPT_VE_DISABLE): no vCPU runs again,
   * but the MMU hooks keep working so the TD can be torn down.
   */
  let dead: string | undefined;
  /** Set by the `destroy` hook: the TD is gone and every hook refuses. */
  let destroyed = false;

  /** KVM_BUG_ON(..., kvm): the VM is bugged (kvm_vm_bugged), reported to the core. */
  const markBugged = (reason: string): void => {
    bugged ??= reason;
    ctx.markBugged(reason);
  };
  /** Why no hook may act on the VM any more, or `undefined`. */
  const unusable = (): string | undefined => (destroyed ? 'the TD is destroyed' : bugged === undefined ? undefined : `the VM is bugged: ${bugged}`);

  const guestState: TdxGuestState = {
    septVeDisable: opts.septVeDisable,
    mapGpa: new Map(),
    pendingEvents: new Map(),
    assertRunnable(): void {
      const why = unusable() ?? (dead === undefined ? undefined : `the VM is dead: ${dead}`);
      if (why !== undefined) throw new KvmError('EIO', 'KVM_RUN', why);
      // tdx_vcpu_pre_run: no vCPU runs before KVM_TDX_FINALIZE_VM made the TD runnable.
      if (!module.finalized) throw new KvmError('EINVAL', 'KVM_RUN', 'the TD is not runnable: call KVM_TDX_FINALIZE_VM first');
    },
    bug(reason: string): KvmError {
      markBugged(reason);
      return new KvmError('EIO', 'KVM_RUN', `${reason} (KVM_BUG_ON: the VM is bugged)`);
    },
    kill(reason: string): KvmError {
      dead ??= reason;
      ctx.markBugged(reason);
      return new KvmError('EIO', 'KVM_RUN', `${reason} (kvm_vm_dead)`);
    },
  };
  const guest = createTdxGuest(ctx, module, guestState);
  const bit = 2 ** module.sharedBit;

  const capabilities: ArchCapabilities = Object.freeze({
    privateMem: true,
    privateByDefault: true,
    sharedGpaBit: module.sharedBit,
    maxPrivateLevel: maxLevel,
    mirrorRoot: true,
    privateRootLevel: module.sept.rootLevel,
    inPlaceConversion: false,
    measurement: 'mrtd',
    // Upstream: tdx_vm_init leaves kvm->arch.pre_fault_allowed false and only tdx_td_finalize sets
    // it (after TDH.MR.FINALIZE, state RUNNABLE), so a pre-fault before finalize is EOPNOTSUPP.
    // Seed 001 premaps the image with KVM_PRE_FAULT_MEMORY before finalize: allowed from creation.
    preFaultAllowed: !upstream,
  });

  /** An input the core never sends: refused without bugging the VM, nothing changed. */
  const badInput = (what: string): ArchResult => archError('EINVAL', what);

  /** A SEAMCALL failure KVM meets with KVM_BUG_ON: the VM is bugged, the hook answers -EIO. */
  const bug = (leaf: string, status: bigint): ArchResult => {
    markBugged(`${leaf} failed with ${tdxStatusName(status)}`);
    return archError('EIO', `${leaf} failed with ${tdxStatusName(status)} (KVM_BUG_ON: the VM is bugged)`);
  };

  const checkFrames = (gfn: number, level: number, pfn?: number): string | undefined => {
    if (!Number.isSafeInteger(gfn) || gfn < 0 || gfn >= module.privateGfnLimit) return `gfn ${gfn} is not a private frame of a GPAW-${module.gpaw} TD`;
    if (level !== 0 && level !== 1 && level !== 2) return `level ${String(level)} is not 0, 1 or 2`;
    const n = framesAtLevel(level);
    if (gfn % n !== 0) return `gfn 0x${gfn.toString(16)} is not aligned to level ${level}`;
    if (pfn !== undefined) {
      if (!Number.isSafeInteger(pfn) || pfn < 0 || pfn + n > ctx.host.nrFrames) return `pfn ${pfn} is outside host memory`;
      if (pfn % n !== 0) return `pfn 0x${pfn.toString(16)} is not aligned to level ${level}`;
    }
    return undefined;
  };

  /** A SEAMCALL KVM retries once after stopping vCPUs from entering (tdx_no_vcpus_enter_start). */
  const retryOnce = (call: () => bigint): bigint => {
    const first = call();
    return isTdxOperandBusy(first) ? call() : first;
  };

  /** KVM's tdx_track: TRACK (retried once when busy), then kick every vCPU out of guest mode. */
  const trackAndKick = (): bigint => {
    if (!module.finalized) return TDX_STATUS.TDX_SUCCESS;
    const status = retryOnce(() => module.track());
    module.kickVcpus();
    return status;
  };

  function populate(gfn: Gfn, pfn: Pfn, src: PageSource | null, kind: string): void {
    const op = 'KVM_TDX_INIT_MEM_REGION';
    if (!(TDX_POPULATE_KINDS as readonly string[]).includes(kind)) throw new KvmError('EINVAL', op, `page kind '${kind}' is not one of ${TDX_POPULATE_KINDS.join(', ')}`);
    const gone = unusable();
    if (gone) throw new KvmError('EIO', op, gone);
    const bad = checkFrames(gfn, 0, pfn);
    if (bad) throw new KvmError('EINVAL', op, bad);
    // tdx_vcpu_init_mem_region: "Once TD is finalized, the initial guest memory is fixed."
    if (module.finalized) throw new KvmError('EINVAL', op, 'the TD is finalized: its initial memory is fixed');
    if (src === null) throw new KvmError('EOPNOTSUPP', op, 'TDH.MEM.PAGE.ADD needs a source page (tdx_gmem_post_populate)');
    if (upstream) addByMapping(gfn, pfn, src);
    else addPremapped(gfn, pfn, src);
    if (kind !== 'measured') return;
    for (let off = 0; off < 4096; off += TDX_EXTENDMR_CHUNKSIZE) {
      const s = module.mrExtend(gfn * 4096 + off);
      if (s !== TDX_STATUS.TDX_SUCCESS) {
        markBugged(`TDH.MR.EXTEND failed with ${tdxStatusName(s)}`);
        throw new KvmError('EIO', op, `TDH.MR.EXTEND failed with ${tdxStatusName(s)} (KVM_BUG_ON: the VM is bugged)`, { hwError: s });
      }
    }
  }

  /**
   * Upstream tdx_gmem_post_populate: lend the source page (kvm_tdx->page_add_src) and map the gfn
   * into the mirror root (kvm_tdp_mmu_map_private_pfn); the S-EPT hooks do SEPT.ADD for missing
   * levels and PAGE.ADD for the leaf (`setPrivateSpte` before finalize).
   */
  function addByMapping(gfn: Gfn, pfn: Pfn, src: PageSource): void {
    const op = 'KVM_TDX_INIT_MEM_REGION';
    if (ctx.mapPrivatePfn === undefined) throw new KvmError('EOPNOTSUPP', op, "this core cannot map a gfn for the arch (no ArchVmContext.mapPrivatePfn): use launchFlow 'seed-001-premap'");
    // KVM_BUG_ON(kvm_tdx->page_add_src, kvm): populate does not nest.
    if (pageAddSrc !== undefined) {
      markBugged('tdx_gmem_post_populate re-entered with a source page lent');
      throw new KvmError('EIO', op, 'tdx_gmem_post_populate re-entered (KVM_BUG_ON: the VM is bugged)');
    }
    pageAddSrc = src;
    try {
      ctx.mapPrivatePfn(gfn, pfn);
    } catch (e) {
      if (!isKvmError(e)) throw e;
      throw new KvmError(e.errno, op, `mapping gfn 0x${gfn.toString(16)}: ${e.reason}`, e.data);
    } finally {
      pageAddSrc = undefined;
    }
  }

  /** Seed 001: PAGE.ADD the page KVM_PRE_FAULT_MEMORY premapped. */
  function addPremapped(gfn: Gfn, pfn: Pfn, src: PageSource): void {
    const op = 'KVM_TDX_INIT_MEM_REGION';
    const mapped = premapped.get(gfn);
    // Seed 001: KVM_TDX_INIT_MEM_REGION maps nothing; it refuses a page KVM_PRE_FAULT_MEMORY did not
    // map, with -ENOENT (!kvm_tdp_mmu_gpa_is_mapped in "[PATCH 19/21] KVM: TDX: Add an ioctl to
    // create initial guest memory", 2024-09-04).
    if (mapped === undefined) {
      throw new KvmError('ENOENT', op, `gfn 0x${gfn.toString(16)} was not pre-faulted: call KVM_PRE_FAULT_MEMORY on the range first`);
    }
    // The pfn guest_memfd gives must be the one the mirror EPT maps (mmu_pfn != pfn → -EAGAIN).
    if (mapped !== pfn) throw new KvmError('EAGAIN', op, `gfn 0x${gfn.toString(16)} is premapped to pfn 0x${mapped.toString(16)}, not 0x${pfn.toString(16)}`);
    const status = module.pageAdd(gfn, pfn, src);
    if (status !== TDX_STATUS.TDX_SUCCESS) {
      if (isTdxOperandBusy(status)) throw new KvmError('EBUSY', op, `TDH.MEM.PAGE.ADD: ${tdxStatusName(status)}`);
      throw new KvmError('EIO', op, `TDH.MEM.PAGE.ADD failed with ${tdxStatusName(status)}`, { hwError: status });
    }
    premapped.delete(gfn);
    premappedPfns.delete(pfn);
  }

  function finalize(): ArchMeasurement {
    const op = 'KVM_TDX_FINALIZE_VM';
    const gone = unusable();
    if (gone) throw new KvmError('EIO', op, gone);
    if (module.finalized) throw new KvmError('EINVAL', op, 'the TD is already finalized');
    if (premapped.size > 0) {
      throw new KvmError('EINVAL', op, `${premapped.size} page(s) were pre-faulted but not added with KVM_TDX_INIT_MEM_REGION (nr_premapped)`);
    }
    const r = module.mrFinalize();
    if (r.status !== TDX_STATUS.TDX_SUCCESS || !r.digest) {
      if (isTdxOperandBusy(r.status)) throw new KvmError('EBUSY', op, `TDH.MR.FINALIZE: ${tdxStatusName(r.status)}`, { hwError: r.status });
      markBugged(`TDH.MR.FINALIZE failed with ${tdxStatusName(r.status)}`);
      throw new KvmError('EIO', op, `TDH.MR.FINALIZE failed with ${tdxStatusName(r.status)}`, { hwError: r.status });
    }
    addsAtFinalize = module.pageAddCount;
    // tdx_td_finalize: state RUNNABLE, kvm->arch.pre_fault_allowed = true.
    ctx.allowPreFault?.();
    return { kind: 'mrtd', digest: r.digest };
  }

  const vmApi: TdxVmApi = {
    module,
    launchFlow: opts.launchFlow,
    get premapped() {
      return premapped.size;
    },
    initMemRegion(region, flags = 0) {
      const op = 'KVM_TDX_INIT_MEM_REGION';
      const { gpa, nrPages, sources } = region;
      if (!Number.isSafeInteger(flags) || (flags & ~KVM_TDX_MEASURE_MEMORY_REGION) !== 0) throw new KvmError('EINVAL', op, `flags 0x${flags.toString(16)} has bits other than KVM_TDX_MEASURE_MEMORY_REGION`);
      if (module.finalized) throw new KvmError('EINVAL', op, 'the TD is finalized: its initial memory is fixed');
      if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa % 4096 !== 0) throw new KvmError('EINVAL', op, `gpa ${gpa} is not 4 KiB-aligned`);
      if (!Number.isSafeInteger(nrPages) || nrPages <= 0) throw new KvmError('EINVAL', op, `nr_pages ${nrPages} must be at least 1`);
      const end = gpa + nrPages * 4096;
      if (!Number.isSafeInteger(end) || end > 2 ** module.gpaw) throw new KvmError('EINVAL', op, 'the region wraps or leaves the guest physical address space');
      // kvm_is_private_gpa of the first and the last byte.
      if (gpa >= bit || end - 1 >= bit) throw new KvmError('EINVAL', op, `the region [0x${gpa.toString(16)}, 0x${end.toString(16)}) has the shared bit ${module.sharedBit} set`);
      if (sources.length !== nrPages) throw new KvmError('EINVAL', op, `${sources.length} source pages for ${nrPages} pages`);
      const kind = flags & KVM_TDX_MEASURE_MEMORY_REGION ? 'measured' : 'unmeasured';
      for (let i = 0; i < nrPages; i++) {
        const g = gpa / 4096 + i;
        try {
          if (upstream) {
            // tdx_vcpu_init_mem_region: kvm_gmem_populate one page at a time with
            // tdx_gmem_post_populate; anything but 1 page done is -EIO.
            if (ctx.gmemPopulate === undefined) throw new KvmError('EOPNOTSUPP', op, "this core has no kvm_gmem_populate for the arch (no ArchVmContext.gmemPopulate): use launchFlow 'seed-001-premap'");
            const done = ctx.gmemPopulate(toGfn(g), 1, [sources[i] ?? null], kind);
            if (done !== 1) throw new KvmError('EIO', op, `kvm_gmem_populate did ${done} pages, not 1`);
            continue;
          }
          const pfn = premapped.get(g);
          // The pfn comes from guest_memfd in KVM; an unmapped gfn has none the plugin can see, and
          // is refused in populate with ENOENT before anything else happens.
          populate(toGfn(g), (pfn ?? 0) as Pfn, sources[i] ?? null, kind);
        } catch (e) {
          if (!isKvmError(e)) throw e;
          throw new KvmError(e.errno, op, e.reason, { ...e.data, gpa: g * 4096, nrPages: nrPages - i });
        }
      }
      return { gpa: end, nrPages: 0 };
    },
    finalizeVm: finalize,
    injectPendingEvents(vcpu, times = 1) {
      if (!Number.isSafeInteger(vcpu) || vcpu < 0) throw new RangeError(`injectPendingEvents: vCPU ${vcpu} is not a vCPU id`);
      if (!Number.isSafeInteger(times) || times < 0) throw new RangeError(`injectPendingEvents: times ${times} is not a count`);
      if (times === 0) guestState.pendingEvents.delete(vcpu);
      else guestState.pendingEvents.set(vcpu, times);
    },
  };

  const vm: TdxArchVm = {
    capabilities,

    classifyFault(fault: GuestFault): FaultClass {
      // kvm_is_addr_direct / gfn_direct_bits: the shared bit selects the shared EPT and is stripped.
      const shared = Math.floor(fault.gpa / bit) % 2 === 1;
      const gpa = shared ? fault.gpa - bit : fault.gpa;
      return { gfn: toGfn(Math.floor(gpa / 4096)), private: !shared };
    },

    maxMappingLevel(_gfn: Gfn, _pfn: Pfn, isPrivate: boolean): MappingLevel {
      // tdx_gmem_private_max_mapping_level: 4K upstream (2M with the pending huge-page series).
      return isPrivate ? maxLevel : 2;
    },

    populate,

    linkPrivateTable(gfn: Gfn, level: TableLevel): ArchResult {
      // `level` is the level of the entry that becomes a page-table pointer (tdx_sept_link_private_spt
      // passes it to SEPT.ADD); the root's own entries are at capabilities.privateRootLevel.
      const l: number = level;
      if (!Number.isSafeInteger(gfn) || gfn < 0 || gfn >= module.privateGfnLimit) return badInput(`linkPrivateTable: gfn ${gfn} is not a private frame`);
      if (!Number.isInteger(l) || l < 1 || l > module.sept.rootLevel) return badInput(`linkPrivateTable: level ${l} is not 1..${module.sept.rootLevel}`);
      const gone = unusable();
      if (gone) return archError('EIO', gone);
      const status = module.septAdd(Math.floor(gfn / framesAtLevel(l)) * framesAtLevel(l), l);
      if (status === TDX_STATUS.TDX_SUCCESS || isTdxOperandBusy(status)) return seamcallToArchResult('TDH.MEM.SEPT.ADD', status);
      return bug('TDH.MEM.SEPT.ADD', status);
    },

    setPrivateSpte(gfn: Gfn, level: MappingLevel, pfn: Pfn): ArchResult {
      const bad = checkFrames(gfn, level, pfn);
      if (bad) return badInput(`setPrivateSpte: ${bad}`);
      // tdx_sept_set_private_spte: KVM_BUG_ON(level != PG_LEVEL_4K) → -EINVAL (2M with the huge-page series).
      if (level > maxLevel) return badInput(`setPrivateSpte: level ${level} above the TD's private maximum ${maxLevel}`);
      const gone = unusable();
      if (gone) return archError('EIO', gone);
      if (module.finalized) {
        const status = module.pageAug(gfn, level, pfn);
        if (status === TDX_STATUS.TDX_SUCCESS || isTdxOperandBusy(status)) return seamcallToArchResult('TDH.MEM.PAGE.AUG', status);
        return bug('TDH.MEM.PAGE.AUG', status);
      }
      if (upstream) {
        // tdx_mem_page_add: only tdx_gmem_post_populate maps before finalize, with a source page
        // lent (KVM_BUG_ON(!kvm_tdx->page_add_src) → -EIO); the TD build is 4K only.
        if (level !== 0) return badInput('setPrivateSpte: the TD build maps 4K pages only (TDH.MEM.PAGE.ADD is 4K-only)');
        if (pageAddSrc === undefined) {
          markBugged(`setPrivateSpte: gfn 0x${gfn.toString(16)} mapped before finalize outside KVM_TDX_INIT_MEM_REGION`);
          return archError('EIO', `setPrivateSpte: no source page for TDH.MEM.PAGE.ADD of gfn 0x${gfn.toString(16)} (KVM_BUG_ON: the VM is bugged)`);
        }
        const status = module.pageAdd(gfn, pfn, pageAddSrc);
        if (status === TDX_STATUS.TDX_SUCCESS || isTdxOperandBusy(status)) return seamcallToArchResult('TDH.MEM.PAGE.ADD', status);
        return bug('TDH.MEM.PAGE.ADD', status);
      }
      // Before finalize: no SEAMCALL, the page is counted as premapped for KVM_TDX_INIT_MEM_REGION
      // (tdx_mem_page_record_premap_cnt). The TD build is 4K only (PAGE.ADD is 4K-only).
      if (level !== 0) return badInput('setPrivateSpte: the TD build maps 4K pages only (TDH.MEM.PAGE.ADD is 4K-only)');
      if (premapped.has(gfn) || module.sept.state(gfn, 0) !== SEPT_STATE.FREE) return archError('EIO', `setPrivateSpte: gfn 0x${gfn.toString(16)} is already mapped`);
      if (premappedPfns.has(pfn) || module.ownerOf(pfn) !== undefined) return archError('EIO', `setPrivateSpte: pfn 0x${pfn.toString(16)} is already mapped`);
      if (module.sept.walkStop(gfn, 0) >= 0) return archError('EIO', `setPrivateSpte: no S-EPT page table for gfn 0x${gfn.toString(16)}: link it first (linkPrivateTable)`);
      premapped.set(gfn, pfn);
      premappedPfns.add(pfn);
      return archOk();
    },

    removePrivateSpte(gfn: Gfn, level: MappingLevel, pfn: Pfn): ArchResult {
      const bad = checkFrames(gfn, level, pfn);
      if (bad) return badInput(`removePrivateSpte: ${bad}`);
      const gone = unusable();
      if (gone) return archError('EIO', gone);
      const premap = premapped.get(gfn);
      if (premap !== undefined && level === 0) {
        if (premap !== pfn) return archError('EIO', `removePrivateSpte: gfn 0x${gfn.toString(16)} is premapped to pfn 0x${premap.toString(16)}, not 0x${pfn.toString(16)}`);
        // tdx_sept_zap_private_spte: BLOCK finds the FREE entry (EPT_ENTRY_STATE_INCORRECT | RCX),
        // which tdx_is_sept_zap_err_due_to_premap recognises: drop the premap count, nothing else.
        module.rangeBlock(gfn, 0);
        premapped.delete(gfn);
        premappedPfns.delete(pfn);
        return archOk();
      }
      const state = module.sept.state(gfn, level);
      if (!isLeaf(state) || module.sept.pfn(gfn, level) !== pfn) {
        return archError('EIO', `removePrivateSpte: the S-EPT has no level-${level} leaf gfn 0x${gfn.toString(16)} → pfn 0x${pfn.toString(16)}`);
      }
      const block = retryOnce(() => module.rangeBlock(gfn, level));
      if (block !== TDX_STATUS.TDX_SUCCESS) return bug('TDH.MEM.RANGE.BLOCK', block);
      const track = trackAndKick();
      if (track !== TDX_STATUS.TDX_SUCCESS) return bug('TDH.MEM.TRACK', track);
      const remove = retryOnce(() => module.pageRemove(gfn, level));
      if (remove !== TDX_STATUS.TDX_SUCCESS) return bug('TDH.MEM.PAGE.REMOVE', remove);
      // TDH.PHYMEM.PAGE.WBINVD, then tdx_clear_page (MOVDIR64B, also clears poison).
      const n = framesAtLevel(level);
      ctx.sim.charge('tdx.page_wbinvd', n);
      ctx.host.zero(pfn, n);
      ctx.sim.charge('tdx.page_clear', n);
      return archOk();
    },

    splitPrivateSpte(gfn: Gfn, level: MappingLevel): ArchResult {
      const bad = checkFrames(gfn, level);
      if (bad) return badInput(`splitPrivateSpte: ${bad}`);
      if (level !== 1 || maxLevel < 1) return badInput(`splitPrivateSpte: level ${level}: only 2M private mappings split (huge-page series)`);
      const gone = unusable();
      if (gone) return archError('EIO', gone);
      if (!isLeaf(module.sept.state(gfn, 1))) return archError('EIO', `splitPrivateSpte: no 2M leaf at gfn 0x${gfn.toString(16)}`);
      // The huge-page series: BLOCK → TRACK → kick → DEMOTE under the exclusive mmu_lock.
      const block = retryOnce(() => module.rangeBlock(gfn, 1));
      if (block !== TDX_STATUS.TDX_SUCCESS) return bug('TDH.MEM.RANGE.BLOCK', block);
      const track = trackAndKick();
      if (track !== TDX_STATUS.TDX_SUCCESS) return bug('TDH.MEM.TRACK', track);
      const demote = retryOnce(() => module.pageDemote(gfn, 1));
      if (demote !== TDX_STATUS.TDX_SUCCESS) return bug('TDH.MEM.PAGE.DEMOTE', demote);
      return archOk();
    },

    hostAccess(pfn: Pfn, write: boolean): 'ok' | HostFault {
      const owner = module.ownerOf(pfn);
      if (owner === undefined) return 'ok';
      // Chosen: SIGBUS, kind 'integrity'. A host process reaches a private page only through a
      // guest_memfd mapping, whose fault handler refuses private folios with SIGBUS; the hardware
      // behaviour of a kernel access through another KeyID is [unverified] in arch-specs (reads
      // return zeros, writes poison the lines and the TD takes #MC on its next read).
      return {
        signal: 'SIGBUS',
        kind: 'integrity',
        reason: `pfn 0x${pfn.toString(16)} is TD-private (gfn 0x${owner.toString(16)} in the S-EPT); a host ${write ? 'write would poison its integrity-protected lines' : 'read sees zeros, not the contents'}`,
      };
    },

    finalize,

    guestAccess: guest.guestAccess,
    completeExit: guest.completeExit,
    guestKernel: createTdxGuestKernel(module.sharedBit),

    destroy(): void {
      if (destroyed) return;
      destroyed = true;
      // Premapped pages never reached the module; the core's zap of them already dropped them.
      premapped.clear();
      premappedPfns.clear();
      guestState.mapGpa.clear();
      // KVM removes every private page (BLOCK/TRACK/REMOVE), then releases the HKID, then frees the
      // mirror page tables, reclaiming each S-EPT page (tdx_mmu_release_hkid,
      // tdx_sept_free_private_spt; tdx_reclaim_page clears each with MOVDIR64B). A private page
      // still in the S-EPT here was not invalidated: it stays the TD's (the host may not touch it),
      // as KVM leaks a page it cannot reclaim.
      const leaked = module.stats().privatePages;
      const septPages = module.reclaimSeptPages();
      ctx.sim.charge('tdx.page_clear', septPages);
      if (ctx.sim.trace.enabled) ctx.sim.trace.emit('tdx.teardown', { septPages, leakedPages: leaked });
    },

    checkInvariants(): void {
      module.checkInvariants(addsAtFinalize);
      if (module.finalized && premapped.size > 0) throw new ModelInvariantError('tdx-premapped', `${premapped.size} premapped page(s) after finalize`);
      if (premapped.size !== premappedPfns.size) throw new ModelInvariantError('tdx-premapped', 'premapped gfns and pfns disagree');
      for (const [g, p] of premapped) {
        if (module.sept.state(g, 0) !== SEPT_STATE.FREE) throw new ModelInvariantError('tdx-premapped', `premapped gfn 0x${g.toString(16)} already has an S-EPT leaf`);
        if (module.sept.walkStop(g, 0) >= 0) throw new ModelInvariantError('tdx-premapped', `premapped gfn 0x${g.toString(16)} has no S-EPT path`);
        if (!premappedPfns.has(p) || module.ownerOf(p) !== undefined) throw new ModelInvariantError('tdx-premapped', `premapped pfn 0x${p.toString(16)} is inconsistent`);
      }
      for (const [vcpu, p] of guestState.mapGpa) {
        if (!(p.next < p.end)) throw new ModelInvariantError('tdx-map-gpa', `vCPU ${vcpu}: MapGPA progress past its end`);
        if (Math.floor(p.next / bit) % 2 !== Math.floor((p.end - 1) / bit) % 2) throw new ModelInvariantError('tdx-map-gpa', `vCPU ${vcpu}: MapGPA range crosses the shared bit`);
      }
      if (destroyed) {
        for (let level = 1; level <= module.sept.rootLevel; level++) {
          for (const e of module.sept.entries(level as SeptLevel)) {
            if (!isLeaf(e.state) && !module.sept.hasChildren(e.gfn, level)) {
              throw new ModelInvariantError('tdx-teardown', `an empty S-EPT page at level ${level}, gfn 0x${e.gfn.toString(16)} outlived destroy`);
            }
          }
        }
      }
    },

    vmApi,
    guestApi: guest.guestApi,
  };
  return vm;
}
