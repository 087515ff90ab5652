/**
 * The arch plugin contract (DESIGN.md, "The arch plugin contract"; CONTRACTS.md): what the core
 * lends a hardware backend ({@link ArchVmContext}) and the hooks it calls on it ({@link ArchVm}).
 *
 * Each hook is the model of one point where KVM's generic code calls into TDX, SEV-SNP or pKVM code
 * (a `kvm_x86_ops` member, a `kvm_arch_*` function or a pKVM hypercall). An absent hook means the
 * kernel has nothing to do at that point for this arch, exactly as a NULL `kvm_x86_ops` member does.
 * Plugins see the core only through these objects, never `mmu`, `gmem` or `vm` internals, which is
 * what lets a third-party plugin work without a change to the core.
 */
import type { Errno } from '../errors.js';
import type { HostMemoryView, PageContents } from '../host-view.js';
import type { CostDef, Sim } from '../sim/types.js';
import type { FrameRange, Gfn, MappingLevel, PageOrder, Pfn } from '../units.js';

/**
 * The contract version this sdk implements. A plugin declares the version it was written against in
 * `apiVersion`; the loader refuses one outside {@link SUPPORTED_API_VERSIONS} at load time, so an
 * incompatible plugin fails with a clear message instead of deep inside a hook.
 */
export const CONTRACT_API_VERSION = 1;

/**
 * The plugin `apiVersion`s this sdk loads, inclusive. Widened (min kept) when a contract change is
 * additive; `min` moves only with a breaking change of the contract.
 */
export const SUPPORTED_API_VERSIONS = { min: 1, max: CONTRACT_API_VERSION } as const;

/**
 * The level of a page-table entry that points at a lower table, in the contract's numbering (where
 * 0 = a 4K leaf): 1 is a 2M-level entry pointing at a table of 4K entries, up to 3 for the root's
 * entries with 4-level paging and 4 with 5-level paging.
 */
export type TableLevel = 1 | 2 | 3 | 4;

/** The kind of a guest access, as the fault's error code tells it (PFERR_WRITE_MASK, PFERR_FETCH_MASK). */
export type Access = 'read' | 'write' | 'exec';

/** A half-open range of guest frames, `[start, end)`. */
export type GfnRange = FrameRange<Gfn>;

/**
 * The outcome of an operation on private page tables held by a trusted component (TDX S-EPT):
 * plain objects, so results cross copies of the sdk and compare with `toEqual`.
 *
 * - `ok`: done.
 * - `busy`: the trusted component is contended (TDX_OPERAND_BUSY on the S-EPT tree or a page); the
 *   core retries the operation, as KVM does (tdx_sept_* callers return -EBUSY and the fault is
 *   retried, see arch/x86/kvm/vmx/tdx.c).
 * - `error`: refused; `errno` is what the core reports upwards.
 */
export type ArchResult =
  | { readonly status: 'ok' }
  | { readonly status: 'busy'; readonly reason: string }
  | { readonly status: 'error'; readonly errno: Errno; readonly reason: string };

const OK: ArchResult = Object.freeze({ status: 'ok' });

/** The `ok` {@link ArchResult} (one shared frozen object: the hot path allocates nothing). */
export const archOk = (): ArchResult => OK;
/** A `busy` {@link ArchResult}: the core retries. `reason` names what was contended. */
export const archBusy = (reason: string): ArchResult => ({ status: 'busy', reason });
/** An `error` {@link ArchResult}: the operation is refused with `errno`, for `reason`. */
export const archError = (errno: Errno, reason: string): ArchResult => ({ status: 'error', errno, reason });

