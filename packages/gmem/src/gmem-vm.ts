/**
 * One VM's guest_memfd side: KVM_CREATE_GUEST_MEMFD with the flag rules of its VM type, the fd
 * table the files live in, the memslot binder (kvm_gmem_bind/unbind), kvm_gmem_get_pfn by slot,
 * kvm_gmem_populate, the invalidation listeners the MMU registers, and the invariants across files.
 */
import { KvmError, ModelInvariantError, PAGE_SIZE, pgoff as toPgoff, toByteCount, uapi } from '@cocokit/sdk';
import type { Gfn, KvmCreateGuestMemfd, PgOff, Sim } from '@cocokit/sdk';
import type { Host } from '@cocokit/host';
import { registerGmemCosts } from './costs.js';
import type { GmemArchHooks, GmemContext, GmemMemoryAttributes, GmemProposals } from './context.js';
import { FdTable } from './fd-table.js';
import { GuestMemfd, SHAREABILITY } from './guest-memfd.js';
import type { GmemPfn, GmemPopulateArgs, HugeFolioPolicy } from './guest-memfd.js';
import type { GmemInvalidationListener, GmemSlotView } from './invalidation.js';

const { GUEST_MEMFD_FLAG_HUGETLB, GUEST_MEMFD_HUGE_MASK, GUEST_MEMFD_HUGE_SHIFT } = uapi;

/** Options of {@link createGmemVm}. */
export interface GmemVmOptions {
  readonly host: Host;
  /** Costs are charged and trace events emitted when given. */
  readonly sim?: Sim;
  /** The arch's guest_memfd hooks (prepare, invalidate, populate); absent hooks do nothing. */
  readonly arch?: GmemArchHooks;
  /**
   * `kvm_arch_has_private_mem`: false for KVM_X86_DEFAULT_VM (default), true for SW_PROTECTED,
   * SNP, TDX.
   */
  readonly privateMem?: boolean;
  /**
   * `kvm_arch_supports_gmem_init_shared`. Default as x86 6.18: only VMs without private memory;
   * with `memoryAttributes2`, every VM.
   */
  readonly initShared?: boolean;
  /**
   * Track preparation per page (6.18: prepare once, populate refuses a prepared page with EEXIST).
   * False models post-6.18 "Remove preparation tracking": prepare on every get_pfn. Default true.
   */
  readonly preparedTracking?: boolean;
  /** Proposals to enable (all off by default: upstream 6.18). */
  readonly proposals?: Partial<GmemProposals>;
  /**
   * Huge-folio policy of seed 003: `'split-eager'` (RFC v2: split a folio to 4 KiB folios as soon
   * as its range is mixed, merge when the whole block is uniform again; default) or
   * `'split-on-fault'` (Michael Roth: keep the folio, record the mixed state per 2M/1G block, split
   * only when a host fault needs a page of it, and then only down to its uniform 2M blocks).
   */
  readonly hugePolicy?: HugeFolioPolicy;
  /** The process's fd table (shared by the VMs of one VMM). Default: a table of its own. */
  readonly fdTable?: FdTable;
  /** How memslot requests name this VM (`GuestMemfdBindRequest.vm`); default the GmemVm itself. */
  readonly vmToken?: unknown;
  /**
   * The VM's memory attributes (KVM_SET_MEMORY_ATTRIBUTES), which `populate` checks
   * (kvm_gmem_populate: `kvm_range_has_memory_attributes(..., KVM_MEMORY_ATTRIBUTE_PRIVATE,
   * KVM_MEMORY_ATTRIBUTE_PRIVATE)`, else EINVAL). Consulted only while private/shared lives in the
   * VM's attributes: with an in-place conversion proposal (`memoryAttributes2`, `gmemConvert`) the
   * file's shareability is the truth. Absent: only the file's shareability is checked.
   */
  readonly memoryAttributes?: GmemMemoryAttributes;
}

/** `GuestMemfdBindRequest` of @cocokit/memslot, structurally. */
export interface GmemBindRequest {
  readonly fd: number;
  readonly vm: unknown;
  readonly offset: number;
  readonly npages: number;
}

/** `GuestMemfdBinding` of @cocokit/memslot, structurally. */
export interface GmemBinding {
  readonly file: object;
  readonly pgoff: PgOff;
  readonly npages: number;
}

/**
 * The memslot side's binder (`GuestMemfdBinder` of @cocokit/memslot, implemented structurally so
 * gmem does not depend on memslot).
 */
export interface GmemBinder {
  checkBind(request: GmemBindRequest): { readonly file: object; readonly gmemOnly: boolean };
  bind(request: GmemBindRequest, slot: GmemSlotView): GmemBinding;
  unbind(binding: GmemBinding, slot: GmemSlotView): void;
}

