/**
 * A VM (struct kvm): memslots, guest_memfd files, memory attributes, the MMU, vCPUs, the arch
 * backend and extensions, behind methods named after the VM ioctls (Documentation/virt/kvm/api.rst,
 * section 4). Every refusal is a `KvmError` with the kernel's errno and changes nothing.
 */
import {
  KvmError,
  ModelInvariantError,
  PAGE_SIZE,
  isKvmError,
  uapi,
  type ArchCapabilities,
  type ArchExit,
  type ArchGuestApiOf,
  type ArchMemoryRequest,
  type ArchVm,
  type ArchVmApiOf,
  type ArchVmContext,
  type Gfn,
  type KvmClearDirtyLog,
  type KvmCreateGuestMemfd,
  type KvmDirtyLog,
  type KvmEnableCap,
  type KvmMemoryAttributes,
  type KvmMemoryAttributes2,
  type KvmPreFaultMemory,
  type KvmUserspaceMemoryRegion2,
  type Pfn,
  type Sim,
} from '@cocokit/sdk';
import { createGmemVm, type GmemProposals, type GmemVm, type GuestMemfd, type HugeFolioPolicy } from '@cocokit/gmem';
import type { Host, HostProcess } from '@cocokit/host';
import { Memslots, type Memslot, type MemslotChange } from '@cocokit/memslot';
import { SPTE, createMmu, type BeforeMapResult, type FaultView, type HugepageRecovery, type Mmu } from '@cocokit/mmu';
import { ConversionEngine, type ConversionOutcome, type ConversionRequest, type DiscardPolicy } from './conversion.js';
import type { VcpuExit } from './exits.js';
import type { ExtensionInstance, VmExtension, VmExtensionApis } from './extensions.js';
import { createGuestContext, type GuestKernelDriver, type GuestProgram } from './guest-program.js';
import { builtinGuestKernel } from './guest-kernel.js';
import { KernelAccess } from './kernel-access.js';
import { ArchExitSignal, Vcpu, type VcpuHost, type VcpuStatsSink } from './vcpu.js';
import type { VmStats } from './stats.js';

/** The maximum vCPU id (KVM_MAX_VCPU_IDS on x86 is 4096 by default). */
export const KVM_MAX_VCPU_IDS = 4096;

/** What the Kvm hands a new VM (internal). */
export interface VmInit {
  readonly id: number;
  readonly type: string;
  /** KVM_CREATE_VM's machine type number, for the built-in and known x86 types. */
  readonly kvmType: number | undefined;
  readonly sim: Sim;
  readonly host: Host;
  readonly process: HostProcess;
  readonly capabilities: ArchCapabilities;
  /** Builds the arch state given the context (absent for built-in types). */
  readonly createArch: ((ctx: ArchVmContext) => ArchVm) | undefined;
  readonly archOptions: Readonly<Record<string, unknown>>;
  readonly extensions: readonly VmExtension[];
  readonly proposals: Partial<GmemProposals>;
  readonly hugePolicy: HugeFolioPolicy | undefined;
  readonly hugepageRecovery: HugepageRecovery | undefined;
  readonly inPlaceConversion: boolean;
  readonly onDestroy: (vm: Vm) => void;
}

/** A guest_memfd as the VM's userspace holds it: the file plus the VM's host process to map it into. */
export class VmGuestMemfd {
  /** The model's file (`@cocokit/gmem`), for its statistics and state. */
  readonly file: GuestMemfd;
  private readonly vm: Vm;

  /** @internal */
  constructor(vm: Vm, file: GuestMemfd) {
    this.vm = vm;
    this.file = file;
  }

  /** The file descriptor (what `guest_memfd` in KVM_SET_USER_MEMORY_REGION2 names). */
  get fd(): number {
    return this.file.fd;
  }

  /** The size in bytes. */
  get size(): number {
    return this.file.nrPages * PAGE_SIZE;
  }

  /** fallocate(2): allocate (mode 0) or FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE. */
  fallocate(mode: number, offset: number | bigint, len: number | bigint): void {
    this.file.fallocate(mode, offset, len);
  }

  /**
   * mmap(2) of the file into the VM's host process (GUEST_MEMFD_FLAG_MMAP; MAP_SHARED only).
   * Returns the address.
   */
  mmap(args: { readonly length: number; readonly prot: number; readonly flags: number; readonly offset?: number; readonly addr?: number }): number {
    return this.vm.process.mmap({ ...args, file: this.file });
  }

  /** read(2): guest_memfd has no read method (EINVAL). */
  read(): never {
    return this.file.read();
  }

  /** write(2): guest_memfd has no write method (EINVAL). */
  write(): never {
    return this.file.write();
  }