/** What kind of protection a host access to a guest-private page ran into. */
export type HostFaultKind =
  /** SEV-SNP: the RMP check fails and the host takes an RMP #PF (arch/x86/mm/fault.c, arch/x86/virt/svm/sev.c). */
  | 'rmp'
  /** pKVM: the host's stage-2 entry is invalid; EL2 injects an abort (arch/arm64/kvm/hyp/nvhe/mem_protect.c). */
  | 'stage2'
  /** TDX: the access trips the TD's integrity protection (poisoned cache lines / #MC). */
  | 'integrity'
  /** The page is not mapped in the host at all (removed from the direct map, no VMA). */
  | 'unmapped';

/**
 * The fault a host access takes instead of succeeding: a value, not an exception (DESIGN.md,
 * "Errors": a SIGBUS to a host process is a guest-visible event, so it is returned).
 */
export interface HostFault {
  /** What the host process receives. */
  readonly signal: 'SIGBUS' | 'SIGSEGV';
  /** Which protection mechanism refused the access. */
  readonly kind: HostFaultKind;
  /** One line a person can act on, e.g. `'pfn 0x1234 is guest-owned in the RMP'`. */
  readonly reason: string;
}

/**
 * An exit to userspace that a plugin produces, beyond the generic ones (MEMORY_FAULT, HYPERCALL, ...).
 * `reason` is the kernel's exit reason name; the other fields are the exit's, with the kernel's names.
 * Each plugin documents the exits it produces.
 */
export interface ArchExit {
  readonly reason: string;
  readonly [field: string]: unknown;
}

/**
 * What an arch exit asks userspace to do to guest memory, read by {@link ArchVm.memoryRequest}:
 * plain objects, so they compare with `toEqual` across copies of the sdk.
 *
 * - `convert`: make `[gpa, gpa + size)` private (`toPrivate`) or shared, as for KVM_HC_MAP_GPA_RANGE
 *   (pKVM MEM_UNSHARE / MEM_SHARE).
 * - `discard`: the guest gave the range back (pKVM MEM_RELINQUISH, after the hypervisor returned the
 *   page to the host): userspace drops what backs it, punching it out of guest_memfd, without
 *   changing its shareability. The guest's next access faults in a fresh page.
 *
 * `gpa` and `size` are bytes, page-aligned.
 */
export type ArchMemoryRequest =
  | { readonly op: 'convert'; readonly gpa: number; readonly size: number; readonly toPrivate: boolean }
  | { readonly op: 'discard'; readonly gpa: number; readonly size: number };

/**
 * The initial contents `populate` copies into a private page (the `src` page of kvm_gmem_populate:
 * a userspace page in the kernel, a snapshot of contents here). `null` where the kernel passes no
 * source (SNP's ZERO and secrets pages, which firmware fills).
 */
export type PageSource = PageContents;

/** A guest fault as the core hands it to {@link ArchVm.classifyFault}. */
export interface GuestFault {
  /** The guest physical address, bytes (may carry a shared bit, e.g. TDX GPA bit 47 or 51). */
  readonly gpa: number;
  readonly access: Access;
  /**
   * Whether the guest made the access as encrypted (SNP: the C-bit of the guest's PTE, reported to
   * KVM as PFERR_GUEST_ENC_MASK and turned into PFERR_PRIVATE_ACCESS). `undefined` on archs where
   * the guest's page tables do not say (TDX, pKVM).
   */
  readonly encrypted?: boolean;
}

/** How the core is to treat a fault (the `gfn` and `is_private` of `struct kvm_page_fault`). */
export interface FaultClass {
  /** The frame the fault is for, any shared bit stripped (kvm_gfn_direct_bits / gfn_to_... ). */
  readonly gfn: Gfn;
  /** Whether the access is to private memory. */
  readonly private: boolean;
}

/**
 * An exception the hardware delivers to the guest instead of completing an access (SNP #VC with
 * error code 0x404 on an unvalidated page, TDX #VE on a PENDING page): a value the guest program
 * sees (DESIGN.md, "Errors"), never an exception in the model.
 */