interface SlotBinding {
  readonly file: GuestMemfd;
  readonly pgoff: number;
  /** The slot object the range was bound with: the file's own bindings name it. */
  readonly slot: GmemSlotView;
}

/** Creates the guest_memfd side of one VM. */
export function createGmemVm(options: GmemVmOptions): GmemVm {
  return new GmemVm(options);
}

/** One VM's guest_memfd files and bindings. Create it with {@link createGmemVm}. */
export class GmemVm {
  readonly host: Host;
  readonly sim: Sim | undefined;
  readonly fdTable: FdTable;
  /** The binder to give `new Memslots({ binder, vmToken })`. */
  readonly binder: GmemBinder;
  /** What memslot passes as `GuestMemfdBindRequest.vm` for this VM. */
  readonly vmToken: unknown;
  private readonly ctx: GmemContext;
  private readonly listeners: GmemInvalidationListener[] = [];
  private readonly files = new Set<GuestMemfd>();
  /** By the binding object bind() returned (what memslot keeps across flags-only changes)... */
  private readonly byBinding = new WeakMap<object, SlotBinding>();
  /** ...and by the slot object it was bound with, for callers whose slot views carry no binding. */
  private readonly slotBindings = new WeakMap<GmemSlotView, SlotBinding>();
  private readonly initShared: boolean;

  /** Use {@link createGmemVm}. */
  constructor(options: GmemVmOptions) {
    this.host = options.host;
    this.sim = options.sim;
    if (options.sim !== undefined) registerGmemCosts(options.sim);
    this.fdTable = options.fdTable ?? new FdTable();
    this.vmToken = options.vmToken ?? this;
    const proposals: GmemProposals = {
      memoryAttributes2: options.proposals?.memoryAttributes2 ?? false,
      gmemConvert: options.proposals?.gmemConvert ?? false,
      initPrivate: options.proposals?.initPrivate ?? false,
      noDirectMap: options.proposals?.noDirectMap ?? false,
      hugetlb: options.proposals?.hugetlb ?? false,
    };
    const privateMem = options.privateMem ?? false;
    this.initShared = options.initShared ?? (!privateMem || proposals.memoryAttributes2);
    this.ctx = {
      host: options.host,
      sim: options.sim,
      arch: options.arch,
      privateMem,
      preparedTracking: options.preparedTracking ?? true,
      hugePolicy: options.hugePolicy ?? 'split-eager',
      proposals,
      vmAttributes: proposals.memoryAttributes2 || proposals.gmemConvert ? undefined : options.memoryAttributes,
      listeners: this.listeners,
      closeFd: (fd) => this.close(fd),
      released: (file) => void this.files.delete(file as GuestMemfd),
    };
    this.binder = {
      checkBind: (req) => this.checkBind(req),
      bind: (req, slot) => this.bind(req, slot),
      unbind: (binding, slot) => this.unbind(binding, slot),
    };
  }

  /** The proposals this VM enables. */
  get proposals(): GmemProposals {
    return this.ctx.proposals;
  }

  /** `kvm_gmem_get_supported_flags`: what `KVM_CAP_GUEST_MEMFD_FLAGS` answers on this VM. */
  supportedFlags(): number {
    let f = uapi.GUEST_MEMFD_FLAG_MMAP;
    if (this.initShared) f |= uapi.GUEST_MEMFD_FLAG_INIT_SHARED;
    if (this.ctx.proposals.initPrivate) f |= uapi.GUEST_MEMFD_FLAG_INIT_PRIVATE;
    if (this.ctx.proposals.noDirectMap) f |= uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP;
    if (this.ctx.proposals.hugetlb) f |= GUEST_MEMFD_FLAG_HUGETLB;
    return f;
  }

  /** KVM_CHECK_EXTENSION for the guest_memfd capabilities (0 for any other). */
  checkExtension(cap: number): number {
    switch (cap) {
      case uapi.KVM_CAP_GUEST_MEMFD:
        return 1;
      case uapi.KVM_CAP_GUEST_MEMFD_FLAGS:
        return this.supportedFlags();
      case uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES:
        return this.ctx.proposals.memoryAttributes2 && this.ctx.privateMem ? uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
      default:
        return 0;
    }
  }

