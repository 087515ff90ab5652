/**
 * VM extensions (DESIGN.md, "VM extensions"): features that hook into several layers without the
 * core depending on them (KVM Userfault is the first). An extension may claim memslot flag bits,
 * keep per-slot state, intercept the fault pipeline before a mapping is made (exit, or cap the
 * level), add exit kinds and capabilities, and offer an API typed by augmentation:
 *
 * ```ts
 * declare module '@cocokit/vm' { interface VmExtensionApis { userfault: UserfaultApi } }
 * ```
 *
 * The vm package never imports an extension; it is handed one in `createVm({ extensions })`.
 */
import type { Sim } from '@cocokit/sdk';
import type { Memslot, MemslotChange, MemslotExtensionFlag } from '@cocokit/memslot';
import type { BeforeMapResult, FaultView } from '@cocokit/mmu';
import type { Vm } from './vm.js';

/** What an extension is given when a VM is created with it. */
export interface ExtensionContext {
  /** The VM (its memslots, MMU, guest_memfd side and sim are public). */
  readonly vm: Vm;
  readonly sim: Sim;
  /** The state this extension's `createSlotState` made for `slot` (kept across flags-only changes). */
  slotState(slot: Memslot): unknown;
}

/** One extension's instance in one VM. Every member is optional. */
export interface ExtensionInstance<Api = unknown> {
  /** Per-slot state, made when a slot is created or moved, kept across flags-only changes. */
  createSlotState?(slot: Memslot): unknown;
  /** After every memslot change (e.g. zap the slot when the extension's flag is turned on). */
  onSlotChange?(change: MemslotChange): void;
  /** Before a fault resolves its pfn (kvm_mmu_faultin_pfn): go on, exit to userspace, or cap the level. */
  beforeMap?(fault: FaultView): BeforeMapResult;
  /** What `vm.extension(name)` returns. */
  readonly api?: Api;
  /** The extension's invariants; throws ModelInvariantError. */
  checkInvariants?(): void;
}

/** An extension as handed to `createVm({ extensions })`. */
export interface VmExtension<Api = unknown> {
  /** Unique per VM. */
  readonly name: string;
  /** Memslot flag bits the extension claims (e.g. KVM_MEM_USERFAULT = 1 << 3). */
  readonly memslotFlags?: readonly MemslotExtensionFlag[];
  /** What KVM_CHECK_EXTENSION answers for the capabilities the extension adds. */
  readonly capabilities?: Readonly<Record<number, number>>;
  /** Exit reasons the extension's exits carry (documentation and validation of `beforeMap` exits). */
  readonly exitReasons?: readonly string[];
  /** Called once per VM, after the VM's layers exist. */
  setup(ctx: ExtensionContext): ExtensionInstance<Api>;
}

/** Extension APIs by name, declared by each extension package (see the module comment). */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface VmExtensionApis {}