export interface GuestException {
  readonly kind: 'exception';
  /** The x86 vector: X86_TRAP_VE (20), X86_TRAP_VC (29). */
  readonly vector: number;
  /** The mnemonic, for a person: `'#VE'`, `'#VC'`. */
  readonly name: string;
  /** The exception's error code (SNP #VC: the exit code, 0x404 for "page not validated"). */
  readonly errorCode?: number;
  /** The address the exception is about (the model has no guest virtual addresses: the GPA). */
  readonly gpa?: number;
}

/**
 * A nested page fault (EPT violation, #NPF) that KVM handles itself; the guest never sees it. The
 * core zaps `zap` first when given (SNP: after PSMASH of a 2M RMP entry, sev_handle_rmp_fault),
 * then runs its fault path for `fault` (which may exit to userspace, e.g. KVM_EXIT_MEMORY_FAULT),
 * and the guest retries what it was doing.
 */
export interface GuestNpf {
  readonly kind: 'npf';
  readonly fault: GuestFault;
  readonly zap?: GfnRange;
}

/**
 * A guest access the core's nested tables already map, as it hands it to
 * {@link ArchVm.guestAccess} for the checks the hardware makes beyond them (SNP's RMP validated
 * bit and page size, TDX's S-EPT entry state).
 */
export interface GuestAccess {
  /** The address as the guest issued it (with the shared bit, on archs that have one). */
  readonly gpa: number;
  /** The frame, shared bit stripped. */
  readonly gfn: Gfn;
  readonly access: Access;
  /** Whether the access is private (what {@link ArchVm.classifyFault} said). */
  readonly private: boolean;
  /** The host page the nested tables map the frame to. */
  readonly pfn: Pfn;
  /** The level of that mapping (0 = 4K). */
  readonly level: MappingLevel;
  /** The vCPU making the access. */
  readonly vcpu: number;
}

/**
 * One call of the arch's guest API as a guest program issues it: the vCPU runs
 * `guestApi[op](...args)` as one step, which may end in an exit to userspace (`ctx.exit`); when
 * userspace runs the vCPU again the core calls {@link ArchVm.completeExit} (KVM's
 * complete_userspace_io), or re-issues the call when the plugin has no completion for it.
 */
export interface ArchGuestCall {
  readonly kind: 'arch';
  readonly op: string;
  readonly args: readonly unknown[];
}

/** A step of the guest kernel's arch code: one guest-API call, or an NPF for KVM to resolve. */
export type ArchGuestStep = ArchGuestCall | GuestNpf;

/** How a guest-kernel operation ended: done, or failed with the arch's reason (a guest would panic or retry). */
export type ArchGuestOutcome = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * The guest operating system's memory-encryption code for an arch (Linux arch/x86/coco/sev and
 * arch/x86/coco/tdx, drivers/firmware/efi/unaccepted_memory.c), so arch-neutral guest programs
 * (firmware DMA flips, lazy acceptance, bounce buffers) run on any VM type. Each operation is a
 * generator of {@link ArchGuestStep}s: the vCPU runs one step at a time, feeding each call's return
 * value back in, so an operation can span exits to userspace and several vCPU runs.
 * Addresses are guest physical, page aligned, without any shared bit.
 */
export interface ArchGuestKernel {
  /**
   * Converts `[gpa, gpa + size)` the way the guest OS does before sharing a buffer or after taking
   * it back (set_memory_decrypted / set_memory_encrypted): SNP rescinds validation then asks for
   * shared with a PSC (or PSC private then PVALIDATE); TDX MapGPA then, to private, ACCEPT.
   */
  convert(gpa: number, size: number, toPrivate: boolean): Generator<ArchGuestStep, ArchGuestOutcome, unknown>;
  /** Accepts private memory the guest has not used yet (accept_memory: TDX PAGE.ACCEPT, SNP PSC private + PVALIDATE). */
  accept(gpa: number, size: number): Generator<ArchGuestStep, ArchGuestOutcome, unknown>;
  /** Whether `e` means "this memory is not accepted yet" (TDX #VE on a PENDING page, SNP #VC 0x404). */
  isUnaccepted(e: GuestException): boolean;
}