  /**
   * PROPOSED-CONV-v8 KVM_SET_MEMORY_ATTRIBUTES2 on the file: in-place conversion of
   * `[offset, offset + size)`, through the VM's conversion engine (arch hooks around it).
   */
  setMemoryAttributes2(req: KvmMemoryAttributes2): void {
    // The module parameter first: a refused ioctl must not have run the arch's beforeConvert.
    if (!this.vm.gmem.proposals.memoryAttributes2) throw new KvmError('ENOTTY', 'KVM_SET_MEMORY_ATTRIBUTES2', 'in-place conversion (gmem_in_place_conversion) is off');
    this.vm.convertFile(this.file, req.offset, req.size, req, () => this.file.checkMemoryAttributes2(req), () => this.file.setMemoryAttributes2(req), req.attributes);
  }

  /** PROPOSED-CONV-v2 KVM_GMEM_CONVERT_SHARED: the first generation's name for the same conversion. */
  convertShared(req: { offset: number; size: number; error_offset?: number }): number {
    if (!this.vm.gmem.proposals.gmemConvert) throw new KvmError('ENOTTY', 'KVM_GMEM_CONVERT_SHARED', 'the KVM_GMEM_CONVERT_* ioctls (conversion RFC v2) are not enabled');
    let r = 0;
    this.vm.convertFile(this.file, req.offset, req.size, req, () => this.gen1Check(req, false), () => (r = this.file.convertShared(req)), 0);
    return r;
  }

  /** PROPOSED-CONV-v2 KVM_GMEM_CONVERT_PRIVATE. */
  convertPrivate(req: { offset: number; size: number; error_offset?: number }): number {
    if (!this.vm.gmem.proposals.gmemConvert) throw new KvmError('ENOTTY', 'KVM_GMEM_CONVERT_PRIVATE', 'the KVM_GMEM_CONVERT_* ioctls (conversion RFC v2) are not enabled');
    let r = 0;
    this.vm.convertFile(this.file, req.offset, req.size, req, () => this.gen1Check(req, true), () => (r = this.file.convertPrivate(req)), uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
    return r;
  }

  /**
   * The first generation's refusals that can come after the arch hook, checked before it: a
   * well-formed request (checked by the ioctl itself either way) goes to gmem's validate-only
   * {@link GuestMemfd.checkConvert}. `true` when the request changes something or is left to the ioctl.
   */
  private gen1Check(req: { offset: number; size: number; error_offset?: number }, toPrivate: boolean): boolean {
    const { offset, size } = req;
    const wellFormed = (req.error_offset ?? 0) === 0 && Number.isSafeInteger(offset) && Number.isSafeInteger(size) && offset >= 0 && size > 0 && offset % PAGE_SIZE === 0 && size % PAGE_SIZE === 0;
    if (!wellFormed) return true;
    const start = offset / PAGE_SIZE;
    const end = start + size / PAGE_SIZE;
    if (end > this.file.nrPages) return true;
    return this.file.checkConvert(start, end, toPrivate);
  }

  /** close(2). The file lives on while a memslot or a mapping holds it. */
  close(): void {
    this.file.close();
  }
}

/** A VM. Create it with `kvm.createVm({ type })`. */
export class Vm<T extends string = string> {
  readonly id: number;
  /** The VM type (`'default'`, `'sw-protected'`, or a plugin's). */
  readonly type: T;
  readonly sim: Sim;
  readonly host: Host;
  /** The VMM process: its anonymous memory backs hva-based memslots; guest_memfd mmaps land here. */
  readonly process: HostProcess;
  readonly memslots: Memslots;
  readonly gmem: GmemVm;
  readonly mmu: Mmu;
  /** The arch backend's hooks; `undefined` for the built-in types. */
  readonly arch: ArchVm | undefined;
  readonly capabilities: ArchCapabilities;
  /** The engine both conversion paths go through. */
  readonly conversions: ConversionEngine;
  /** KVM's own accesses to guest memory: kvm_read_guest / kvm_write_guest and gfn_to_pfn_caches. */
  readonly kernelAccess: KernelAccess;
  private readonly vcpus = new Map<number, Vcpu>();
  private readonly enabledCaps = new Map<number, number>();
  private readonly extensionInstances = new Map<string, ExtensionInstance>();
  private readonly slotStates = new Map<string, WeakMap<Memslot, unknown>>();
  private readonly kernelDriver: GuestKernelDriver;
  private readonly init: VmInit;
  private readonly removeHostCheck: (() => void) | undefined;
  private readonly offSlots: () => void;
  private guestVcpu: number | undefined;
  private dead: string | undefined;
  /** The arch called `ctx.allowPreFault` (kvm->arch.pre_fault_allowed set by vendor code). */
  private preFaultAllowedByArch = false;
  private destroyed = false;
  readonly exitCounts = new Map<string, number>();
  private readonly vcpuStats: VcpuStatsSink = { steps: 0, accesses: 0, exceptions: 0, npfs: 0, faultRetries: 0, archCalls: 0, hypercalls: 0 };