  /**
   * KVM_CREATE_GUEST_MEMFD (kvm_gmem_create). EINVAL for flags outside `supportedFlags()`, for
   * INIT_SHARED with INIT_PRIVATE, for a HugeTLB size that is missing, unknown or given without
   * the flag, and for a size that is not positive (as a signed 64-bit value) or not aligned to the
   * page (or huge page). Nothing is allocated: a 1 TiB file costs a few runs.
   */
  createGuestMemfd(req: KvmCreateGuestMemfd): GuestMemfd {
    const op = 'KVM_CREATE_GUEST_MEMFD';
    const rawFlags = BigInt(req.flags ?? 0);
    if (rawFlags < 0n || rawFlags >= 2n ** 32n) throw new KvmError('EINVAL', op, `flags 0x${rawFlags.toString(16)} has unsupported bits`);
    const flags = Number(rawFlags);
    const hugeField = Math.floor(flags / 2 ** GUEST_MEMFD_HUGE_SHIFT) & GUEST_MEMFD_HUGE_MASK;
    const plain = flags % 2 ** GUEST_MEMFD_HUGE_SHIFT;
    const supported = this.supportedFlags();
    if ((plain & ~supported) !== 0) throw new KvmError('EINVAL', op, `flags 0x${plain.toString(16)} outside the supported 0x${supported.toString(16)}`);
    let hugeOrder = 0;
    if ((plain & GUEST_MEMFD_FLAG_HUGETLB) !== 0) {
      if (hugeField === 21) hugeOrder = 9;
      else if (hugeField === 30) hugeOrder = 18;
      else throw new KvmError('EINVAL', op, `HugeTLB page size field ${hugeField} is neither 2 MiB (21) nor 1 GiB (30)`);
    } else if (hugeField !== 0) {
      throw new KvmError('EINVAL', op, 'a huge page size is given without GUEST_MEMFD_FLAG_HUGETLB');
    }
    const both = uapi.GUEST_MEMFD_FLAG_INIT_SHARED | uapi.GUEST_MEMFD_FLAG_INIT_PRIVATE;
    if ((plain & both) === both) throw new KvmError('EINVAL', op, 'INIT_SHARED and INIT_PRIVATE contradict each other');
    const rawSize = BigInt(req.size);
    if (rawSize <= 0n || rawSize >= 2n ** 63n) throw new KvmError('EINVAL', op, `size ${rawSize} is not positive as a signed 64-bit value`);
    const size = toByteCount(rawSize, op, 'size');
    const unit = PAGE_SIZE * 2 ** hugeOrder;
    if (size % unit !== 0) throw new KvmError('EINVAL', op, `size ${size} is not a multiple of ${unit}`);
    const initial = (plain & uapi.GUEST_MEMFD_FLAG_INIT_SHARED) !== 0 ? SHAREABILITY.ALL : SHAREABILITY.GUEST;
    const noDirectMap = (plain & uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP) !== 0;
    const table = this.fdTable;
    const holder: { file?: GuestMemfd } = {};
    const fd = table.install({ kind: 'guest_memfd', get file(): object { return holder.file as GuestMemfd; } });
    const file = new GuestMemfd(this.ctx, fd, size / PAGE_SIZE, flags, hugeOrder, initial, noDirectMap);
    holder.file = file;
    this.files.add(file);
    this.sim?.charge('gmem.create');
    if (this.sim?.trace.enabled) this.sim.trace.emit('gmem.create', { file: file.name, pages: file.nrPages, flags, hugeOrder });
    return file;
  }

  /** The guest_memfd behind `fd`, or `undefined` (not open, or not a guest_memfd). */
  file(fd: number): GuestMemfd | undefined {
    const t = this.fdTable.get(fd);
    return t?.kind === 'guest_memfd' && t.file instanceof GuestMemfd ? t.file : undefined;
  }

  /** Every live file of this VM. */
  liveFiles(): GuestMemfd[] {
    return [...this.files];
  }

  /** dup(2) of a guest_memfd fd. */
  dup(fd: number): number {
    return this.fdTable.dup(fd);
  }

  /**
   * close(2). When the last fd of a file goes and no host VMA maps it, the file is released
   * (kvm_gmem_release): bindings are invalidated and cleared, pages freed. While a VMA still maps
   * it, the mapping keeps the file alive, as in Linux (the VMA holds a file reference): it is
   * released when the last VMA goes (munmap, process exit, MAP_FIXED over it).
   */
  close(fd: number): void {
    const t = this.fdTable.remove(fd);
    if (t.kind !== 'guest_memfd') return;
    const file = t.file as GuestMemfd;
    if (this.fdTable.countOf(file) > 0) return;
    file.markFdClosed();
  }

