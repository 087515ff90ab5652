/**
 * A VM's memslots, with `KVM_SET_USER_MEMORY_REGION(2)` semantics refusal by refusal
 * (virt/kvm/kvm_main.c: `kvm_vm_ioctl` dispatch, `kvm_vm_ioctl_set_memory_region`,
 * `check_memory_region_flags`, `kvm_set_memory_region`, `kvm_set_memslot`), the VM's memory
 * attributes (`kvm_vm_ioctl_set_mem_attributes`), dirty logging (`kvm_get_dirty_log_protect`,
 * `kvm_clear_dirty_log_protect`), x86 mixed-attribute huge-page tracking, and the notifications the
 * MMU and the conversion engine subscribe to.
 *
 * Every ioctl checks everything first and mutates only after the last check, so a refusal changes
 * no state. The rule numbers in comments are those of ../shared/spec/kvm-semantics.md §1.1 / §3.2.
 */
import {
  KvmError,
  ModelInvariantError,
  PAGE_SIZE,
  RangeMap,
  gfn as toGfn,
  invariant,
  pgoff,
  toByteCount,
  uapi,
} from '@cocokit/sdk';
import type {
  FrameRange,
  Gfn,
  KvmClearDirtyLog,
  KvmDirtyLog,
  KvmEnableCap,
  KvmMemoryAttributes,
  KvmUserspaceMemoryRegion2,
  Sim,
} from '@cocokit/sdk';
import type { GuestMemfdBindCheck, GuestMemfdBinder, GuestMemfdBindRequest } from './binder.js';
import { MEMSLOT_COSTS, MEMSLOT_COST_OWNER } from './costs.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import { LpageMixed } from './lpage.js';
import type { AttributeSource, HugeLevel } from './lpage.js';
import { Slot } from './memslot.js';
import type { Memslot, MemslotGmem } from './memslot.js';

const OP_REGION2 = 'KVM_SET_USER_MEMORY_REGION2';
const OP_REGION = 'KVM_SET_USER_MEMORY_REGION';
const OP_ATTRS = 'KVM_SET_MEMORY_ATTRIBUTES';
const OP_GET_LOG = 'KVM_GET_DIRTY_LOG';
const OP_CLEAR_LOG = 'KVM_CLEAR_DIRTY_LOG';
const OP_ENABLE_CAP = 'KVM_ENABLE_CAP';

const {
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_MEM_GUEST_MEMFD,
  KVM_USER_MEM_SLOTS,
  KVM_MEM_MAX_NR_PAGES,
  KVM_SET_USER_MEMORY_REGION_V1_FLAGS,
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_DIRTY_LOG_INITIALLY_SET,
} = uapi;

/** x86-64 with 4-level paging: `TASK_SIZE_MAX` = 2^47 - 4096. */
export const X86_64_TASK_SIZE_MAX = 2 ** 47 - PAGE_SIZE;

/** A memslot flag bit claimed by a VM extension (e.g. `KVM_MEM_USERFAULT`, PROPOSED-UF). */
export interface MemslotExtensionFlag {
  /** The flag's value (a single bit), e.g. `1 << 3`. */
  readonly bit: number;
  readonly name: string;
  /** Whether the flag is valid on a `KVM_MEM_GUEST_MEMFD` slot. */
  readonly allowedOnGuestMemfd: boolean;
}

/** The rules of a VM type that memslots depend on. */
export interface MemslotsConfig {
  /** `kvm_arch_has_private_mem`: SW_PROTECTED, SNP, TDX on x86. Enables mixed-attribute tracking. */
  readonly hasPrivateMem: boolean;
  /** `kvm_arch_has_readonly_mem`: `KVM_MEM_READONLY` is valid (never with `KVM_MEM_GUEST_MEMFD`). */
  readonly readonlyMem: boolean;
  /** `kvm_arch_nr_memslot_as_ids`: 2 on x86 with SMM and no private memory, else 1. */
  readonly nrAddressSpaces: 1 | 2;
  /** Memslot flag bits claimed by VM extensions. */
  readonly extensionFlags?: readonly MemslotExtensionFlag[];
  /**
   * `kvm_supported_vm_mem_attributes`: `KVM_MEMORY_ATTRIBUTE_PRIVATE` iff private memory, else 0;
   * also 0 with PROPOSED-CONV-v8's `gmem_in_place_conversion` on, where guest_memfd owns
   * shareability (the VM layer passes 0 then).
   */
  readonly supportedAttributes: number;
  /**
   * `CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES`: whether `KVM_SET_MEMORY_ATTRIBUTES` exists at all
   * (default true). Without it the ioctl is ENOTTY (probed on Linux 6.18: a default-only host).
   */
  readonly memoryAttributesIoctl?: boolean;
  /** `CONFIG_KVM_GUEST_MEMFD` (default true): `KVM_MEM_GUEST_MEMFD` is a valid flag [6.18: every VM type]. */
  readonly guestMemfd?: boolean;
  /** The guest_memfd side of bindings. Without one, every guest_memfd fd is EBADF. */
  readonly binder?: GuestMemfdBinder;
  /** Identifies this VM to the binder ("file belongs to this VM"); default: the Memslots object. */
  readonly vmToken?: unknown;
  /** Charges costs and emits trace events when given. */
  readonly sim?: Sim;
  /** Name of the slots_lock in the sim (default `'slots_lock'`); give one per VM when several share a sim. */
  readonly slotsLockName?: string;
  /** `access_ok` limit: `userspace_addr + memory_size` must not exceed it. Default {@link X86_64_TASK_SIZE_MAX}. */
  readonly userAddressLimit?: number;
  /** Guest physical address bits (`kvm_mmu_max_gfn`); a slot ending above is EINVAL. Default 52. */
  readonly maxGpaBits?: number;
  /**
   * PROPOSED-UF (KVM Userfault v3, not merged): guest_memfd slots accept flags-only changes (an
   * identical re-issue returns 0), moving one is EINVAL; the binding is made on CREATE only.
   */
  readonly userfaultGmemFlagsOnly?: boolean;
}

/** The kinds of change `KVM_SET_USER_MEMORY_REGION2` makes (`enum kvm_mr_change`). */
export type MemslotChangeKind = 'create' | 'delete' | 'move' | 'flags';

/** What a memslot change did, as listeners receive it. */
export interface MemslotChange {
  readonly kind: MemslotChangeKind;
  readonly asId: number;
  readonly id: number;
  /** The slot before (delete, move, flags); during `beforeChange` of delete/move it is `invalid`. */
  readonly old: Memslot | undefined;
  /** The slot after (create, move, flags). */
  readonly new: Memslot | undefined;
  /** `old.flags ^ new.flags` for a flags-only change, else 0. */
  readonly changedFlags: number;
  /**
   * For a flags-only change toggling `KVM_MEM_LOG_DIRTY_PAGES`: x86 write-protects (or splits) the
   * slot on enable, unless `dirtyLogInitiallySet`, and recovers huge pages on disable
   * (`kvm_mmu_slot_apply_flags`).
   */
  readonly dirtyLogging: 'enable' | 'disable' | undefined;
  /** Manual-protect with INITIALLY_SET: a newly logged slot starts all dirty, nothing to write-protect. */
  readonly dirtyLogInitiallySet: boolean;
}