  /** @internal Use `kvm.createVm`. */
  constructor(init: VmInit) {
    this.init = init;
    this.id = init.id;
    this.type = init.type as T;
    this.sim = init.sim;
    this.host = init.host;
    this.process = init.process;

    // The arch first: a plugin that throws leaves nothing behind (the caller wraps the error).
    // The MMU is made after the arch (it takes the arch's hooks); ctx.translate reaches it through this.
    const late: { mmu?: Mmu } = {};
    // The context's getter needs the VM, not the context object, as its receiver.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    const ctx: ArchVmContext = {
      sim: init.sim,
      host: init.host,
      vmType: init.type,
      options: init.archOptions,
      exit(e: ArchExit): never {
        if (self.guestVcpu === undefined) {
          throw new ModelInvariantError('vm.arch_exit', `the arch asked for exit ${JSON.stringify(e.reason)} outside a guest operation`);
        }
        throw new ArchExitSignal(e);
      },
      get vcpu() {
        return self.guestVcpu;
      },
      enabledCap: (cap) => this.enabledCaps.get(cap),
      markBugged: (reason) => {
        this.dead ??= reason;
        if (this.sim.trace.enabled) this.sim.trace.emit('vm.bugged', { vm: this.id, reason });
      },
      translate: (gfn, root) => {
        const mmu = late.mmu;
        if (mmu === undefined) return undefined;
        const mirror = root === 'private' && mmu.mirror !== undefined;
        const leaf = mmu.lookup(gfn, mirror ? 'private' : 'shared');
        if (leaf === undefined) return undefined;
        // Without a mirror root, private and shared leaves share one root (SNP): tell them apart by the leaf's kind.
        if (!mirror && ((leaf.flags & SPTE.PRIVATE) !== 0) !== (root === 'private')) return undefined;
        // lookup() already answers the pfn of `gfn` (not of the leaf's first gfn).
        return { pfn: leaf.pfn as never, level: leaf.level };
      },
      allowPreFault: () => {
        this.preFaultAllowedByArch = true;
      },
      gmemPopulate: (gfn, npages, src, kind) => {
        // kvm_gmem_populate: the gfn's memslot must be a guest_memfd one (kvm_slot_can_be_private).
        const slot = this.memslots.lookup(gfn);
        if (slot === undefined) throw new KvmError('EINVAL', 'kvm_gmem_populate', `gfn 0x${gfn.toString(16)} is in no memslot`);
        return this.gmem.populate({ slot, gfn, npages, src, kind });
      },
      mapPrivatePfn: (gfn, pfn) => this.mapPrivatePfn(gfn, pfn),
    };
    this.arch = init.createArch?.(ctx);
    this.capabilities = this.arch?.capabilities ?? init.capabilities;
    const privateMem = this.capabilities.privateMem;