/** A launch measurement (TDX MRTD, SNP launch digest). */
export interface ArchMeasurement {
  /** Which measurement, as in {@link ArchCapabilities.measurement}: `'mrtd'`, `'snp-launch-digest'`. */
  readonly kind: string;
  /** The digest bytes (SHA-384 for both TDX and SNP). */
  readonly digest: Uint8Array;
}

/** What an arch supports; the core and VMMs check these before using a feature (like KVM_CAP_*). */
export interface ArchCapabilities {
  /** Whether the VM has private memory at all (KVM_X86_*_VM types with guest_memfd). */
  readonly privateMem: boolean;
  /** Whether memory starts private (TDX, SNP, protected pKVM) rather than shared. Implies `privateMem`. */
  readonly privateByDefault: boolean;
  /**
   * The GPA bit that marks a shared access (TDX: 47 with 4-level, 51 with 5-level S-EPT; gfn_direct_bits
   * in arch/x86/kvm/vmx/tdx.c). Absent where private/shared is not encoded in the address.
   */
  readonly sharedGpaBit?: number;
  /** The largest level a private page may be mapped at: 0 = 4K, 1 = 2M, 2 = 1G. */
  readonly maxPrivateLevel: MappingLevel;
  /**
   * Whether private page tables live in a trusted component (TDX S-EPT, the mirror root of
   * arch/x86/kvm/mmu/tdp_mmu.c); if so the private-table hooks must be present.
   */
  readonly mirrorRoot: boolean;
  /**
   * With `mirrorRoot`: the level of the private root's entries, i.e. the highest `level`
   * {@link ArchVm.linkPrivateTable} is called with (TDX: 3 with GPAW 48 / 4-level S-EPT, 4 with
   * GPAW 52 / 5-level). Default 3.
   */
  readonly privateRootLevel?: TableLevel;
  /** Whether private↔shared conversion in place (guest_memfd shareability) is supported. */
  readonly inPlaceConversion: boolean;
  /** Which launch measurement `finalize` produces, if any: `'mrtd'`, `'snp-launch-digest'`. */
  readonly measurement?: string;
  /**
   * Whether KVM_PRE_FAULT_MEMORY may map from VM creation on: the value `kvm->arch.pre_fault_allowed`
   * has after the vendor's VM init (arch/x86/kvm/x86.c kvm_arch_init_vm sets it only for the
   * DEFAULT and SW_PROTECTED types; svm_vm_init leaves it false for SNP). Default true. With false,
   * pre-faulting fails with EOPNOTSUPP (kvm_arch_vcpu_pre_fault_memory in arch/x86/kvm/mmu/mmu.c)
   * and changes nothing, until the plugin calls {@link ArchVmContext.allowPreFault} (SNP:
   * snp_launch_finish; upstream TDX: tdx_td_finalize).
   */
  readonly preFaultAllowed?: boolean;
}

/**
 * What the core lends a plugin for one VM: never the core's internals.
 *
 * @typeParam VmType - the VM types the plugin serves.
 */