/** A subscriber to memslot changes (the MMU, extensions). */
export interface MemslotListener {
  /**
   * Before the change is installed. For delete and move the old slot is already published as
   * INVALID and the generation bumped: this is `kvm_arch_flush_shadow_memslot`, zap `old`'s range.
   */
  beforeChange?(change: MemslotChange): void;
  /** After the new layout is installed (`kvm_arch_commit_memory_region`). */
  afterChange?(change: MemslotChange): void;
  /**
   * `kvm_arch_mmu_enable_log_dirty_pt_masked`: these gfn ranges of `slot` were just harvested from
   * (or cleared in) the dirty log; write-protect them again so the next write is logged.
   */
  dirtyLogProtect?(slot: Memslot, ranges: readonly FrameRange<Gfn>[]): void;
}

/** The part of a `KVM_SET_MEMORY_ATTRIBUTES` range that lies in one memslot (`struct kvm_gfn_range`). */
export interface AttributeRange {
  readonly slot: Memslot;
  readonly start: Gfn;
  readonly end: Gfn;
  /** The attributes being set. */
  readonly attributes: number;
}

/** A subscriber to attribute changes (the conversion engine, the MMU). */
export interface MemoryAttributesListener {
  /**
   * `kvm_pre_set_memory_attributes`, once per memslot intersecting the range (all address spaces),
   * before the store, inside the MMU invalidation: unmap the old-attribute mappings of `range`
   * (making PRIVATE zaps shared SPTEs, making shared zaps private SPTEs). `hugepageInvalidations`
   * are the straddling head/tail huge pages x86 adds to the invalidation set.
   */
  preSet?(range: AttributeRange, hugepageInvalidations: readonly FrameRange<Gfn>[]): void;
  /**
   * `kvm_arch_post_set_memory_attributes`, once per intersecting memslot, after the store and after
   * the mixed tracking of that slot was recomputed.
   */
  postSet?(range: AttributeRange): void;
}

interface AddressSpace {
  /** Slots sorted by base gfn (never overlapping). */
  sorted: Slot[];
  byId: Map<number, Slot>;
  lastHit: Slot | undefined;
  generation: number;
}

/** Checks a u32 struct field; anything else is EINVAL at the model's surface. */
function u32(value: number, op: string, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new KvmError('EINVAL', op, `${what} = ${value} is not a u32`);
  }
  return value;
}

/** A u64 struct field as bigint; EINVAL when not an integer in [0, 2^64). */
function u64(value: number | bigint, op: string, what: string): bigint {
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new KvmError('EINVAL', op, `${what} = ${value} is not an integer`);
  }
  const v = BigInt(value);
  if (v < 0n || v >= 1n << 64n) throw new KvmError('EINVAL', op, `${what} = ${value} is not a u64`);
  return v;
}

const bitsToRanges = (ranges: readonly FrameRange[], base: number): FrameRange<Gfn>[] =>
  ranges.map((r) => ({ start: toGfn(base + r.start), end: toGfn(base + r.end) }));

/**
 * A VM's memslots, memory attributes and dirty logs.
 *
 * @example
 * const slots = new Memslots({ hasPrivateMem: false, readonlyMem: true, nrAddressSpaces: 1, supportedAttributes: 0 });
 * slots.setUserMemoryRegion2({ slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 1 << 20, userspace_addr: 0x7f00_0000_0000 });
 * slots.lookup(gfn(3))?.id; // 0
 */
export class Memslots {
  readonly config: MemslotsConfig;
  private readonly spaces: AddressSpace[];
  private readonly attrs = new RangeMap<number>();
  private readonly listeners = new Set<MemslotListener>();
  private readonly attrListeners = new Set<MemoryAttributesListener>();
  private readonly extMask: number;
  private readonly extGmemMask: number;
  private readonly userLimit: number;
  private readonly maxGfn: number;
  private manualProtect = 0;
  private inChange = false;
  /** The attribute source the mixed tracking reads. */
  private readonly attrSource: AttributeSource;

  constructor(config: MemslotsConfig) {
    this.config = config;
    let ext = 0;
    let extGmem = 0;
    for (const f of config.extensionFlags ?? []) {
      const builtin = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD;
      if (!Number.isInteger(f.bit) || f.bit <= 0 || f.bit > 2 ** 31 || (f.bit & (f.bit - 1)) !== 0) {
        throw new KvmError('EINVAL', 'Memslots', `extension flag ${f.name} = ${f.bit} is not a single bit`);
      }
      if ((f.bit & (builtin | ext)) !== 0) {
        throw new KvmError('EEXIST', 'Memslots', `extension flag ${f.name} reuses a claimed memslot flag bit`);
      }
      ext |= f.bit;
      if (f.allowedOnGuestMemfd) extGmem |= f.bit;
    }
    this.extMask = ext >>> 0;
    this.extGmemMask = extGmem >>> 0;
    this.userLimit = config.userAddressLimit ?? X86_64_TASK_SIZE_MAX;
    this.maxGfn = 2 ** ((config.maxGpaBits ?? 52) - 12) - 1;
    this.spaces = [];
    for (let as = 0; as < config.nrAddressSpaces; as++) {
      // kvm_create_vm: each address space's generation starts at its as_id.
      this.spaces.push({ sorted: [], byId: new Map(), lastHit: undefined, generation: as });
    }
    const attrs = this.attrs;
    this.attrSource = {
      get: (g) => attrs.get(g) ?? 0,
      runs: (s, e) => attrs.runs(s, e),
      uniform: (s, e, v) => attrs.isUniform(s, e, v === 0 ? undefined : v),
    };
    const sim = config.sim;
    // Idempotent for a second VM in the same sim; a clash with another owner's default is EEXIST.
    if (sim) sim.costs.register(MEMSLOT_COST_OWNER, MEMSLOT_COSTS);
  }

  // ------------------------------------------------------------------ subscriptions

  /** Subscribes to memslot changes; returns the unsubscribe function. */
  subscribe(listener: MemslotListener): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /** Subscribes to memory-attribute changes (pre/post hooks); returns the unsubscribe function. */
  onAttributesChange(listener: MemoryAttributesListener): () => void {
    this.attrListeners.add(listener);
    return () => void this.attrListeners.delete(listener);
  }

  // ------------------------------------------------------------------ KVM_SET_USER_MEMORY_REGION(2)