  /** Registers the MMU's invalidation listener; returns the function that removes it. */
  subscribe(listener: GmemInvalidationListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /**
   * kvm_gmem_get_pfn for `gfn` of a bound `slot`: EFAULT when the slot has no file (never bound, or
   * the file was released), then the file's own refusals (EIO, EHWPOISON, ENOMEM).
   */
  getPfn(slot: GmemSlotView, gfn: Gfn | number): GmemPfn {
    const b = this.lookup(slot);
    if (b === undefined || !b.file.alive) throw new KvmError('EFAULT', 'kvm_gmem_get_pfn', 'the slot has no guest_memfd (unbound or file released)');
    return b.file.getPfn(b.slot, gfn, b.pgoff);
  }

  /** The file and first page a slot is bound to, while the file lives. */
  bindingOf(slot: GmemSlotView): { file: GuestMemfd; pgoff: PgOff } | undefined {
    const b = this.lookup(slot);
    return b === undefined || !b.file.alive ? undefined : { file: b.file, pgoff: toPgoff(b.pgoff) };
  }

  /**
   * kvm_gmem_populate: EINVAL when the slot is not a guest_memfd slot, EFAULT when its file was
   * released; then per page as `GuestMemfd.populate` (which also refuses, with EINVAL, a gfn whose
   * memory attributes are not PRIVATE: see {@link GmemVmOptions.memoryAttributes}).
   */
  populate(args: GmemPopulateArgs): number {
    const b = this.lookup(args.slot);
    if (b === undefined) throw new KvmError('EINVAL', 'kvm_gmem_populate', 'the slot has no guest_memfd');
    if (!b.file.alive) throw new KvmError('EFAULT', 'kvm_gmem_populate', 'the slot\'s guest_memfd was released');
    return b.file.populate({ ...args, slot: b.slot }, b.pgoff);
  }

  private lookup(slot: GmemSlotView): SlotBinding | undefined {
    return (slot.gmem !== undefined ? this.byBinding.get(slot.gmem.binding) : undefined) ?? this.slotBindings.get(slot);
  }

  /** Checks every live file and the accounting across them and the host. */
  checkInvariants(): void {
    let pages = 0;
    for (const f of this.files) {
      // A file with no fd left lives only while a host VMA maps it (released at the last munmap).
      if (f.fdsClosed && this.host.mappingsOf(f) === 0) throw new ModelInvariantError('gmem.release', `${f.name} has no fd and no mapping but was not released`);
      if (!f.alive) throw new ModelInvariantError('gmem.release', `${f.name} was released but is still listed`);
      f.checkInvariants();
      pages += f.allocatedPages;
    }
    const used = this.host.buddy.usedBy('guest_memfd');
    if (used < pages) throw new ModelInvariantError('gmem.accounting', `host has ${used} guest_memfd pages in use, files hold ${pages}`);
  }

  // -------------------------------------------------------------------------------------------
  // binder

  private checkBind(req: GmemBindRequest): { file: object; gmemOnly: boolean } {
    const op = 'kvm_gmem_bind';
    const t = this.fdTable.get(req.fd);
    if (t === undefined) throw new KvmError('EBADF', op, `fd ${req.fd} is not open`);
    if (t.kind !== 'guest_memfd' || !(t.file instanceof GuestMemfd)) throw new KvmError('EINVAL', op, `fd ${req.fd} is not a guest_memfd`);
    const file = t.file;
    if (req.vm !== this.vmToken) throw new KvmError('EINVAL', op, 'the guest_memfd belongs to another VM');
    if (!Number.isSafeInteger(req.offset) || !Number.isSafeInteger(req.npages) || req.offset + req.npages > file.nrPages) {
      throw new KvmError('EINVAL', op, `pages [${req.offset}, +${req.npages}) are not inside the file's ${file.nrPages}`);
    }
    if (file.isBound(req.offset, req.offset + req.npages)) throw new KvmError('EINVAL', op, 'part of the range is already bound to a memslot');
    return { file, gmemOnly: file.mmapSupported };
  }

  private bind(req: GmemBindRequest, slot: GmemSlotView): GmemBinding {
    const file = this.file(req.fd) as GuestMemfd;
    file.bindRange(slot, req.offset, req.npages);
    const bound: SlotBinding = { file, pgoff: req.offset, slot };
    const binding: GmemBinding = { file, pgoff: toPgoff(req.offset), npages: req.npages };
    this.slotBindings.set(slot, bound);
    this.byBinding.set(binding, bound);
    return binding;
  }

  private unbind(binding: GmemBinding, slot: GmemSlotView): void {
    const file = binding.file as GuestMemfd;
    // After a flags-only change memslot hands back a newer slot object; the range is the bound one's.
    const bound = this.byBinding.get(binding)?.slot ?? slot;
    file.unbindRange(bound, binding.pgoff, binding.npages);
    this.slotBindings.delete(bound);
    this.byBinding.delete(binding);
  }
}