export interface ArchVmContext<VmType extends string = string> {
  /** The simulation kernel: charge the plugin's costs (`sim.charge('snp.rmpupdate')`), emit trace events. */
  readonly sim: Sim;
  /** Host memory by pfn: contents, refcounts, pins, the direct map. */
  readonly host: HostMemoryView;
  /** The VM type the VM was created with (one of the plugin's `vmTypes`). */
  readonly vmType: VmType;
  /** Options the VMM passed for this VM, uninterpreted by the core; the plugin validates its own. */
  readonly options: Readonly<Record<string, unknown>>;
  /**
   * Ends the current vCPU step with an exit to userspace. Only valid inside a guest operation
   * (`guestApi`); never returns.
   */
  exit(e: ArchExit): never;
  /**
   * The vCPU whose guest operation (or exit completion) is running, `undefined` outside one: where
   * KVM keeps per-vCPU progress (SNP's PSC in flight, TDX's MapGPA cursor), a plugin keys it by this.
   */
  readonly vcpu: number | undefined;
  /**
   * What userspace enabled with KVM_ENABLE_CAP on the VM: `args[0]` of the last enable of `cap`, or
   * `undefined` if never enabled (KVM_CAP_EXIT_HYPERCALL: the bitmap of hypercalls that exit).
   */
  enabledCap(cap: number): number | undefined;
  /**
   * KVM_BUG_ON / kvm_vm_dead: the plugin hit a state KVM cannot recover from; every later KVM_RUN
   * and VM ioctl fails with EIO. Returns normally: the plugin then reports its own failure.
   */
  markBugged(reason: string): void;
  /**
   * What the core's nested tables map `gfn` to in the shared or private root (the mirror root for
   * archs with one), or `undefined` when it is not mapped.
   */
  translate(gfn: Gfn, root: 'shared' | 'private'): { readonly pfn: Pfn; readonly level: MappingLevel } | undefined;
  /**
   * Sets `kvm->arch.pre_fault_allowed`: from now on KVM_PRE_FAULT_MEMORY may map (SNP: once
   * SNP_LAUNCH_FINISH succeeded, in snp_launch_finish; upstream TDX: in tdx_td_finalize). Only
   * meaningful for a VM whose {@link ArchCapabilities.preFaultAllowed} is false; idempotent, and
   * there is no way back, as in the kernel. Optional, so a core that predates it still hosts the
   * plugin (pre-faulting is then always allowed): call it as `ctx.allowPreFault?.()`.
   */
  allowPreFault?(): void;
  /**
   * kvm_gmem_populate (virt/kvm/guest_memfd.c), as vendor code calls it from a launch ioctl (TDX:
   * tdx_vcpu_init_mem_region; SNP: snp_launch_update): for each gfn of `[gfn, gfn + npages)`
   * clipped to its memslot, finds the guest_memfd page, refuses a page already prepared (`EEXIST`)
   * or a gfn that is not private in the VM's memory attributes or has no guest_memfd (`EINVAL`),
   * then calls the plugin's {@link ArchVm.populate} hook (the post_populate callback) with the pfn,
   * `src[i]` and `kind`, and marks the page prepared. Returns the pages done when at least one was,
   * else throws the first {@link KvmError}. Optional, so a core that predates it still hosts the
   * plugin: call it as `ctx.gmemPopulate?.(...)` and refuse the launch ioctl without it.
   */
  gmemPopulate?(gfn: Gfn, npages: number, src: ReadonlyArray<PageSource | null>, kind: string): number;
  /**
   * Maps `gfn` → `pfn` at 4K into the private root (the mirror root for archs with one) through
   * the core's MMU, as kvm_tdp_mmu_map_private_pfn (v6.19+; kvm_tdp_map_page with
   * PFERR_PRIVATE_ACCESS before it) in arch/x86/kvm/mmu/mmu.c does for tdx_gmem_post_populate: the
   * core links missing tables ({@link ArchVm.linkPrivateTable}) and sets the leaf
   * ({@link ArchVm.setPrivateSpte}), retrying `busy` results. It bypasses
   * {@link ArchCapabilities.preFaultAllowed}, which gates only the KVM_PRE_FAULT_MEMORY ioctl.
   * Meant to be called from the `populate` hook. Throws {@link KvmError}: `EINVAL` for a gfn that is
   * not private, `EIO` when the VM is dead or the core mapped another pfn, the fault's errno
   * otherwise. Optional like {@link ArchVmContext.gmemPopulate}: `ctx.mapPrivatePfn?.(...)`.
   */
  mapPrivatePfn?(gfn: Gfn, pfn: Pfn): void;
}