    // From here on, a refusal undoes what was made, the arch last: no half-made VM.
    const undo: Array<() => void> = [];
    try {
      const ext = init.extensions;
      for (const e of ext) this.slotStates.set(e.name, new WeakMap());
      this.gmem = createGmemVm({
        host: init.host,
        sim: init.sim,
        privateMem,
        proposals: { ...init.proposals, memoryAttributes2: init.inPlaceConversion || init.proposals.memoryAttributes2 === true },
        ...(init.hugePolicy === undefined ? {} : { hugePolicy: init.hugePolicy }),
        ...(this.arch === undefined ? {} : { arch: bindGmemHooks(this.arch) }),
        // kvm_gmem_populate asks the VM's attributes (kvm->mem_attr_array), which the memslot
        // layer, made next, keeps: read through `this` at call time.
        memoryAttributes: { rangeHasAttributes: (start, end, attrs, mask) => this.memslots.rangeHasAttributes(start, end, attrs, mask) },
      });
      this.memslots = new Memslots({
        hasPrivateMem: privateMem,
        // KVM_MEM_READONLY: x86 has it; TDX/SNP refuse read-only slots only with guest_memfd.
        readonlyMem: true,
        nrAddressSpaces: privateMem ? 1 : 2,
        // kvm_supported_vm_mem_attributes (PROPOSED-CONV-v8): 0 with gmem_in_place_conversion on,
        // where shareability lives in guest_memfd and kvm_mem_is_private reads it from there.
        supportedAttributes: privateMem && !this.gmem.proposals.memoryAttributes2 ? uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
        binder: this.gmem.binder,
        vmToken: this.gmem.vmToken,
        sim: init.sim,
        slotsLockName: `slots_lock/vm${init.id}`,
        extensionFlags: ext.flatMap((e) => e.memslotFlags ?? []),
      });
      const hooks = ext.length > 0 ? (f: FaultView) => this.beforeMap(f) : undefined;
      this.mmu = createMmu({
          sim: init.sim,
          host: init.host,
          memslots: this.memslots,
          gmem: this.gmem,
          process: init.process,
          ...(this.arch === undefined ? {} : { arch: this.arch }),
          ...(init.hugepageRecovery === undefined ? {} : { hugepageRecovery: init.hugepageRecovery }),
          ...(hooks === undefined ? {} : { beforeMap: hooks }),
          // kvm_arch_vcpu_pre_fault_memory: -EOPNOTSUPP unless kvm->arch.pre_fault_allowed.
          preFaultAllowed: () => this.preFaultAllowed,
        });
      undo.push(() => this.mmu.destroy());
      late.mmu = this.mmu;
      const mmu = this.mmu;
      this.kernelAccess = new KernelAccess({
        id: init.id,
        sim: init.sim,
        host: init.host,
        memslots: this.memslots,
        process: init.process,
        isPrivateGfn: (gfn, slot) => mmu.isPrivateGfn(gfn, slot),
        fileOf: (slot) => this.fileOf(slot),
        privateInaccessible: this.arch !== undefined && privateMem,
      });
      undo.push(() => this.kernelAccess.destroy());
      const hostAccess = this.arch?.hostAccess;
      this.removeHostCheck = hostAccess === undefined ? undefined : init.host.addHostAccessCheck((pfn, write) => hostAccess.call(this.arch, pfn, write));
      if (this.removeHostCheck !== undefined) undo.push(this.removeHostCheck);
      this.conversions = new ConversionEngine({
        sim: init.sim,
        memslots: this.memslots,
        arch: this.arch,
        process: init.process,
        fileOf: (slot) => this.fileOf(slot),
        inPlace: () => this.gmem.proposals.memoryAttributes2,
      });
      // An arch's guest kernel is used as it is (a generator of arch steps is a driver's generator).
      this.kernelDriver = this.arch?.guestKernel ?? builtinGuestKernel(privateMem);
      for (const e of ext) {
        const instance = e.setup({
          vm: this as Vm,
          sim: init.sim,
          slotState: (slot) => this.slotStates.get(e.name)!.get(slot),
        });
        this.extensionInstances.set(e.name, instance);
      }
      this.offSlots = this.memslots.subscribe({
        afterChange: (change: MemslotChange) => {
          for (const e of ext) {
            const inst = this.extensionInstances.get(e.name)!;
            const states = this.slotStates.get(e.name)!;
            if (change.new !== undefined && inst.createSlotState !== undefined) {
              const prev = change.old === undefined ? undefined : states.get(change.old);
              states.set(change.new, prev !== undefined && change.kind === 'flags' ? prev : inst.createSlotState(change.new));
            }
            inst.onSlotChange?.(change);
          }
        },
      });
    } catch (e) {
      for (const u of undo.reverse()) {
        try {
          u();
        } catch {
          // Undo is best effort; the original refusal is what the caller must see.
        }
      }
      try {
        this.arch?.destroy?.();
      } catch {
        // As above.
      }
      throw e;
    }
  }

  // ------------------------------------------------------------------------------------------
  // VM ioctls

  /** KVM_CHECK_EXTENSION on the VM fd: the answers that depend on the VM type and extensions. */
  checkExtension(cap: number): number {
    for (const e of this.init.extensions) {
      const v = e.capabilities?.[cap];
      if (v !== undefined) return v;
    }
    switch (cap) {
      case uapi.KVM_CAP_MEMORY_ATTRIBUTES:
        // kvm_supported_vm_mem_attributes: what KVM_SET_MEMORY_ATTRIBUTES accepts on this VM.
        return this.memslots.config.supportedAttributes;
      case uapi.KVM_CAP_GUEST_MEMFD:
      case uapi.KVM_CAP_GUEST_MEMFD_FLAGS:
      case uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES:
        return this.gmem.checkExtension(cap);
      case uapi.KVM_CAP_USER_MEMORY2:
      case uapi.KVM_CAP_READONLY_MEM:
      case uapi.KVM_CAP_MEMORY_FAULT_INFO:
        return 1;
      case uapi.KVM_CAP_PRE_FAULT_MEMORY:
        return 1;
      case uapi.KVM_CAP_MULTI_ADDRESS_SPACE:
        return this.memslots.nrAddressSpaces;
      case uapi.KVM_CAP_NR_MEMSLOTS:
        return uapi.KVM_USER_MEM_SLOTS;
      case uapi.KVM_CAP_EXIT_HYPERCALL:
        // KVM_EXIT_HYPERCALL_VALID_MASK: only KVM_HC_MAP_GPA_RANGE may exit.
        return 1 << uapi.KVM_HC_MAP_GPA_RANGE;
      default:
        return 0;
    }
  }

