/**
 * Guest programs (CONTRACTS.md, "Guest programs"): generator functions that yield guest actions.
 * The vCPU runs one action per step and feeds its result back into the generator, so a program
 * reads like straight-line guest code:
 *
 * ```ts
 * const program: GuestProgram = function* (g) {
 *   const data = yield* g.read(0x1000, 8);
 *   if (isGuestException(data)) yield* g.accept(0x1000, 4096);
 *   yield* g.write(0x2000, new Uint8Array([1, 2, 3]), { shared: true });
 * };
 * ```
 *
 * An action that needs userspace (a MEMORY_FAULT, a KVM_HC_MAP_GPA_RANGE hypercall, MMIO, HLT)
 * ends `vcpu.run()` with that exit; the next `run()` completes it and the program goes on.
 */
import type {
  Access,
  ArchGuestApiOf,
  ArchGuestCall,
  ArchGuestOutcome,
  ArchGuestStep,
  GuestException,
  GuestNpf,
  Rng,
} from '@cocokit/sdk';

/** Options of a guest memory access. */
export interface GuestAccessOptions {
  /**
   * A shared (unencrypted) access: SNP clears the C-bit, TDX sets the shared GPA bit. Default
   * false (private) on VMs with private memory. Ignored where KVM decides from the memory
   * attributes alone (sw-protected).
   */
  readonly shared?: boolean;
  /**
   * The instruction making the access, for KVM to fetch and emulate should the access hit MMIO.
   * Without it no fetch is modelled, as on SVM with decode assists, where the exit carries the
   * instruction bytes.
   */
  readonly insn?: GuestInsn;
}

/**
 * Where the instruction behind an access lives in guest memory. On VMX, an access to MMIO is an
 * EPT misconfiguration KVM handles by emulating the instruction (handle_ept_misconfig →
 * kvm_mmu_page_fault → x86_emulate_instruction), which fetches it with kvm_read_guest after
 * translating RIP through the guest's page tables (paging64_walk_addr_generic). The model has no
 * guest virtual addresses: the guest names the physical addresses the walk and the fetch touch.
 */
export interface GuestInsn {
  /** The guest-physical address of the instruction (RIP, translated). */
  readonly gpa: number;
  /**
   * The guest-physical addresses of the paging-structure entries the walk reads, root first: four
   * for 4-level paging (PML4E, PDPTE, PDE, PTE), five with LA57. Each is an 8-byte entry. Default
   * none (paging off).
   */
  readonly walk?: readonly number[];
}

/** Reads `len` bytes at `gpa` (inside one page). */
export interface ReadAction {
  readonly kind: 'read';
  readonly gpa: number;
  readonly len: number;
  readonly shared: boolean;
  readonly insn?: GuestInsn;
}

/** Writes bytes at `gpa` (inside one page), or a 64-bit tag over the whole page (large workloads). */
export interface WriteAction {
  readonly kind: 'write';
  readonly gpa: number;
  readonly data: Uint8Array | bigint;
  readonly shared: boolean;
  readonly insn?: GuestInsn;
}

/** A hypercall (VMCALL/VMMCALL with `nr` in RAX and `args` in RBX, RCX, RDX, RSI). */
export interface HypercallAction {
  readonly kind: 'hypercall';
  readonly nr: number;
  readonly args: readonly number[];
}

/** HLT: exits to userspace with KVM_EXIT_HLT. */
export interface HaltAction {
  readonly kind: 'halt';
}

/** Guest work that touches no memory KVM sees, taking `ns` of virtual time (the `vm.guest_compute` cost unit). */
export interface ComputeAction {
  readonly kind: 'compute';
  readonly ns: number;
}

/**
 * WRMSR of an MSR KVM handles itself (kvm_set_msr_common): kvm-clock's MSR_KVM_SYSTEM_TIME_NEW
 * (and the legacy MSR_KVM_SYSTEM_TIME). Any other MSR is #GP.
 */
export interface WrmsrAction {
  readonly kind: 'wrmsr';
  readonly msr: number;
  readonly value: number;
}

/** What a guest program yields. Arch calls and NPF steps come from the arch's guest API and guest kernel. */
export type GuestAction = ReadAction | WriteAction | HypercallAction | HaltAction | ComputeAction | WrmsrAction | ArchGuestCall | GuestNpf;

/** What a read returns: the bytes, or the exception the guest received instead. */
export type GuestReadResult = Uint8Array | GuestException;
/** What a write returns: nothing, or the exception the guest received instead. */
export type GuestWriteResult = undefined | GuestException;

/** A step of a guest program: yields actions, receives their results. */
export type GuestSteps<R> = Generator<GuestAction, R, unknown>;

/** A guest program: what one vCPU runs. Its return powers the guest off (KVM_EXIT_SYSTEM_EVENT). */
export type GuestProgram<T extends string = string> = (g: GuestContext<T>) => Generator<GuestAction, void, unknown>;

type AnyFn = (...args: never[]) => unknown;

/**
 * The arch's guest API as guest-program steps: `yield* g.arch.pvalidate(gpa, '4K', true)` runs
 * `guestApi.pvalidate(...)` on the vCPU and returns its result.
 */
export type GuestArchSteps<Api> = {
  readonly [K in keyof Api as Api[K] extends AnyFn ? K : never]: Api[K] extends (...args: infer A) => infer R ? (...args: A) => GuestSteps<R> : never;
};