  /** `KVM_SET_USER_MEMORY_REGION` (v1): only `LOG_DIRTY_PAGES | READONLY` flags; guest_memfd fields ignored. */
  setUserMemoryRegion(region: {
    slot: number;
    flags: number;
    guest_phys_addr: number | bigint;
    memory_size: number | bigint;
    userspace_addr: number | bigint;
  }): void {
    // kvm_vm_ioctl: v1 copies only the v1 struct and zero-fills the rest, then refuses v2-only flags.
    const flags = u32(region.flags, OP_REGION, 'flags');
    if ((flags & ~KVM_SET_USER_MEMORY_REGION_V1_FLAGS) !== 0) {
      this.chargeIoctl();
      throw new KvmError('EINVAL', OP_REGION, `flags 0x${flags.toString(16)} include a v2-only or unknown flag`);
    }
    this.setRegion(
      {
        slot: region.slot,
        flags,
        guest_phys_addr: region.guest_phys_addr,
        memory_size: region.memory_size,
        userspace_addr: region.userspace_addr,
        guest_memfd_offset: 0,
        guest_memfd: 0,
      },
      OP_REGION,
    );
  }

  /** `KVM_SET_USER_MEMORY_REGION2`: create, delete (size 0), move, or change flags of a memslot. */
  setUserMemoryRegion2(region: KvmUserspaceMemoryRegion2): void {
    this.setRegion(region, OP_REGION2);
  }

  private chargeIoctl(): void {
    this.config.sim?.charge('memslot.set_user_memory_region');
  }

  private setRegion(region: KvmUserspaceMemoryRegion2, op: string): void {
    this.chargeIoctl();
    const sim = this.config.sim;
    if (sim) sim.lock(this.config.slotsLockName ?? 'slots_lock').with(() => this.setRegionLocked(region, op));
    else this.setRegionLocked(region, op);
  }

  private setRegionLocked(region: KvmUserspaceMemoryRegion2, op: string): void {
    const slotField = u32(region.slot, op, 'slot');
    const flags = u32(region.flags, op, 'flags');
    const asId = Math.floor(slotField / 65536);
    const id = slotField % 65536;

    // Rule 3 (kvm_vm_ioctl_set_memory_region): ids 32764..32767 are KVM-internal memslots.
    if (id >= KVM_USER_MEM_SLOTS) {
      throw new KvmError('EINVAL', op, `slot id ${id} >= KVM_USER_MEM_SLOTS (${KVM_USER_MEM_SLOTS})`);
    }
    // Rule 4 (check_memory_region_flags).
    this.checkFlags(flags, op);

    // Rules 5-11 (kvm_set_memory_region's sanity checks). All EINVAL, so their order does not matter.
    const size = u64(region.memory_size, op, 'memory_size');
    const gpa = u64(region.guest_phys_addr, op, 'guest_phys_addr');
    const uaddr = u64(region.userspace_addr, op, 'userspace_addr');
    const page = BigInt(PAGE_SIZE);
    if (size % page !== 0n) throw new KvmError('EINVAL', op, `memory_size ${size} is not a multiple of ${PAGE_SIZE}`);
    if (gpa % page !== 0n) throw new KvmError('EINVAL', op, `guest_phys_addr 0x${gpa.toString(16)} is not page aligned`);
    if (uaddr % page !== 0n) {
      throw new KvmError('EINVAL', op, `userspace_addr 0x${uaddr.toString(16)} is not page aligned`);
    }
    // access_ok(uaddr, size); probed on Linux 6.18: uaddr + size == 2^47 - 4096 passes, 2^47 fails.
    if (uaddr + size > BigInt(this.userLimit)) {
      throw new KvmError('EINVAL', op, `[userspace_addr, +memory_size) is not a legal user range (limit 0x${this.userLimit.toString(16)})`);
    }
    let gmemOffset = 0n;
    if ((flags & KVM_MEM_GUEST_MEMFD) !== 0) {
      gmemOffset = u64(region.guest_memfd_offset ?? 0, op, 'guest_memfd_offset');
      if (gmemOffset % page !== 0n) throw new KvmError('EINVAL', op, `guest_memfd_offset ${gmemOffset} is not page aligned`);
      if (gmemOffset + size >= 1n << 64n) throw new KvmError('EINVAL', op, 'guest_memfd_offset + memory_size wraps');
    }
    if (asId >= this.config.nrAddressSpaces) {
      throw new KvmError('EINVAL', op, `address space ${asId} >= ${this.config.nrAddressSpaces} (kvm_arch_nr_memslot_as_ids)`);
    }
    if (gpa + size >= 1n << 64n) throw new KvmError('EINVAL', op, 'guest_phys_addr + memory_size wraps');
    const npagesBig = size / page;
    if (npagesBig > BigInt(KVM_MEM_MAX_NR_PAGES)) {
      throw new KvmError('EINVAL', op, `${npagesBig} pages > KVM_MEM_MAX_NR_PAGES (2^31 - 1)`);
    }
    const npages = Number(npagesBig);
    // Past here every address is below 2^64; a GPA above the model's 2^52 can only end in the
    // max-gfn refusal (rule 19), so it is kept as a number that compares correctly.
    const baseGfn = Number(gpa / page);
    const userspaceAddr = Number(uaddr);

    const space = this.spaces[asId] as AddressSpace;
    const old = space.byId.get(id);

    // Rule 13: delete. The request's other fields were validated above but are otherwise ignored.
    if (npages === 0) {
      if (old === undefined) throw new KvmError('EINVAL', op, `slot ${asId}:${id} does not exist (delete)`);
      this.deleteSlot(space, old);
      return;
    }

    let kind: MemslotChangeKind;
    if (old === undefined) {
      kind = 'create'; // Rule 14: total pages can't overflow an unsigned long in the model.
    } else {
      const k = this.classifyModify(old, flags, baseGfn, npages, userspaceAddr, op);
      if (k === undefined) return; // identical request: return 0, no change
      kind = k;
    }

    // Rule 16: a new or moved range must not intersect another slot of this address space.
    if (kind === 'create' || kind === 'move') {
      for (const other of this.slotsInRange(asId, toGfn(baseGfn), toGfn(baseGfn + npages))) {
        if (other.id !== id) {
          throw new KvmError('EEXIST', op, `gfn range [0x${baseGfn.toString(16)}, +${npages}) overlaps slot ${asId}:${other.id}`);
        }
      }
    }

    // Rule 18: kvm_gmem_bind's checks (CREATE only: guest_memfd slots are never modified).
    let bindRequest: GuestMemfdBindRequest | undefined;
    let bindCheck: GuestMemfdBindCheck | undefined;
    if (kind === 'create' && (flags & KVM_MEM_GUEST_MEMFD) !== 0) {
      const fd = u32(region.guest_memfd ?? 0, op, 'guest_memfd');
      bindRequest = { fd, vm: this.config.vmToken ?? this, offset: Number(gmemOffset / page), npages };
      if (this.config.binder === undefined) throw new KvmError('EBADF', op, `fd ${fd} is not an open file`);
      bindCheck = this.config.binder.checkBind(bindRequest);
    }

    // Rule 19 (x86 kvm_arch_prepare_memory_region): the last gfn must be a gfn the MMU can map.
    if ((kind === 'create' || kind === 'move') && baseGfn + npages - 1 > this.maxGfn) {
      throw new KvmError('EINVAL', op, `last gfn 0x${(baseGfn + npages - 1).toString(16)} exceeds the MMU's max gfn`);
    }

    // ---- every check passed: mutate.
    if (kind === 'create') this.createSlot(space, asId, id, baseGfn, npages, flags, userspaceAddr, bindRequest, bindCheck);
    else if (kind === 'move') this.moveSlot(space, old as Slot, baseGfn, flags);
    else this.updateFlags(space, old as Slot, flags);
  }