/**
 * The hooks one VM of an arch offers the core. Every hook is optional (an absent hook means
 * "nothing to do"); hooks that the kernel can refuse throw {@link KvmError} and change no state.
 *
 * @typeParam VmApi - what the plugin offers VMMs beyond the generic ioctls (see {@link ArchVmApis}).
 * @typeParam GuestApi - the arch's guest operations, for guest programs (see {@link ArchGuestApis}).
 */
export interface ArchVm<VmApi extends object = object, GuestApi extends object = object> {
  /** What the arch supports. */
  readonly capabilities: ArchCapabilities;

  /**
   * Which frame a guest fault is for and whether it is private: the core's
   * `kvm_mmu_do_page_fault` sets `fault->is_private` from this. TDX strips the shared GPA bit
   * (`kvm_is_addr_direct`), SNP reads the fault's encrypted flag, pKVM treats everything as private
   * unless shared. Absent: gfn = gpa >> 12, private iff the VM's memory attributes say so.
   */
  classifyFault?(fault: GuestFault): FaultClass;

  /**
   * A guest_memfd folio is about to be mapped private for the first time (kvm_arch_gmem_prepare,
   * called from kvm_gmem_get_pfn). SNP assigns the pages to the guest in the RMP
   * (sev_gmem_prepare, arch/x86/kvm/svm/sev.c). `pfn` and `gfn` are aligned to `order`.
   * Throws {@link KvmError} when refused; a refusal changes no state.
   */
  gmemPrepare?(pfn: Pfn, gfn: Gfn, order: PageOrder): void;

  /**
   * Host pages `[start, end)` leave the guest: freed from guest_memfd or converted to shared
   * (kvm_arch_gmem_invalidate, from kvm_gmem_free_folio). SNP returns them to the hypervisor in the
   * RMP and flushes caches (sev_gmem_invalidate); TDX has already removed them through
   * {@link ArchVm.removePrivateSpte}. After it, the host may access the pages again.
   */
  gmemInvalidate?(start: Pfn, end: Pfn): void;

  /**
   * The largest level `gfn` → `pfn` may be mapped at (kvm_x86_ops.gmem_max_mapping_level:
   * sev_gmem_max_mapping_level reads the RMP entry's size, TDX allows 4K until its huge-page series).
   * The core takes the minimum with the memslot's and guest_memfd's own limits.
   */
  maxMappingLevel?(gfn: Gfn, pfn: Pfn, isPrivate: boolean): MappingLevel;

  /**
   * Copies initial guest contents into a private page before launch (the post_populate callback of
   * kvm_gmem_populate): TDX TDH.MEM.PAGE.ADD plus TDH.MR.EXTEND (tdx_gmem_post_populate), SNP
   * SNP_LAUNCH_UPDATE (sev_gmem_post_populate). `kind` is the arch's page type (SNP: 'normal',
   * 'zero', 'unmeasured', 'secrets', 'cpuid'; TDX: 'measured', 'unmeasured').
   */
  populate?(gfn: Gfn, pfn: Pfn, src: PageSource | null, kind: string): void;

  /**
   * Links a new private page-table page under the entry at `level` that covers `gfn`
   * (kvm_x86_ops.link_external_spt; TDX TDH.MEM.SEPT.ADD in tdx_sept_link_private_spt). The core
   * links from {@link ArchCapabilities.privateRootLevel} down to 1 before the first leaf.
   */
  linkPrivateTable?(gfn: Gfn, level: TableLevel): ArchResult;

  /**
   * Maps `gfn` → `pfn` at `level` in the private tables (kvm_x86_ops.set_external_spte; TDX
   * TDH.MEM.PAGE.AUG after launch, PAGE.ADD before it, in tdx_sept_set_private_spte).
   */
  setPrivateSpte?(gfn: Gfn, level: MappingLevel, pfn: Pfn): ArchResult;