  /**
   * KVM_ENABLE_CAP on the VM. Modelled: KVM_CAP_EXIT_HYPERCALL (args[0] ⊆ the valid mask, else
   * EINVAL), KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (memslot's rules). Others: EINVAL, as for a
   * capability KVM does not know.
   */
  enableCap(cap: KvmEnableCap): void {
    this.checkAlive('KVM_ENABLE_CAP');
    const c = Number(cap.cap);
    if (c === uapi.KVM_CAP_EXIT_HYPERCALL) {
      // args[0] is a u64: compare as one (`&` on a number would keep only its low 32 bits).
      const raw = cap.args?.[0] ?? 0;
      const mask = typeof raw === 'bigint' ? raw : Number.isSafeInteger(raw) ? BigInt(raw) : -1n;
      if (mask < 0n || (mask & ~BigInt(1 << uapi.KVM_HC_MAP_GPA_RANGE)) !== 0n || Number(cap.flags ?? 0) !== 0) {
        throw new KvmError('EINVAL', 'KVM_ENABLE_CAP', `KVM_CAP_EXIT_HYPERCALL args[0] ${String(raw)} has hypercalls that cannot exit`);
      }
      this.enabledCaps.set(c, Number(mask));
      return;
    }
    if (c === uapi.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) {
      this.memslots.enableCap(cap);
      this.enabledCaps.set(c, Number(cap.args?.[0] ?? 0));
      return;
    }
    throw new KvmError('EINVAL', 'KVM_ENABLE_CAP', `capability ${c} cannot be enabled on this VM`);
  }

  /** KVM_SET_USER_MEMORY_REGION2. */
  setUserMemoryRegion2(region: KvmUserspaceMemoryRegion2): void {
    this.checkAlive('KVM_SET_USER_MEMORY_REGION2');
    this.memslots.setUserMemoryRegion2(region);
  }

  /** KVM_CREATE_GUEST_MEMFD: a file object with fallocate, mmap, in-place conversion and close. */
  createGuestMemfd(req: KvmCreateGuestMemfd): VmGuestMemfd {
    this.checkAlive('KVM_CREATE_GUEST_MEMFD');
    return new VmGuestMemfd(this, this.gmem.createGuestMemfd(req));
  }

  /** The guest_memfd behind `fd`, if open. */
  guestMemfd(fd: number): VmGuestMemfd | undefined {
    const f = this.gmem.file(fd);
    return f === undefined ? undefined : new VmGuestMemfd(this, f);
  }

  /** KVM_SET_MEMORY_ATTRIBUTES, through the conversion engine (arch hooks around it; no discard). */
  setMemoryAttributes(req: KvmMemoryAttributes): void {
    this.checkAlive('KVM_SET_MEMORY_ATTRIBUTES');
    const a = req.attributes;
    const toPrivate = (Number(a) & uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) !== 0;
    const simple = typeof req.address === 'number' && typeof req.size === 'number' && (Number(a) === 0 || Number(a) === uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) && Number(req.flags ?? 0) === 0;
    // Anything unusual goes to memslot's validation unchanged, so its errno is the kernel's.
    if (!simple || !this.capabilities.privateMem) {
      this.memslots.setMemoryAttributes(req);
      return;
    }
    this.conversions.convert({ gpa: req.address as number, size: req.size as number, toPrivate, path: 'attributes' });
  }

  /**
   * Converts `[gpa, gpa + size)` the way a VMM does on a MEMORY_FAULT exit or a
   * KVM_HC_MAP_GPA_RANGE hypercall: by attributes or in place, then the discard policy.
   */
  convert(req: ConversionRequest): ConversionOutcome {
    this.checkAlive('convert');
    return this.conversions.convert(req);
  }

  /**
   * Drops what backs `[gpa, gpa + size)`, keeping its shareability, the way a VMM frees memory the
   * guest gave back (pKVM MEM_RELINQUISH, a balloon): guest_memfd hole punch plus madvise(DONTNEED)
   * of the shared copy. Returns the pages freed.
   */
  discardRange(gpa: number, size: number): number {
    this.checkAlive('discard');
    return this.conversions.discardRange(gpa, size);
  }

  /**
   * The arch's reading of `exit` as a request to change guest memory ({@link ArchVm.memoryRequest}:
   * pKVM's forwarded MEM_SHARE / MEM_UNSHARE / MEM_RELINQUISH), or `undefined`: not one, or an arch
   * without such exits. What lets an arch-neutral VMM handle them.
   */
  archMemoryRequest(exit: VcpuExit): ArchMemoryRequest | undefined {
    return this.arch?.memoryRequest?.(exit as ArchExit);
  }