  /** Rule 4, `check_memory_region_flags`. */
  private checkFlags(flags: number, op: string): void {
    const gmem = (flags & KVM_MEM_GUEST_MEMFD) !== 0;
    let valid = KVM_MEM_LOG_DIRTY_PAGES;
    if (this.config.guestMemfd ?? true) valid |= KVM_MEM_GUEST_MEMFD;
    // Dirty logging private memory is not supported.
    if (gmem) valid &= ~KVM_MEM_LOG_DIRTY_PAGES;
    // READONLY has emulated-MMIO-on-write semantics, which private memory can't have.
    if (this.config.readonlyMem && !gmem) valid |= KVM_MEM_READONLY;
    valid |= gmem ? this.extGmemMask : this.extMask;
    if ((flags & ~valid) !== 0) {
      throw new KvmError('EINVAL', op, `flags 0x${flags.toString(16)} include invalid bits 0x${((flags & ~valid) >>> 0).toString(16)}`);
    }
  }

  /** Rule 15: what modifying an existing slot means, or a refusal. `undefined` = nothing to change. */
  private classifyModify(
    old: Slot,
    flags: number,
    baseGfn: number,
    npages: number,
    userspaceAddr: number,
    op: string,
  ): MemslotChangeKind | undefined {
    const uf = this.config.userfaultGmemFlagsOnly === true;
    // "Private memslots are immutable, they can only be deleted."
    if (!uf && (flags & KVM_MEM_GUEST_MEMFD) !== 0) {
      throw new KvmError('EINVAL', op, `slot ${old.asId}:${old.id}: guest_memfd memslots can only be deleted`);
    }
    if (userspaceAddr !== old.userspaceAddr || npages !== old.npages || ((flags ^ old.flags) & KVM_MEM_READONLY) !== 0) {
      throw new KvmError('EINVAL', op, `slot ${old.asId}:${old.id}: userspace_addr, size and READONLY of an existing slot can't change`);
    }
    // Not in 6.18's kvm_set_memory_region: a flags-only request that drops GUEST_MEMFD from a
    // guest_memfd slot. The source reads as if it were accepted, leaving the file's binding
    // pointing at the freed slot; not probed (it risks corrupting the shared host's kernel). The
    // digest asks the model to refuse it, and so it does.
    if (old.gmem !== undefined && (flags & KVM_MEM_GUEST_MEMFD) === 0) {
      throw new KvmError('EINVAL', op, `slot ${old.asId}:${old.id}: can't drop the guest_memfd binding of an existing slot`);
    }
    if (uf && old.gmem !== undefined && baseGfn !== old.baseGfn) {
      throw new KvmError('EINVAL', op, `slot ${old.asId}:${old.id}: moving a guest_memfd memslot isn't supported`);
    }
    if (baseGfn !== old.baseGfn) return 'move';
    if (flags !== old.flags) return 'flags';
    return undefined;
  }

  private notifyBefore(change: MemslotChange): void {
    for (const l of this.listeners) l.beforeChange?.(change);
  }

  private notifyAfter(change: MemslotChange): void {
    for (const l of this.listeners) l.afterChange?.(change);
  }

  /** `kvm_swap_active_memslots`: one generation step per swap, by the number of address spaces. */
  private swap(space: AddressSpace): void {
    space.generation += this.config.nrAddressSpaces;
    space.lastHit = undefined;
    this.config.sim?.charge('memslot.swap');
  }

  private newDirtyBitmap(npages: number): DirtyBitmap {
    const bm = new DirtyBitmap(npages);
    // kvm_prepare_memory_region: with manual protect + INITIALLY_SET the bitmap starts all set.
    if (this.initiallySet()) bm.setAll();
    return bm;
  }

  private initiallySet(): boolean {
    return (this.manualProtect & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) !== 0 &&
      (this.manualProtect & KVM_DIRTY_LOG_INITIALLY_SET) !== 0;
  }

  private newLpage(baseGfn: number, npages: number): LpageMixed | undefined {
    if (!this.config.hasPrivateMem) return undefined;
    const lp = new LpageMixed(baseGfn, npages);
    lp.init(this.attrSource);
    return lp;
  }

  private change(kind: MemslotChangeKind, old: Slot | undefined, next: Slot | undefined): MemslotChange {
    const changedFlags = kind === 'flags' && old && next ? (old.flags ^ next.flags) >>> 0 : 0;
    let dirtyLogging: MemslotChange['dirtyLogging'];
    if ((changedFlags & KVM_MEM_LOG_DIRTY_PAGES) !== 0) {
      dirtyLogging = (next!.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0 ? 'enable' : 'disable';
    }
    const s = (old ?? next) as Slot;
    return { kind, asId: s.asId, id: s.id, old, new: next, changedFlags, dirtyLogging, dirtyLogInitiallySet: this.initiallySet() };
  }

  private insert(space: AddressSpace, slot: Slot): void {
    space.byId.set(slot.id, slot);
    const arr = space.sorted;
    let lo = 0;
    let hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((arr[mid] as Slot).baseGfn < slot.baseGfn) lo = mid + 1;
      else hi = mid;
    }
    arr.splice(lo, 0, slot);
  }

  private remove(space: AddressSpace, slot: Slot): void {
    space.byId.delete(slot.id);
    const i = space.sorted.indexOf(slot);
    invariant(i >= 0, 'memslot.sorted-has-slot', () => `slot ${slot.asId}:${slot.id} missing from the sorted array`);
    space.sorted.splice(i, 1);
  }

  private replace(space: AddressSpace, old: Slot, next: Slot): void {
    if (old.baseGfn === next.baseGfn) {
      const i = space.sorted.indexOf(old);
      space.sorted[i] = next;
      space.byId.set(next.id, next);
    } else {
      this.remove(space, old);
      this.insert(space, next);
    }
  }