/** What a guest program is given. */
export interface GuestContext<T extends string = string> {
  /** The vCPU id. */
  readonly vcpu: number;
  /** The VM type. */
  readonly vmType: T;
  /** Whether the VM has private memory, and whether memory starts private. */
  readonly privateMem: boolean;
  readonly privateByDefault: boolean;
  /** A random stream for this vCPU, derived from the VM's seed. */
  readonly rng: Rng;
  /** The arch's guest operations (TDX accept/mapGpa, SNP pvalidate/psc, ...); empty for built-in types. */
  readonly arch: GuestArchSteps<ArchGuestApiOf<T>>;
  /** Reads `len` bytes (default 8) at `gpa`; they must not cross a page. */
  read(gpa: number, len?: number, options?: GuestAccessOptions): GuestSteps<GuestReadResult>;
  /** Writes `data` (bytes within a page, or a tag for the whole page at a page-aligned `gpa`). */
  write(gpa: number, data: Uint8Array | bigint, options?: GuestAccessOptions): GuestSteps<GuestWriteResult>;
  /** A hypercall; returns RAX as KVM (or userspace, for exiting hypercalls) set it. */
  hypercall(nr: number, ...args: number[]): GuestSteps<number>;
  /** HLT. */
  halt(): GuestSteps<undefined>;
  /** Guest-internal work of `ns` virtual nanoseconds. */
  compute(ns: number): GuestSteps<undefined>;
  /** WRMSR: nothing, or the #GP the guest received for an MSR KVM does not handle. */
  wrmsr(msr: number, value: number): GuestSteps<GuestWriteResult>;
  /**
   * Converts `[gpa, gpa + size)` to private or shared the way this VM type's guest OS does (SNP:
   * PVALIDATE + PSC, TDX: MapGPA + ACCEPT, sw-protected: KVM_HC_MAP_GPA_RANGE).
   */
  convert(gpa: number, size: number, toPrivate: boolean): GuestSteps<ArchGuestOutcome>;
  /** Accepts private memory before first use (TDX ACCEPT, SNP PSC + PVALIDATE; nothing on sw-protected). */
  accept(gpa: number, size: number): GuestSteps<ArchGuestOutcome>;
  /** Whether an exception from an access means the memory is not accepted yet. */
  isUnaccepted(e: GuestException): boolean;
}

/** Whether an access result is an exception the guest received. */
export function isGuestException(x: unknown): x is GuestException {
  return typeof x === 'object' && x !== null && !(x instanceof Uint8Array) && (x as { kind?: unknown }).kind === 'exception';
}

/** Runs one action and returns its result, typed. */
export function* step<R>(action: GuestAction): GuestSteps<R> {
  return (yield action) as R;
}

/** The guest kernel a built-in type uses, or an arch's, as the vCPU sees it. */
export interface GuestKernelDriver {
  convert(gpa: number, size: number, toPrivate: boolean): Generator<ArchGuestStep | HypercallAction, ArchGuestOutcome, unknown>;
  accept(gpa: number, size: number): Generator<ArchGuestStep | HypercallAction, ArchGuestOutcome, unknown>;
  isUnaccepted(e: GuestException): boolean;
}

/** What {@link createGuestContext} needs from the VM. */
export interface GuestContextInit<T extends string> {
  readonly vcpu: number;
  readonly vmType: T;
  readonly privateMem: boolean;
  readonly privateByDefault: boolean;
  readonly rng: Rng;
  readonly guestApi: object | undefined;
  readonly kernel: GuestKernelDriver;
}

/** Builds the context a program runs with. */
export function createGuestContext<T extends string>(init: GuestContextInit<T>): GuestContext<T> {
  const arch: Record<string, (...args: unknown[]) => GuestSteps<unknown>> = {};
  const api = init.guestApi;
  if (api !== undefined) {
    // Own and prototype members alike: a plugin may build its API as a class instance.
    const seen = new Set<string>();
    for (let o: object | null = api; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
      for (const k of Object.getOwnPropertyNames(o)) {
        if (k === 'constructor' || seen.has(k)) continue;
        seen.add(k);
        if (typeof (api as Record<string, unknown>)[k] !== 'function') continue;
        arch[k] = (...args: unknown[]) => step<unknown>({ kind: 'arch', op: k, args });
      }
    }
  }
  const shared = (o: GuestAccessOptions | undefined): boolean => o?.shared ?? !init.privateMem;
  const insn = (o: GuestAccessOptions | undefined): { insn?: GuestInsn } => (o?.insn === undefined ? {} : { insn: o.insn });
  const kernel = init.kernel;
  return {
    vcpu: init.vcpu,
    vmType: init.vmType,
    privateMem: init.privateMem,
    privateByDefault: init.privateByDefault,
    rng: init.rng,
    arch: arch as unknown as GuestArchSteps<ArchGuestApiOf<T>>,
    read: (gpa, len = 8, options) => step<GuestReadResult>({ kind: 'read', gpa, len, shared: shared(options), ...insn(options) }),
    write: (gpa, data, options) => step<GuestWriteResult>({ kind: 'write', gpa, data, shared: shared(options), ...insn(options) }),
    hypercall: (nr, ...args) => step<number>({ kind: 'hypercall', nr, args }),
    halt: () => step<undefined>({ kind: 'halt' }),
    compute: (ns) => step<undefined>({ kind: 'compute', ns }),
    wrmsr: (msr, value) => step<GuestWriteResult>({ kind: 'wrmsr', msr, value }),
    convert: (gpa, size, toPrivate) => kernel.convert(gpa, size, toPrivate),
    accept: (gpa, size) => kernel.accept(gpa, size),
    isUnaccepted: (e) => kernel.isUnaccepted(e),
  };
}

/** An access the vCPU makes, as its executor sees it. */
export interface ResolvedAccess {
  readonly gpa: number;
  readonly access: Access;
  readonly shared: boolean;
}