  /**
   * Unmaps `gfn` → `pfn` at `level` from the private tables (kvm_x86_ops.remove_external_spte; TDX
   * TDH.MEM.RANGE.BLOCK, TDH.MEM.TRACK, kick vCPUs, TDH.MEM.PAGE.REMOVE in
   * tdx_sept_remove_private_spte). After it, the page is no longer the guest's.
   */
  removePrivateSpte?(gfn: Gfn, level: MappingLevel, pfn: Pfn): ArchResult;

  /**
   * Splits a private mapping at `level` into mappings one level down (TDX TDH.MEM.PAGE.DEMOTE;
   * kvm_x86_ops.split_external_spte in the TDX huge-page series, a proposal).
   */
  splitPrivateSpte?(gfn: Gfn, level: MappingLevel): ArchResult;

  /**
   * Whether the host may touch `pfn` now, or the fault it takes (SNP: a write to a guest-owned page
   * is an RMP #PF; pKVM: a stage-2 abort). Absent: always allowed.
   */
  hostAccess?(pfn: Pfn, write: boolean): 'ok' | HostFault;

  /**
   * Called before `range` changes shareability, on both paths (KVM_SET_MEMORY_ATTRIBUTES:
   * kvm_arch_pre_set_memory_attributes; guest_memfd in place: the conversion ioctl). May refuse with
   * {@link KvmError}; the conversion then does not happen.
   */
  beforeConvert?(range: GfnRange, toPrivate: boolean): void;

  /** Called after `range` changed shareability (kvm_arch_post_set_memory_attributes). */
  afterConvert?(range: GfnRange, toPrivate: boolean): void;

  /** What the plugin offers the VMM beyond the generic ioctls (TDX initMemRegion, SNP launchUpdate, ...). */
  readonly vmApi?: VmApi;

  /** The arch's guest operations, for guest programs (TDX accept/mapGpa, SNP pvalidate/psc, pKVM share). */
  readonly guestApi?: GuestApi;

  /**
   * Ends the launch and returns the measurement (TDX TDH.MR.FINALIZE, SNP SNP_LAUNCH_FINISH).
   * Throws {@link KvmError} when refused (e.g. EINVAL when already finalized).
   */
  finalize?(): ArchMeasurement | undefined;

  /**
   * The checks a guest access makes beyond the nested tables, once the core has the frame mapped
   * (SNP: the RMP entry must be assigned to this guest, validated and of the mapping's size; TDX:
   * the S-EPT entry must be MAPPED). `'ok'`: the access completes; a {@link GuestException}: the
   * guest receives it; a {@link GuestNpf}: KVM handles a nested fault and the guest retries.
   * Absent: every mapped access completes.
   */
  guestAccess?(access: GuestAccess): 'ok' | GuestException | GuestNpf;

  /**
   * complete_userspace_io: userspace has run vCPU `vcpu` again after the arch exit `exit` (having
   * filled in what the exit asks, e.g. `hypercall.ret`). Returns the value the guest call that
   * exited returns, or `undefined` to re-issue that call (which then finds its progress where it
   * left it); may call `ctx.exit` again for the next exit of a multi-exit operation.
   */
  completeExit?(exit: ArchExit, vcpu: number): { readonly value: unknown } | undefined;

  /**
   * How a VMM reads `exit` as a request to change guest memory, or `undefined` when it is not one
   * (additive in apiVersion 1: absent, the arch has no such exits). It lets an arch-neutral VMM
   * handle conversion requests it cannot decode itself, the way it handles KVM_HC_MAP_GPA_RANGE:
   * pKVM's MEM_SHARE / MEM_UNSHARE / MEM_RELINQUISH forwarded as KVM_EXIT_HYPERCALL with an SMCCC
   * function ID in `nr`. Pure: reads the exit, changes nothing. The VMM answers in the exit as its
   * kvm_run member says (KVM_EXIT_HYPERCALL: `ret` = 0 done, non-zero refused) and runs the vCPU
   * again; {@link ArchVm.completeExit} turns the answer into the guest's return value.
   */
  memoryRequest?(exit: ArchExit): ArchMemoryRequest | undefined;