  /**
   * Whether KVM_PRE_FAULT_MEMORY may map now (`kvm->arch.pre_fault_allowed`): the arch's
   * `capabilities.preFaultAllowed` (default true: the built-in types, and plugins that say
   * nothing), or true once the arch called `ctx.allowPreFault` (SNP: at SNP_LAUNCH_FINISH).
   */
  get preFaultAllowed(): boolean {
    return this.preFaultAllowedByArch || this.capabilities.preFaultAllowed !== false;
  }

  /**
   * KVM_PRE_FAULT_MEMORY (a vCPU ioctl in the kernel; any vCPU will do). Returns 0; `range` is
   * updated in place. After the argument checks (EINVAL), EOPNOTSUPP with nothing changed while
   * {@link Vm.preFaultAllowed} is false (kvm_arch_vcpu_pre_fault_memory); then as the MMU's.
   */
  preFaultMemory(range: KvmPreFaultMemory): number {
    this.checkAlive('KVM_PRE_FAULT_MEMORY');
    return this.mmu.preFaultMemory(range);
  }

  /**
   * The arch's `ctx.mapPrivatePfn`: kvm_tdp_mmu_map_private_pfn (v6.19+; kvm_tdp_map_page with
   * PFERR_PRIVATE_ACCESS before it, arch/x86/kvm/mmu/mmu.c) for tdx_gmem_post_populate. One
   * kvm_tdp_map_page step of the pre-fault machinery (`mmu.tdpMapPage`), which has none of
   * KVM_PRE_FAULT_MEMORY's pre_fault_allowed gate; the fault takes its pfn from guest_memfd, which must be `pfn`.
   */
  private mapPrivatePfn(gfn: Gfn, pfn: Pfn): void {
    const op = 'kvm_tdp_map_page';
    if (this.dead !== undefined) throw new KvmError('EIO', op, `the VM is dead: ${this.dead}`);
    const slot = this.memslots.lookup(gfn);
    if (!this.mmu.isPrivateGfn(gfn, slot)) throw new KvmError('EINVAL', op, `gfn 0x${gfn.toString(16)} is not private`);
    this.mmu.tdpMapPage(gfn * 4096, op);
    // Without a mirror root (SNP-like archs) private leaves live in the one root there is.
    const leaf = this.mmu.lookup(gfn, this.mmu.mirror === undefined ? 'shared' : 'private');
    // tdx_gmem_post_populate maps the pfn kvm_gmem_populate holds; any other would be a KVM bug.
    if (leaf === undefined || leaf.pfn !== pfn) {
      throw new KvmError('EIO', op, `gfn 0x${gfn.toString(16)} mapped to ${leaf === undefined ? 'nothing' : `pfn 0x${leaf.pfn.toString(16)}`}, not pfn 0x${pfn.toString(16)}`);
    }
  }

  /** KVM_GET_DIRTY_LOG. */
  getDirtyLog(log: KvmDirtyLog): Uint8Array {
    this.checkAlive('KVM_GET_DIRTY_LOG');
    return this.memslots.getDirtyLog(log);
  }

  /** KVM_CLEAR_DIRTY_LOG. */
  clearDirtyLog(log: KvmClearDirtyLog): void {
    this.checkAlive('KVM_CLEAR_DIRTY_LOG');
    this.memslots.clearDirtyLog(log);
  }

  /**
   * KVM_CREATE_VCPU. EINVAL for an id outside [0, KVM_MAX_VCPU_IDS), EEXIST for one in use. The
   * program can be given here or later with `vcpu.setProgram`-equivalent {@link Vm.loadProgram}.
   */
  createVcpu(id: number, program?: GuestProgram<T>): Vcpu {
    this.checkAlive('KVM_CREATE_VCPU');
    if (!Number.isInteger(id) || id < 0 || id >= KVM_MAX_VCPU_IDS) throw new KvmError('EINVAL', 'KVM_CREATE_VCPU', `vCPU id ${id} is outside [0, ${KVM_MAX_VCPU_IDS})`);
    if (this.vcpus.has(id)) throw new KvmError('EEXIST', 'KVM_CREATE_VCPU', `vCPU ${id} exists`);
    const v = new Vcpu(id, this.vcpuHost());
    this.vcpus.set(id, v);
    if (program !== undefined) this.loadProgram(v, program);
    return v;
  }

  /** Loads `program` into `vcpu` with this VM's guest context. */
  loadProgram(vcpu: Vcpu, program: GuestProgram<T>): void {
    const ctx = createGuestContext<T>({
      vcpu: vcpu.id,
      vmType: this.type,
      privateMem: this.capabilities.privateMem,
      privateByDefault: this.capabilities.privateByDefault,
      rng: this.sim.rng.fork(`vm${this.id}/vcpu${vcpu.id}`),
      guestApi: this.arch?.guestApi,
      kernel: this.kernelDriver,
    });
    vcpu.setProgram(program, ctx);
  }

