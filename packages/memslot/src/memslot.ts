/**
 * One memslot (`struct kvm_memory_slot`), as subscribers and lookups see it. Every change to a slot
 * makes a new object, like the kernel's copy-and-swap of memslots: an `old` slot handed to a
 * listener stays as it was.
 */
import type { Gfn, PgOff } from '@cocokit/sdk';
import type { GuestMemfdBinding } from './binder.js';
import type { DirtyBitmap } from './dirty-bitmap.js';
import type { LpageMixed } from './lpage.js';

/** A slot's guest_memfd binding (`slot->gmem`). */
export interface MemslotGmem {
  /** The fd userspace passed at creation. */
  readonly fd: number;
  /** The file's identity (see {@link GuestMemfdBinding.file}). */
  readonly file: object;
  /** First file page bound to `baseGfn`. */
  readonly pgoff: PgOff;
  /** `KVM_MEMSLOT_GMEM_ONLY`: the file supports mmap, so shared faults are served from it too [6.18]. */
  readonly gmemOnly: boolean;
  /** The binder's handle, for gmem's own bookkeeping. */
  readonly binding: GuestMemfdBinding;
}

/** A read-only view of one memslot. */
export interface Memslot {
  /** Address space (`slot >> 16`). */
  readonly asId: number;
  /** Slot id within the address space (`(u16)slot`). */
  readonly id: number;
  readonly baseGfn: Gfn;
  readonly npages: number;
  /** `baseGfn + npages` (one past the last gfn). */
  readonly endGfn: Gfn;
  /** `KVM_MEM_*` flags, including extension bits. */
  readonly flags: number;
  /** `userspace_addr` in bytes. */
  readonly userspaceAddr: number;
  /** The guest_memfd binding, for `KVM_MEM_GUEST_MEMFD` slots. */
  readonly gmem: MemslotGmem | undefined;
  /**
   * `KVM_MEMSLOT_INVALID`: true only inside the window of a delete or move (during
   * `beforeChange`), when a vCPU touching the range must see "no memslot" (an MMIO exit on x86).
   */
  readonly invalid: boolean;
  /** Whether the slot has a dirty bitmap (`KVM_MEM_LOG_DIRTY_PAGES`). */
  readonly dirtyLogging: boolean;
}

/** @internal The model's slot: the view plus the state other modules of this package keep on it. */
export class Slot implements Memslot {
  readonly asId: number;
  readonly id: number;
  readonly baseGfn: Gfn;
  readonly npages: number;
  readonly flags: number;
  readonly userspaceAddr: number;
  readonly gmem: MemslotGmem | undefined;
  invalid = false;
  /** The dirty bitmap; shared by the old and new slot when logging stays on across a change. */
  dirty: DirtyBitmap | undefined;
  /** x86 lpage_info mixed flags; shared across a flags-only change (the kernel copies `arch`). */
  lpage: LpageMixed | undefined;

  constructor(
    asId: number,
    id: number,
    baseGfn: Gfn,
    npages: number,
    flags: number,
    userspaceAddr: number,
    gmem: MemslotGmem | undefined,
    dirty: DirtyBitmap | undefined,
    lpage: LpageMixed | undefined,
  ) {
    this.asId = asId;
    this.id = id;
    this.baseGfn = baseGfn;
    this.npages = npages;
    this.flags = flags;
    this.userspaceAddr = userspaceAddr;
    this.gmem = gmem;
    this.dirty = dirty;
    this.lpage = lpage;
  }

  get endGfn(): Gfn {
    return (this.baseGfn + this.npages) as Gfn;
  }

  get dirtyLogging(): boolean {
    return this.dirty !== undefined;
  }
}