  private trace(name: string, fields: Record<string, unknown>): void {
    const sim = this.config.sim;
    if (sim?.trace.enabled) sim.trace.emit(name, fields as never);
  }

  private createSlot(
    space: AddressSpace,
    asId: number,
    id: number,
    baseGfn: number,
    npages: number,
    flags: number,
    userspaceAddr: number,
    bindRequest: GuestMemfdBindRequest | undefined,
    bindCheck: GuestMemfdBindCheck | undefined,
  ): void {
    const dirty = (flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0 ? this.newDirtyBitmap(npages) : undefined;
    let gmem: { -readonly [K in keyof MemslotGmem]: MemslotGmem[K] } | undefined;
    if (bindRequest && bindCheck) {
      gmem = {
        fd: bindRequest.fd,
        file: bindCheck.file,
        pgoff: pgoff(bindRequest.offset),
        gmemOnly: bindCheck.gmemOnly,
        binding: undefined as never,
      };
    }
    const slot = new Slot(asId, id, toGfn(baseGfn), npages, flags, userspaceAddr, gmem, dirty, this.newLpage(baseGfn, npages));
    const change = this.change('create', undefined, slot);
    this.inChange = true;
    try {
      this.notifyBefore(change);
      if (gmem && bindRequest) gmem.binding = (this.config.binder as GuestMemfdBinder).bind(bindRequest, slot);
      this.insert(space, slot);
      this.swap(space);
      this.notifyAfter(change);
    } finally {
      this.inChange = false;
    }
    this.trace('memslot.create', { asId, id, baseGfn, npages, flags, guestMemfd: gmem !== undefined });
  }

  private deleteSlot(space: AddressSpace, old: Slot): void {
    const change = this.change('delete', old, undefined);
    this.inChange = true;
    try {
      this.invalidate(space, old, change);
      this.remove(space, old);
      this.swap(space);
      // kvm_free_memslot → kvm_gmem_unbind; the file range becomes bindable again.
      if (old.gmem) this.config.binder?.unbind(old.gmem.binding, old);
      this.notifyAfter(change);
    } finally {
      this.inChange = false;
    }
    this.trace('memslot.delete', { asId: old.asId, id: old.id, baseGfn: old.baseGfn, npages: old.npages });
  }

  private moveSlot(space: AddressSpace, old: Slot, baseGfn: number, flags: number): void {
    // kvm_prepare_memory_region: logging on in both old and new reuses the bitmap (bits are
    // relative to base_gfn, so they now name the moved gfns).
    let dirty: DirtyBitmap | undefined;
    if ((flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0) dirty = old.dirty ?? this.newDirtyBitmap(old.npages);
    const next = new Slot(old.asId, old.id, toGfn(baseGfn), old.npages, flags, old.userspaceAddr, old.gmem, dirty, undefined);
    const change = this.change('move', old, next);
    this.inChange = true;
    try {
      this.invalidate(space, old, change);
      // x86 kvm_alloc_memslot_metadata: fresh lpage_info for the new position.
      next.lpage = this.newLpage(baseGfn, old.npages);
      this.replace(space, old, next);
      this.swap(space);
      this.notifyAfter(change);
    } finally {
      this.inChange = false;
    }
    this.trace('memslot.move', { asId: old.asId, id: old.id, from: old.baseGfn, to: baseGfn, npages: old.npages });
  }

  /**
   * kvm_invalidate_memslot, the first half of DELETE and MOVE: publish the old slot as INVALID (a
   * vCPU now sees no memslot there), then let subscribers flush its mappings
   * (kvm_arch_flush_shadow_memslot).
   */
  private invalidate(space: AddressSpace, old: Slot, change: MemslotChange): void {
    old.invalid = true;
    this.swap(space);
    this.config.sim?.charge('memslot.flush_shadow_memslot');
    this.notifyBefore(change);
  }

  private updateFlags(space: AddressSpace, old: Slot, flags: number): void {
    let dirty: DirtyBitmap | undefined;
    if ((flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0) dirty = old.dirty ?? this.newDirtyBitmap(old.npages);
    // FLAGS_ONLY copies the arch part (lpage_info) as it is.
    const next = new Slot(old.asId, old.id, old.baseGfn, old.npages, flags, old.userspaceAddr, old.gmem, dirty, old.lpage);
    const change = this.change('flags', old, next);
    this.inChange = true;
    try {
      this.notifyBefore(change);
      this.replace(space, old, next);
      this.swap(space);
      this.notifyAfter(change);
    } finally {
      this.inChange = false;
    }
    this.trace('memslot.flags', { asId: old.asId, id: old.id, from: old.flags, to: flags });
  }

  // ------------------------------------------------------------------ lookups

  /** The address spaces this VM has. */
  get nrAddressSpaces(): number {
    return this.config.nrAddressSpaces;
  }

  /**
   * The memslot generation of an address space (`slots->generation`): starts at `asId`, steps by
   * the number of address spaces on every swap (create/flags: one swap; delete/move: two).
   */
  generation(asId = 0): number {
    const space = this.spaces[asId];
    if (space === undefined) throw new KvmError('EINVAL', 'generation', `no address space ${asId}`);
    return space.generation;
  }

  /** `id_to_memslot`: the slot with this id, or undefined. */
  slot(asId: number, id: number): Memslot | undefined {
    return this.spaces[asId]?.byId.get(id);
  }

  /** Every slot of an address space, in gfn order. */
  slots(asId = 0): readonly Memslot[] {
    return this.spaces[asId]?.sorted ?? [];
  }

  /**
   * `gfn_to_memslot`: the slot containing `gfn`, or undefined. O(log slots), with a last-hit cache
   * (`slots->last_used_slot`). During a delete/move window the old slot is returned `invalid`.
   */
  lookup(gfn: Gfn | number, asId = 0): Memslot | undefined {
    const space = this.spaces[asId];
    if (space === undefined) return undefined;
    const last = space.lastHit;
    if (last !== undefined && gfn >= last.baseGfn && gfn < last.baseGfn + last.npages) return last;
    const arr = space.sorted;
    let lo = 0;
    let hi = arr.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const s = arr[mid] as Slot;
      if (gfn < s.baseGfn) hi = mid - 1;
      else if (gfn >= s.baseGfn + s.npages) lo = mid + 1;
      else {
        space.lastHit = s;
        return s;
      }
    }
    return undefined;
  }

  /** `kvm_for_each_memslot_in_gfn_range`: the slots overlapping `[start, end)`, in gfn order. */
  *slotsInRange(asId: number, start: Gfn | number, end: Gfn | number): Generator<Memslot> {
    const arr = this.spaces[asId]?.sorted;
    if (arr === undefined || start >= end) return;
    // First slot whose end is above start.
    let lo = 0;
    let hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const s = arr[mid] as Slot;
      if (s.baseGfn + s.npages <= start) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < arr.length; i++) {
      const s = arr[i] as Slot;
      if (s.baseGfn >= end) return;
      yield s;
    }
  }

  // ------------------------------------------------------------------ memory attributes

  /**
   * `KVM_SET_MEMORY_ATTRIBUTES` (`kvm_vm_ioctl_set_mem_attributes`): sets `attributes` on every gfn
   * of `[address, address + size)`, memslot or not. A range already entirely at the value is a
   * no-op (no hooks). Costs one RangeMap store however large the range; the virtual-time charge
   * follows the kernel's per-gfn xarray.
   */
  setMemoryAttributes(request: KvmMemoryAttributes): void {
    const sim = this.config.sim;
    sim?.charge('memslot.set_memory_attributes');
    const [start, end, value] = this.attributesRange(request);
    if (sim) sim.lock(this.config.slotsLockName ?? 'slots_lock').with(() => this.setAttributesLocked(start, end, value));
    else this.setAttributesLocked(start, end, value);
  }

  /**
   * Validate-only `KVM_SET_MEMORY_ATTRIBUTES`: every refusal {@link setMemoryAttributes} makes, in
   * its order, with nothing changed and nothing charged. Returns whether the request would change
   * anything (`false`: every gfn already has the value, kvm_vm_set_mem_attributes' "nothing to do").
   */
  checkMemoryAttributes(request: KvmMemoryAttributes): boolean {
    const [start, end, value] = this.attributesRange(request);
    return !this.rangeHasAttributes(start, end, value);
  }

  /** kvm_vm_ioctl_set_mem_attributes' validation; returns `[start, end, attributes]` in gfns. */
  private attributesRange(request: KvmMemoryAttributes): [number, number, number] {
    if (this.config.memoryAttributesIoctl === false) {
      throw new KvmError('ENOTTY', OP_ATTRS, 'this kernel has no KVM_SET_MEMORY_ATTRIBUTES (CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES)');
    }
    const fast = this.attributesFastPath(request);
    if (fast !== undefined) return fast;
    const flags = u64(request.flags ?? 0, OP_ATTRS, 'flags');
    if (flags !== 0n) throw new KvmError('EINVAL', OP_ATTRS, `flags 0x${flags.toString(16)} must be 0`);
    const attrsBig = u64(request.attributes, OP_ATTRS, 'attributes');
    if ((attrsBig & ~BigInt(this.config.supportedAttributes)) !== 0n) {
      throw new KvmError('EINVAL', OP_ATTRS, `attributes 0x${attrsBig.toString(16)} are not supported by this VM (0x${this.config.supportedAttributes.toString(16)})`);
    }
    const address = u64(request.address, OP_ATTRS, 'address');
    const size = u64(request.size, OP_ATTRS, 'size');
    if (size === 0n || address + size >= 1n << 64n) throw new KvmError('EINVAL', OP_ATTRS, 'size is 0 or address + size wraps');
    const page = BigInt(PAGE_SIZE);
    if (address % page !== 0n || size % page !== 0n) {
      throw new KvmError('EINVAL', OP_ATTRS, 'address and size must be page aligned');
    }
    // The model's address space ends at 2^52 (DESIGN.md "Units"): beyond it, like an out-of-range u64.
    const end = toByteCount(address + size, OP_ATTRS, 'address + size') / PAGE_SIZE;
    return [Number(address / page), end, Number(attrsBig)];
  }

  /**
   * The common case without bigint arithmetic: every field a safe non-negative integer number, so
   * nothing can wrap 2^64. Returns `[start, end, attributes]` when the request is valid and small
   * enough, `undefined` to let the general path decide (and name the refusal).
   */
  private attributesFastPath(r: KvmMemoryAttributes): [number, number, number] | undefined {
    const { address, size, attributes } = r;
    const flags = r.flags ?? 0;
    if (typeof address !== 'number' || typeof size !== 'number' || typeof attributes !== 'number' || flags !== 0) {
      return undefined;
    }
    if (!Number.isSafeInteger(address) || !Number.isSafeInteger(size) || !Number.isSafeInteger(attributes)) return undefined;
    if (address < 0 || size <= 0 || attributes < 0 || attributes > 0xffff_ffff) return undefined;
    if ((attributes & ~this.config.supportedAttributes) !== 0) return undefined;
    if (address % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0 || address + size > 2 ** 52) return undefined;
    return [address / PAGE_SIZE, (address + size) / PAGE_SIZE, attributes];
  }

  private setAttributesLocked(start: number, end: number, value: number): void {
    // Nothing to do if the entire range has the desired attributes.
    if (this.rangeHasAttributes(start, end, value)) return;
    // xa_reserve + xa_store per gfn: the kernel's cost grows with the range (the start-up delay
    // the seeds discuss), the model's does not.
    this.config.sim?.charge('memslot.attribute_page', end - start);
    const touched: Array<{ slot: Slot; start: number; end: number }> = [];
    for (let as = 0; as < this.spaces.length; as++) {
      for (const s of this.slotsInRange(as, start, end)) {
        const slot = s as Slot;
        touched.push({ slot, start: Math.max(start, slot.baseGfn), end: Math.min(end, slot.baseGfn + slot.npages) });
      }
    }
    for (const t of touched) {
      const range: AttributeRange = { slot: t.slot, start: toGfn(t.start), end: toGfn(t.end), attributes: value };
      const extra = t.slot.lpage ? bitsToRanges(t.slot.lpage.hugepageInvalidations(t.start, t.end), 0) : [];
      for (const l of this.attrListeners) l.preSet?.(range, extra);
    }
    if (value === 0) this.attrs.clear(start, end);
    else this.attrs.set(start, end, value);
    for (const t of touched) {
      t.slot.lpage?.afterSet(this.attrSource, t.start, t.end, value);
      const range: AttributeRange = { slot: t.slot, start: toGfn(t.start), end: toGfn(t.end), attributes: value };
      for (const l of this.attrListeners) l.postSet?.(range);
    }
    this.trace('memslot.set_attributes', { start, end, attributes: value, slots: touched.length });
  }

  /** `kvm_get_memory_attributes`: the attributes of one gfn (0 = shared, no attribute). */
  getAttributes(gfn: Gfn | number): number {
    return this.attrs.get(gfn) ?? 0;
  }

  /**
   * `kvm_range_has_memory_attributes(kvm, start, end, mask, attrs)`: whether every gfn of
   * `[start, end)` has `(attributes & mask) == attrs`; `mask` (default all bits, the kernel's `~0`)
   * is limited to the supported set and `attrs` outside it is never had. O(log runs).
   */
  rangeHasAttributes(start: Gfn | number, end: Gfn | number, attrs: number, mask = -1): boolean {
    const m = mask & this.config.supportedAttributes;
    if ((attrs & ~m) !== 0) return false;
    if (start >= end) return true;
    if (m === this.config.supportedAttributes) {
      return this.attrs.isUniform(start, end, attrs === 0 ? undefined : attrs);
    }
    // A partial mask: every run, and every gap (which reads as 0), must match under it.
    if (attrs !== 0 && this.attrs.firstWithout(start, end) !== undefined) return false;
    return this.attrs.firstWith(start, end, (v) => (v & m) !== attrs) === undefined;
  }

  /** The attribute runs of `[start, end)` (gaps have attributes 0). */
  attributeRuns(start: Gfn | number = 0, end: Gfn | number = Number.MAX_SAFE_INTEGER): Iterable<{ start: number; end: number; value: number }> {
    return this.attrs.runs(start, end);
  }

  // ------------------------------------------------------------------ mixed huge pages (x86)

  /**
   * Whether the huge page of `level` (1 = 2M, 2 = 1G) containing `gfn` has mixed attributes in
   * `slot` (`hugepage_test_mixed`). Huge pages not fully inside the slot, and VMs without private
   * memory, are never tracked: false.
   */
  isMixed(slot: Memslot, gfn: Gfn | number, level: HugeLevel): boolean {
    return (slot as Slot).lpage?.test(gfn, level) ?? false;
  }

  /** `hugepage_has_attrs`: whether the huge page at `gfn` uniformly has `attrs` (1G consumes 2M results). */
  hugepageHasAttrs(slot: Memslot, gfn: Gfn | number, level: HugeLevel, attrs: number): boolean {
    const lp = (slot as Slot).lpage ?? new LpageMixed(slot.baseGfn, slot.npages);
    return lp.hugepageHasAttrs(this.attrSource, gfn, level, attrs);
  }

  /** The mixed huge pages of a slot at `level`, as gfn ranges (for statistics and tests). */
  mixedHugepages(slot: Memslot, level: HugeLevel): FrameRange<Gfn>[] {
    return bitsToRanges((slot as Slot).lpage?.mixedRanges(level) ?? [], 0);
  }

  // ------------------------------------------------------------------ dirty logging

  /**
   * `KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)`: `args[0]` = MANUAL_PROTECT_ENABLE, optionally
   * | INITIALLY_SET (only with ENABLE; probed on Linux 6.18: INITIALLY_SET alone → EINVAL).
   * Other caps are not this package's: EINVAL.
   */
  enableCap(cap: KvmEnableCap): void {
    if (cap.cap !== KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) {
      throw new KvmError('EINVAL', OP_ENABLE_CAP, `capability ${cap.cap} is not handled by memslots`);
    }
    const arg = u64(cap.args[0] ?? 0, OP_ENABLE_CAP, 'args[0]');
    let allowed = BigInt(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
    if ((arg & allowed) !== 0n) allowed |= BigInt(KVM_DIRTY_LOG_INITIALLY_SET);
    if ((cap.flags ?? 0) !== 0 || (arg & ~allowed) !== 0n) {
      throw new KvmError('EINVAL', OP_ENABLE_CAP, `invalid KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 options 0x${arg.toString(16)}`);
    }
    this.manualProtect = Number(arg);
  }

  /** Whether `KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE` is on. */
  get manualDirtyLogProtect(): boolean {
    return (this.manualProtect & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) !== 0;
  }

  private dirtyLogSlot(slotField: number, op: string): Slot {
    const asId = Math.floor(slotField / 65536);
    const id = slotField % 65536;
    if (asId >= this.config.nrAddressSpaces || id >= KVM_USER_MEM_SLOTS) {
      throw new KvmError('EINVAL', op, `slot ${asId}:${id} is outside the user memslots`);
    }
    return this.spaces[asId]?.byId.get(id) as Slot;
  }

  /**
   * `KVM_GET_DIRTY_LOG` (`kvm_get_dirty_log_protect`): copies the slot's bitmap (`unsigned long`s,
   * little endian, bit i ↔ gfn base + i) into `dirty_bitmap` (or a new array) and returns it.
   * Without manual protect the harvested bits are cleared and those pages write-protected again.
   * ENOENT for a missing slot or one without dirty logging (every guest_memfd slot).
   */
  getDirtyLog(log: KvmDirtyLog): Uint8Array {
    this.config.sim?.charge('memslot.dirty_log_ioctl');
    const slotField = u32(log.slot, OP_GET_LOG, 'slot');
    const slot = this.dirtyLogSlot(slotField, OP_GET_LOG);
    if (slot === undefined || slot.dirty === undefined) {
      throw new KvmError('ENOENT', OP_GET_LOG, `slot ${slotField} does not exist or has no dirty log`);
    }
    const bm = slot.dirty;
    const n = bm.bytes;
    if (log.dirty_bitmap !== undefined && log.dirty_bitmap.length < n) {
      throw new KvmError('EFAULT', OP_GET_LOG, `dirty_bitmap holds ${log.dirty_bitmap.length} bytes, ${n} needed`);
    }
    const out = log.dirty_bitmap ?? new Uint8Array(n);
    bm.copyTo(out);
    if (!this.manualDirtyLogProtect) {
      const runs = bm.runs();
      if (runs.length > 0) {
        bm.clearRange(0, bm.npages);
        const ranges = bitsToRanges(runs, slot.baseGfn);
        for (const l of this.listeners) l.dirtyLogProtect?.(slot, ranges);
      }
    }
    return out;
  }

  /**
   * `KVM_CLEAR_DIRTY_LOG` (`kvm_clear_dirty_log_protect`): clears the bits set in `dirty_bitmap`
   * for `[first_page, first_page + num_pages)` of the slot and write-protects those pages again.
   * `first_page` must be a multiple of 64 and `num_pages` a multiple of 64 unless the range reaches
   * the end of the slot (EINVAL), checked before the slot lookup (ENOENT) for `first_page`.
   * Probed on Linux 6.18: works without manual protect enabled too.
   */
  clearDirtyLog(log: KvmClearDirtyLog): void {
    this.config.sim?.charge('memslot.dirty_log_ioctl');
    const slotField = u32(log.slot, OP_CLEAR_LOG, 'slot');
    const num = u32(log.num_pages, OP_CLEAR_LOG, 'num_pages');
    const firstBig = u64(log.first_page, OP_CLEAR_LOG, 'first_page');
    const slot = this.dirtyLogSlot(slotField, OP_CLEAR_LOG);
    if (firstBig % 64n !== 0n) throw new KvmError('EINVAL', OP_CLEAR_LOG, `first_page ${firstBig} is not a multiple of 64`);
    if (slot === undefined || slot.dirty === undefined) {
      throw new KvmError('ENOENT', OP_CLEAR_LOG, `slot ${slotField} does not exist or has no dirty log`);
    }
    const npages = slot.npages;
    if (firstBig > BigInt(npages)) throw new KvmError('EINVAL', OP_CLEAR_LOG, `first_page ${firstBig} is past the slot's ${npages} pages`);
    const first = Number(firstBig);
    if (num > npages - first) throw new KvmError('EINVAL', OP_CLEAR_LOG, `first_page + num_pages is past the slot's ${npages} pages`);
    if (num < npages - first && num % 64 !== 0) {
      throw new KvmError('EINVAL', OP_CLEAR_LOG, `num_pages ${num} is not a multiple of 64 and does not reach the end of the slot`);
    }
    const n = Math.ceil(num / 64) * 8;
    if (log.dirty_bitmap.length < n) {
      throw new KvmError('EFAULT', OP_CLEAR_LOG, `dirty_bitmap holds ${log.dirty_bitmap.length} bytes, ${n} needed`);
    }
    const cleared = slot.dirty.clearMasked(first, num, log.dirty_bitmap);
    if (cleared.length > 0) {
      const ranges = bitsToRanges(cleared, slot.baseGfn);
      for (const l of this.listeners) l.dirtyLogProtect?.(slot, ranges);
    }
  }

  /**
   * `mark_page_dirty_in_slot`, for the MMU's write faults: sets the bit of `gfn` if `slot` logs
   * dirty pages. Returns whether the page is now marked.
   */
  markDirty(slot: Memslot, gfn: Gfn | number): boolean {
    const s = slot as Slot;
    if (s.dirty === undefined || gfn < s.baseGfn || gfn >= s.baseGfn + s.npages) return false;
    s.dirty.mark(gfn - s.baseGfn);
    return true;
  }

  /** `mark_page_dirty`: looks the gfn up and marks it. */
  markPageDirty(gfn: Gfn | number, asId = 0): boolean {
    const slot = this.lookup(gfn, asId);
    return slot !== undefined && this.markDirty(slot, gfn);
  }

  /** Whether `gfn` is marked in its slot's dirty bitmap. */
  isDirty(slot: Memslot, gfn: Gfn | number): boolean {
    const s = slot as Slot;
    return s.dirty !== undefined && gfn >= s.baseGfn && gfn < s.baseGfn + s.npages && s.dirty.test(gfn - s.baseGfn);
  }

  /** The dirty pages of a slot as gfn ranges, without clearing (sparse; for large slots and tests). */
  dirtyRanges(slot: Memslot): FrameRange<Gfn>[] {
    const s = slot as Slot;
    return s.dirty ? bitsToRanges(s.dirty.runs(), s.baseGfn) : [];
  }

  // ------------------------------------------------------------------ invariants

  /**
   * Checks the model's invariants; throws `ModelInvariantError`. No overlap within an address
   * space; the sorted array, the id map and lookups agree with a linear scan; attributes are
   * within the supported set; no two slots bind overlapping ranges of one file; dirty bitmaps
   * exactly on logging slots; mixed tracking equals a recomputation.
   */
  checkInvariants(): void {
    invariant(!this.inChange, 'memslot.no-change-in-flight', () => 'checkInvariants called inside a change');
    const bindings = new Map<object, Array<{ start: number; end: number; slot: Slot }>>();
    for (let as = 0; as < this.spaces.length; as++) {
      const space = this.spaces[as] as AddressSpace;
      invariant(
        space.generation % this.config.nrAddressSpaces === as,
        'memslot.generation-as-id',
        () => `generation ${space.generation} of address space ${as}`,
      );
      invariant(space.sorted.length === space.byId.size, 'memslot.sorted-matches-ids', () => `address space ${as}`);
      let prevEnd = -1;
      for (const s of space.sorted) {
        invariant(space.byId.get(s.id) === s, 'memslot.id-map', () => `slot ${as}:${s.id}`);
        invariant(s.asId === as && !s.invalid, 'memslot.slot-state', () => `slot ${as}:${s.id}`);
        invariant(s.npages > 0 && s.npages <= KVM_MEM_MAX_NR_PAGES, 'memslot.npages', () => `slot ${as}:${s.id}`);
        invariant(s.baseGfn >= prevEnd, 'memslot.no-overlap', () => `slot ${as}:${s.id} overlaps its predecessor`);
        prevEnd = s.baseGfn + s.npages;
        invariant(
          ((s.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0) === (s.dirty !== undefined),
          'memslot.dirty-bitmap-iff-logging',
          () => `slot ${as}:${s.id}`,
        );
        if (s.dirty) {
          invariant(s.dirty.npages === s.npages && !s.dirty.hasBitsBeyondEnd(), 'memslot.dirty-bitmap-size', () => `slot ${as}:${s.id}`);
          s.dirty.checkInvariants();
        }
        invariant(((s.flags & KVM_MEM_GUEST_MEMFD) !== 0) === (s.gmem !== undefined), 'memslot.gmem-iff-flag', () => `slot ${as}:${s.id}`);
        if (s.gmem) {
          const list = bindings.get(s.gmem.file) ?? [];
          list.push({ start: s.gmem.pgoff, end: s.gmem.pgoff + s.npages, slot: s });
          bindings.set(s.gmem.file, list);
        }
        invariant((s.lpage !== undefined) === this.config.hasPrivateMem, 'memslot.lpage-iff-private', () => `slot ${as}:${s.id}`);
        if (s.lpage) {
          const fresh = new LpageMixed(s.baseGfn, s.npages);
          fresh.init(this.attrSource);
          invariant(fresh.equals(s.lpage), 'memslot.mixed-tracking', () => `slot ${as}:${s.id} mixed flags differ from a recomputation`);
        }
        // Lookups agree with a linear scan at the edges of every slot (with many slots, a scan of
        // the neighbours, which is the same answer once order and non-overlap hold).
        const k = space.sorted.indexOf(s);
        const near = space.sorted.length <= 64 ? space.sorted : space.sorted.slice(Math.max(0, k - 1), k + 2);
        for (const g of [s.baseGfn - 1, s.baseGfn, s.baseGfn + s.npages - 1, s.baseGfn + s.npages]) {
          if (g < 0) continue;
          const linear = near.find((x) => g >= x.baseGfn && g < x.baseGfn + x.npages);
          invariant(this.lookup(g, as) === linear, 'memslot.lookup-linear', () => `gfn ${g} in address space ${as}`);
        }
      }
    }
    for (const list of bindings.values()) {
      list.sort((a, b) => a.start - b.start);
      for (let i = 1; i < list.length; i++) {
        invariant((list[i] as { start: number }).start >= (list[i - 1] as { end: number }).end, 'memslot.bindings-overlap', () => 'two slots bind overlapping ranges of one guest_memfd');
      }
    }
    this.attrs.checkInvariants();
    for (const r of this.attrs.runs()) {
      if (r.value === 0 || (r.value & ~this.config.supportedAttributes) !== 0) {
        throw new ModelInvariantError('memslot.attributes-supported', `run [${r.start}, ${r.end}) holds 0x${r.value.toString(16)}`);
      }
    }
  }
}