  /** The vCPU with `id`. */
  vcpu(id: number): Vcpu | undefined {
    return this.vcpus.get(id);
  }

  /** Every vCPU, by id. */
  vcpuList(): Vcpu[] {
    return [...this.vcpus.values()].sort((a, b) => a.id - b.id);
  }

  /** The VMM-side API of the arch (TDX initMemRegion/finalize, SNP launch commands...), typed by the VM type. */
  get archApi(): ArchVmApiOf<T> {
    return this.arch?.vmApi as ArchVmApiOf<T>;
  }

  /** The guest-side API object (for tests; guest programs use `g.arch`). */
  get archGuestApi(): ArchGuestApiOf<T> {
    return this.arch?.guestApi as ArchGuestApiOf<T>;
  }

  /** The API an extension added, by name. */
  extension<N extends keyof VmExtensionApis & string>(name: N): VmExtensionApis[N];
  extension(name: string): unknown;
  extension(name: string): unknown {
    const inst = this.extensionInstances.get(name);
    if (inst === undefined) throw new KvmError('ENOENT', 'extension', `this VM has no extension ${JSON.stringify(name)}`);
    return inst.api;
  }

  /** Ends the launch (TDX TDH.MR.FINALIZE, SNP LAUNCH_FINISH) and returns the measurement. */
  finalize(): ReturnType<NonNullable<ArchVm['finalize']>> {
    this.checkAlive('finalize');
    if (this.arch?.finalize === undefined) throw new KvmError('ENOTTY', 'finalize', `VM type ${this.type} has no launch to finalize`);
    return this.arch.finalize();
  }

  /** Why the VM is dead (KVM_BUG_ON in the arch or the MMU), or undefined. */
  get deadReason(): string | undefined {
    return this.dead ?? this.mmu.bugged;
  }

  /** A snapshot of the VM's statistics. */
  stats(): VmStats {
    const files = this.gmem.liveFiles();
    const host = this.host.stats();
    let gmemPages = 0;
    for (const f of files) gmemPages += f.allocatedPages;
    return {
      type: this.type,
      nowNs: this.sim.now,
      vcpus: this.vcpus.size,
      exits: Object.fromEntries(this.exitCounts),
      vcpu: { ...this.vcpuStats },
      conversions: { ...this.conversions.stats, pendingDiscardPages: this.conversions.pendingDiscardPages },
      mmu: {
        faults: { ...this.mmu.stats.faults },
        retries: { ...this.mmu.stats.retries },
        zaps: this.mmu.stats.zaps,
        tlbFlushes: this.mmu.stats.tlbFlushes,
        pageTablePages: this.mmu.pageTablePages,
        mappedLeaves: this.mmu.mappedLeaves,
      },
      memory: {
        guestMemfdPages: gmemPages,
        sharedAnonPages: this.process.residentPages(),
        hostUsedFrames: host.usedFrames,
        usedByPurpose: { ...host.usedByPurpose },
        peakHostUsedFrames: host.peakUsedFrames,
      },
    };
  }

  /** Runs every package's invariant checker over this VM; throws ModelInvariantError. */
  checkInvariants(): void {
    this.memslots.checkInvariants();
    this.gmem.checkInvariants();
    this.mmu.checkInvariants();
    this.process.checkInvariants();
    this.arch?.checkInvariants?.();
    for (const inst of this.extensionInstances.values()) inst.checkInvariants?.();
  }