  /** The guest OS's memory-encryption code for this arch, for arch-neutral guest programs. */
  readonly guestKernel?: ArchGuestKernel;

  /** Checks the plugin's own state; throws {@link ModelInvariantError} when an invariant is broken. */
  checkInvariants?(): void;

  /**
   * The VM is being destroyed (kvm_arch_destroy_vm / the vm_destroy kvm_x86_ops): release what the
   * plugin holds (SNP decommissions and reclaims its VMSA pages). Called once, after every guest
   * page has been invalidated.
   */
  destroy?(): void;
}

/**
 * VMM-side APIs per VM type, declared by each plugin so a VM created with `type: 'tdx'` is typed
 * with TDX's API without the core importing the plugin:
 *
 * ```ts
 * declare module '@cocokit/sdk' { interface ArchVmApis { tdx: TdxVmApi } }
 * ```
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface ArchVmApis {}

/** Guest-side APIs per VM type, declared like {@link ArchVmApis}. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface ArchGuestApis {}

/**
 * The VMM-side API of VM type `T`: what its plugin declared in {@link ArchVmApis}, or `unknown` for
 * a type no plugin declared (the core cannot know it; narrow it yourself).
 */
export type ArchVmApiOf<T extends string> = T extends keyof ArchVmApis ? ArchVmApis[T] : unknown;

/** The guest-side API of VM type `T`, as declared in {@link ArchGuestApis}, or `unknown`. */
export type ArchGuestApiOf<T extends string> = T extends keyof ArchGuestApis ? ArchGuestApis[T] : unknown;

/**
 * The {@link ArchVm} a plugin serving `T` must create: where `T` has declared APIs, `vmApi` and
 * `guestApi` must have those types (so the augmentation and the implementation cannot drift).
 */
export type ArchVmFor<T extends string> = ArchVm &
  ([T] extends [keyof ArchVmApis] ? { readonly vmApi: ArchVmApis[T] } : unknown) &
  ([T] extends [keyof ArchGuestApis] ? { readonly guestApi: ArchGuestApis[T] } : unknown);

/**
 * What a plugin author writes and passes to {@link defineArchPlugin}.
 *
 * @typeParam VmType - the VM types the plugin serves, inferred from `vmTypes`.
 */
export interface ArchPluginDef<VmType extends string = string, Vm extends ArchVmFor<VmType> = ArchVmFor<VmType>> {
  /** The plugin's name: a lowercase identifier (`'snp'`, `'my-arch'`). */
  readonly name: string;
  /** The contract version the plugin was written against; see {@link SUPPORTED_API_VERSIONS}. */
  readonly apiVersion: number;
  /** The VM types it serves (`'tdx'`; what `createVm({ type })` names); lowercase identifiers. */
  readonly vmTypes: readonly VmType[];
  /** The costs it charges, each with its default and the source of that default. */
  readonly costs?: Readonly<Record<string, CostDef>>;
  /** One-line description, for listings. */
  readonly description?: string;
  /** Creates the arch state of one VM. */
  createVm(ctx: ArchVmContext<VmType>): Vm;
}

/** Where the brand lives: `Symbol.for`, so objects made by two copies of the sdk still agree. */
export const ARCH_PLUGIN_BRAND: unique symbol = Symbol.for('cocokit.arch-plugin');

/**
 * A validated plugin, as {@link defineArchPlugin} returns it. The brand (a property under
 * `Symbol.for('cocokit.arch-plugin')` holding the plugin's `apiVersion`) makes a plain object
 * fail to type-check as a plugin, and lets the loader tell a plugin from any other default export.
 */
export type ArchPlugin<VmType extends string = string, Vm extends ArchVmFor<VmType> = ArchVmFor<VmType>> = Readonly<
  ArchPluginDef<VmType, Vm>
> & {
  readonly costs: Readonly<Record<string, CostDef>>;
  readonly [ARCH_PLUGIN_BRAND]: number;
};