  /**
   * Destroys the VM (the last fd closed: kvm_destroy_vm): vCPUs, memslots (unbinding guest_memfd),
   * the MMU's tables, the arch state, the VMM process's mappings.
   */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    // kvm_arch_vcpu_destroy deactivates each vCPU's caches (kvm-clock's pv_time) before the memory goes.
    this.kernelAccess.destroy();
    this.vcpus.clear();
    for (let as = 0; as < this.memslots.nrAddressSpaces; as++) {
      for (const s of [...this.memslots.slots(as)]) {
        this.memslots.setUserMemoryRegion2({ slot: (as << 16) | s.id, flags: 0, guest_phys_addr: s.baseGfn * PAGE_SIZE, memory_size: 0, userspace_addr: 0 });
      }
    }
    for (const f of this.gmem.liveFiles()) if (f.alive) f.close();
    this.offSlots();
    this.mmu.destroy();
    this.process.exit();
    this.removeHostCheck?.();
    this.arch?.destroy?.();
    this.init.onDestroy(this);
  }

  // ------------------------------------------------------------------------------------------
  // Internals

  /**
   * @internal The in-place conversion of a file range, with the arch hooks over its bound gfns.
   * Kernel order (PROPOSED-CONV-v8 kvm_gmem_set_attributes): every refusal — the request's EINVAL,
   * EAGAIN for a folio the host still references — comes before anything guest-visible, so `check`
   * (gmem's validate-only twin of `apply`) runs before the arch's `beforeConvert`; a request that
   * changes nothing (the range already has the value: "return 0, no invalidation") runs no hook.
   */
  convertFile(
    file: GuestMemfd,
    offset: number | bigint,
    size: number | bigint,
    req: { error_offset?: number | bigint },
    check: () => boolean,
    apply: () => unknown,
    attributes: number | bigint,
  ): void {
    this.checkAlive('KVM_SET_MEMORY_ATTRIBUTES2');
    let changes: boolean;
    try {
      changes = check();
    } catch (e) {
      // The ioctl copies error_offset back on a refusal (kvm_gmem_set_attributes' copy_to_user).
      const off = isKvmError(e) ? e.data?.['error_offset'] : undefined;
      if (off !== undefined) req.error_offset = off as number;
      throw e;
    }
    if (!changes) {
      apply();
      return;
    }
    const toPrivate = (Number(attributes) & uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) !== 0;
    const ranges: Array<{ start: never; end: never }> = [];
    const first = Number(offset) / PAGE_SIZE;
    const last = first + Number(size) / PAGE_SIZE;
    if (Number.isSafeInteger(first) && Number.isSafeInteger(last)) {
      for (const b of file.bindingList()) {
        const slot = b.slot as Memslot;
        const pgoff = slot.gmem?.pgoff ?? 0;
        const lo = Math.max(first, b.start);
        const hi = Math.min(last, b.end);
        if (lo < hi) ranges.push({ start: (slot.baseGfn + (lo - pgoff)) as never, end: (slot.baseGfn + (hi - pgoff)) as never });
      }
    }
    for (const r of ranges) this.arch?.beforeConvert?.(r, toPrivate);
    apply();
    for (const r of ranges) this.arch?.afterConvert?.(r, toPrivate);
  }

  /** @internal */
  fileOf(slot: Memslot): { file: GuestMemfd; pgoff: number } | undefined {
    const b = this.gmem.bindingOf(slot);
    return b === undefined ? undefined : { file: b.file, pgoff: b.pgoff };
  }

  private checkAlive(op: string): void {
    if (this.destroyed) throw new KvmError('EBADF', op, `VM ${this.id} was destroyed`);
    const dead = this.deadReason;
    if (dead !== undefined) throw new KvmError('EIO', op, `the VM is dead: ${dead}`);
  }

  private beforeMap(f: FaultView): BeforeMapResult {
    let cap: 0 | 1 | 2 | undefined;
    for (const inst of this.extensionInstances.values()) {
      const r = inst.beforeMap?.(f);
      if (r === undefined || r === 'continue') continue;
      if ('exit' in r) return r;
      cap = cap === undefined ? r.maxLevel : (Math.min(cap, r.maxLevel) as 0 | 1 | 2);
    }
    return cap === undefined ? 'continue' : { maxLevel: cap };
  }

  private vcpuHost(): VcpuHost {
    const hypercallExit = (nr: number): boolean => ((this.enabledCaps.get(uapi.KVM_CAP_EXIT_HYPERCALL) ?? 0) & (1 << nr)) !== 0;
    return {
      sim: this.sim,
      host: this.host,
      mmu: this.mmu,
      arch: this.arch,
      sharedGpaBit: this.capabilities.sharedGpaBit,
      destroyed: () => this.destroyed,
      deadReason: () => this.deadReason,
      hypercallExitEnabled: hypercallExit,
      inGuestOp: <R>(vcpu: number, f: () => R): R => {
        const prev = this.guestVcpu;
        this.guestVcpu = vcpu;
        try {
          return f();
        } finally {
          this.guestVcpu = prev;
        }
      },
      countExit: (exit: VcpuExit) => {
        this.exitCounts.set(exit.reason, (this.exitCounts.get(exit.reason) ?? 0) + 1);
        if (this.sim.trace.enabled) this.sim.trace.emit('vm.exit', { vm: this.id, reason: exit.reason });
      },
      stats: this.vcpuStats,
      kernelAccess: this.kernelAccess,
    };
  }
}

/** The guest_memfd hooks of an arch, bound (the plugin's methods may use `this`). */
function bindGmemHooks(arch: ArchVm): Pick<ArchVm, 'gmemPrepare' | 'gmemInvalidate' | 'populate'> {
  return {
    ...(arch.gmemPrepare === undefined ? {} : { gmemPrepare: arch.gmemPrepare.bind(arch) }),
    ...(arch.gmemInvalidate === undefined ? {} : { gmemInvalidate: arch.gmemInvalidate.bind(arch) }),
    ...(arch.populate === undefined ? {} : { populate: arch.populate.bind(arch) }),
  };
}

export type { DiscardPolicy };
