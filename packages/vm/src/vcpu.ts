/**
 * A vCPU: runs its guest program one action per step and returns exits to userspace as values
 * (KVM_RUN; arch/x86/kvm/x86.c vcpu_run). Faults KVM resolves itself (a missing mapping, an
 * invalidation race, an SNP RMP size mismatch) never reach userspace; what needs userspace does,
 * and the next `run()` completes it the way KVM's complete_userspace_io callbacks do.
 */
import { KvmError, ModelInvariantError, isKvmError, uapi, type ArchExit, type ArchVm, type Errno, type GuestException, type GuestNpf, type Sim } from '@cocokit/sdk';
import { SPTE, type FaultOutcome, type Mmu } from '@cocokit/mmu';
import type { Host } from '@cocokit/host';
import type { HypercallExit, MmioExit, VcpuExit } from './exits.js';
import type { GuestAction, GuestContext, GuestInsn, GuestProgram, HypercallAction, ReadAction, WriteAction, WrmsrAction } from './guest-program.js';
import { PVCLOCK_VCPU_TIME_INFO_SIZE, kvmSetupGuestPvclock, type GfnToPfnCache, type KernelAccess } from './kernel-access.js';

const PAGE = 4096;
/** The #GP vector. */
const X86_TRAP_GP = 13;
/** Fault retries (RET_PF_RETRY re-entries) one access may take in one step before yielding. */
const MAX_RETRIES = 64;

/** Thrown by the VM's `ctx.exit` inside a guest operation; caught by the vCPU. */
export class ArchExitSignal {
  readonly exit: ArchExit;
  constructor(exit: ArchExit) {
    this.exit = exit;
  }
}

/** What a vCPU needs from its VM (internal). */
export interface VcpuHost {
  readonly sim: Sim;
  readonly host: Host;
  readonly mmu: Mmu;
  readonly arch: ArchVm | undefined;
  readonly sharedGpaBit: number | undefined;
  /** Whether the VM was destroyed (its vCPUs can no longer run). */
  destroyed(): boolean;
  /** Why the VM is dead (KVM_BUG_ON), if it is. */
  deadReason(): string | undefined;
  /** Whether userspace enabled the KVM_HC_MAP_GPA_RANGE exit (KVM_CAP_EXIT_HYPERCALL). */
  hypercallExitEnabled(nr: number): boolean;
  /** Runs `f` as a guest operation of `vcpu` (sets `ctx.vcpu`). */
  inGuestOp<T>(vcpu: number, f: () => T): T;
  countExit(exit: VcpuExit): void;
  /** Extension exits a vCPU completes by re-running the access. */
  readonly stats: VcpuStatsSink;
  /** KVM's own accesses to guest memory: the emulator's fetch, kvm-clock's cache. */
  readonly kernelAccess: KernelAccess;
}

/** Counters the VM keeps for its vCPUs. */
export interface VcpuStatsSink {
  steps: number;
  accesses: number;
  exceptions: number;
  npfs: number;
  faultRetries: number;
  archCalls: number;
  hypercalls: number;
}

/** A step's end: a value for the program, an exit, or `again` (the action stays current: re-executed next step). */
type StepResult = { readonly value: unknown } | { readonly exit: VcpuExit } | { readonly again: true };

/** A vCPU of a VM. Create it with `vm.createVcpu(id)`. */
export class Vcpu {
  readonly id: number;
  private readonly vm: VcpuHost;
  private program: Generator<GuestAction, void, unknown> | undefined;
  /** The action being executed (kept across an exit until it completes). */
  private current: GuestAction | undefined;
  /** The exit returned to userspace that the next run completes. */
  private pendingExit: VcpuExit | undefined;
  /** The value the program receives next. */
  private next: unknown;
  private finished = false;
  /** Exits returned, by reason. */
  readonly exits = new Map<string, number>();
  /** kvm-clock's cache (vcpu->arch.pv_time), made on the guest's first kvm-clock WRMSR. */
  private pvTime: GfnToPfnCache | undefined;
  /** pvclock_vcpu_time_info.version / 2: the updates written so far. */
  private pvclockUpdates = 0;
  /** Whether the vCPU is inside KVM_RUN (between the entry and the next exit to userspace). */
  private loaded = false;

  /** @internal Use `vm.createVcpu`. */
  constructor(id: number, vm: VcpuHost) {
    this.id = id;
    this.vm = vm;
  }

  /**
   * Loads the guest program this vCPU runs (the model's KVM_SET_REGS + guest image). Replacing a
   * program mid-flight is EBUSY: an exit is still waiting for its completion.
   */
  setProgram<T extends string>(program: GuestProgram<T>, context: GuestContext<T>): void {
    if (this.pendingExit !== undefined || this.current !== undefined) {
      throw new KvmError('EBUSY', 'setProgram', `vCPU ${this.id} is in the middle of an action; run it to the end first`);
    }
    this.program = program(context);
    this.next = undefined;
    this.finished = false;
  }

  /** Whether the program has returned (the guest powered off). */
  get done(): boolean {
    return this.finished;
  }

  /** The exit waiting for userspace, if any (kvm_run as userspace sees it after KVM_RUN returned). */
  get exit(): VcpuExit | undefined {
    return this.pendingExit;
  }

  /**
   * KVM_RUN: runs the guest until something needs userspace and returns that exit. A MEMORY_FAULT
   * exit stands for the ioctl failing with its `errno` (EFAULT, EHWPOISON) with kvm_run filled.
   */
  run(): VcpuExit {
    for (;;) {
      const e = this.step();
      if (e !== undefined) return e;
    }
  }

  /**
   * Runs one guest action (or completes the pending exit and runs the next action); returns the
   * exit if the step ended in one. The VMM helper's actors call this between scheduler yields so
   * several vCPUs interleave in virtual time.
   */
  step(): VcpuExit | undefined {
    const vm = this.vm;
    if (vm.destroyed()) throw new KvmError('EBADF', 'KVM_RUN', `vCPU ${this.id}'s VM was destroyed`);
    const dead = vm.deadReason();
    if (dead !== undefined) return this.finish({ reason: 'RUN_ERROR', errno: 'EIO', message: `the VM is dead: ${dead}` });
    if (this.program === undefined) throw new KvmError('ENOEXEC', 'KVM_RUN', `vCPU ${this.id} has no guest program (setProgram / vm.createVcpu(id, program))`);
    vm.stats.steps++;
    if (this.pendingExit !== undefined) {
      const exit = this.pendingExit;
      this.pendingExit = undefined;
      const r = this.complete(exit);
      if (r !== undefined) {
        if ('exit' in r) return this.finish(r.exit);
        this.current = undefined;
        this.next = r.value;
      }
      // undefined: re-execute the current action below.
    }
    if (!this.loaded) {
      this.loaded = true;
      this.vcpuLoad();
    }
    let action = this.current;
    if (action === undefined) {
      // A program that returned powers the guest off, on this run and every later one.
      if (!this.finished) {
        const it = this.program.next(this.next);
        this.next = undefined;
        if (it.done === true) this.finished = true;
        else action = this.current = it.value;
      }
      if (action === undefined) return this.finish({ reason: 'SYSTEM_EVENT', exitReason: uapi.KVM_EXIT_SYSTEM_EVENT, type: uapi.KVM_SYSTEM_EVENT_SHUTDOWN });
    }
    const r = this.execute(action);
    if ('exit' in r) return this.finish(r.exit);
    if ('again' in r) return undefined;
    this.current = undefined;
    this.next = r.value;
    return undefined;
  }

  private finish(exit: VcpuExit): VcpuExit {
    // RUN_ERROR and SYSTEM_EVENT need no completion: the action stays current (re-executed on the
    // next run, as a failed KVM_RUN re-enters at the same instruction) or the program is over.
    if (exit.reason !== 'RUN_ERROR' && exit.reason !== 'SYSTEM_EVENT') this.pendingExit = exit;
    this.loaded = false;
    this.exits.set(exit.reason, (this.exits.get(exit.reason) ?? 0) + 1);
    this.vm.countExit(exit);
    this.vm.sim.charge('vm.exit_to_userspace');
    return exit;
  }

  /** complete_userspace_io for the exit userspace just handled; undefined = re-execute the action. */
  private complete(exit: VcpuExit): { readonly value: unknown } | { readonly exit: VcpuExit } | undefined {
    const a = this.current;
    if (a === undefined) return { value: undefined };
    switch (exit.reason) {
      case 'HYPERCALL':
        if (a.kind === 'hypercall') return { value: (exit as HypercallExit).ret };
        break;
      case 'MMIO':
        if (a.kind === 'read') return { value: (exit as MmioExit).data.slice(0, a.len) };
        if (a.kind === 'write') return { value: undefined };
        break;
      case 'HLT':
        return { value: undefined };
      case 'MEMORY_FAULT':
        // The guest re-executes the access (or the step that faulted) after userspace converted.
        return undefined;
      default:
        break;
    }
    if (a.kind === 'arch') {
      const arch = this.vm.arch;
      if (arch?.completeExit === undefined) return undefined;
      const done = this.guestOp(() => arch.completeExit!(exit as ArchExit, this.id));
      if ('exit' in done) return done;
      return done.value === undefined ? undefined : { value: done.value.value };
    }
    return undefined;
  }

  /** Runs `f` as a guest operation: an arch exit becomes this step's exit. */
  private guestOp<T>(f: () => T): { value: T } | { exit: VcpuExit } {
    try {
      return { value: this.vm.inGuestOp(this.id, f) };
    } catch (e) {
      if (e instanceof ArchExitSignal) return { exit: e.exit };
      if (isKvmError(e)) return { exit: { reason: 'RUN_ERROR', errno: e.errno, message: e.message } };
      throw e;
    }
  }

  private execute(a: GuestAction): StepResult {
    switch (a.kind) {
      case 'read':
      case 'write':
        return this.access(a);
      case 'hypercall':
        return this.hypercall(a);
      case 'halt':
        return { exit: { reason: 'HLT', exitReason: uapi.KVM_EXIT_HLT } };
      case 'compute':
        if (!Number.isFinite(a.ns) || a.ns < 0) throw new KvmError('EINVAL', 'guest compute', `${a.ns} ns is not a duration`);
        this.vm.sim.advance(a.ns);
        return { value: undefined };
      case 'wrmsr':
        return this.wrmsr(a);
      case 'arch':
        return this.archCall(a.op, a.args);
      case 'npf':
        return this.npf(a);
      default:
        throw new ModelInvariantError('vm.guest_action', `unknown guest action ${JSON.stringify((a as { kind?: unknown }).kind)}`);
    }
  }

  /**
   * KVM_RUN's entry (kvm_arch_vcpu_load, then the requests vcpu_enter_guest serves): a vCPU thread
   * that may land on another physical CPU gets KVM_REQ_CLOCK_UPDATE, and kvm_guest_time_update
   * writes kvm-clock through its cache. The model treats every KVM_RUN as such a move — the most
   * clock updates an unpinned vCPU thread causes.
   */
  private vcpuLoad(): void {
    if (this.pvTime?.active === true) this.clockUpdate();
  }

  private clockUpdate(): void {
    const gpc = this.pvTime;
    if (gpc === undefined) return;
    if (kvmSetupGuestPvclock(gpc, this.vm.sim.now, this.pvclockUpdates, this.vm.kernelAccess)) this.pvclockUpdates++;
  }

  /**
   * WRMSR, handled in KVM (kvm_set_msr_common). kvm-clock (kvm_write_system_time): bit 0 of the
   * value enables it and the rest is the gpa of the vCPU's pvclock_vcpu_time_info, which KVM
   * caches with kvm_gpc_activate — a failure there is ignored, as KVM ignores it (the updates then
   * find no valid cache); bit 0 clear deactivates the cache. Any other MSR is #GP.
   */
  private wrmsr(a: WrmsrAction): StepResult {
    this.vm.sim.charge('vm.wrmsr');
    if (!Number.isSafeInteger(a.value) || a.value < 0) throw new KvmError('EINVAL', 'guest wrmsr', `${a.value} is not a 64-bit MSR value the model takes`);
    if (a.msr !== uapi.MSR_KVM_SYSTEM_TIME_NEW && a.msr !== uapi.MSR_KVM_SYSTEM_TIME) {
      this.vm.stats.exceptions++;
      return { value: { kind: 'exception', vector: X86_TRAP_GP, name: '#GP', errorCode: 0 } satisfies GuestException };
    }
    const gpc = (this.pvTime ??= this.vm.kernelAccess.gpcInit());
    if (a.value % 2 === 0) {
      gpc.deactivate();
      return { value: undefined };
    }
    try {
      gpc.activate(a.value - 1, PVCLOCK_VCPU_TIME_INFO_SIZE);
    } catch (e) {
      if (!isKvmError(e)) throw e;
    }
    // KVM_REQ_GLOBAL_CLOCK_UPDATE, served before the guest resumes.
    this.clockUpdate();
    return { value: undefined };
  }

  /**
   * x86_emulate_instruction for an access that hit MMIO (VMX: EPT misconfiguration): KVM fetches
   * the instruction from guest memory before it can decode it and exit with KVM_EXIT_MMIO. A
   * fetch that fails is an emulation failure.
   */
  private emulate(insn: GuestInsn): { readonly exit: VcpuExit } | undefined {
    const walk = insn.walk ?? [];
    if (!Number.isSafeInteger(insn.gpa) || insn.gpa < 0 || walk.some((g) => !Number.isSafeInteger(g) || g < 0 || g % 8 !== 0)) {
      throw new KvmError('EINVAL', 'guest insn', `instruction at ${insn.gpa} with walk [${walk.join(', ')}]: addresses must be guest-physical, entries 8-byte aligned`);
    }
    try {
      this.vm.kernelAccess.emulatorFetch(insn.gpa, walk);
    } catch (e) {
      if (isKvmError(e)) return { exit: { reason: 'RUN_ERROR', errno: e.errno, message: `emulation failure: ${e.message}` } };
      throw e;
    }
    this.vm.sim.charge('vm.emulate_instruction');
    return undefined;
  }

  private archCall(op: string, args: readonly unknown[]): StepResult {
    const api = this.vm.arch?.guestApi as Record<string, unknown> | undefined;
    const fn = api?.[op];
    if (typeof fn !== 'function') throw new KvmError('ENOSYS', 'guest arch call', `this VM type has no guest operation ${JSON.stringify(op)}`);
    this.vm.stats.archCalls++;
    const r = this.guestOp(() => (fn as (...a: unknown[]) => unknown).apply(api, args as unknown[]));
    return r;
  }

  /**
   * KVM's hypercall handler (kvm_emulate_hypercall): KVM_HC_MAP_GPA_RANGE exits to userspace when
   * enabled with KVM_CAP_EXIT_HYPERCALL, after KVM's own checks; anything else is -KVM_ENOSYS.
   */
  private hypercall(a: HypercallAction): StepResult {
    this.vm.stats.hypercalls++;
    this.vm.sim.charge('vm.hypercall');
    if (a.nr !== uapi.KVM_HC_MAP_GPA_RANGE || !this.vm.hypercallExitEnabled(a.nr)) return { value: -uapi.KVM_ENOSYS };
    const [gpa = 0, npages = 0, attrs = 0] = a.args;
    if (gpa % PAGE !== 0 || npages <= 0 || !Number.isSafeInteger(gpa / PAGE + npages)) return { value: -uapi.KVM_EINVAL };
    const exit: HypercallExit = { reason: 'HYPERCALL', exitReason: uapi.KVM_EXIT_HYPERCALL, nr: a.nr, args: [gpa, npages, attrs, 0, 0, 0], ret: 0, flags: 1 };
    return { exit };
  }

  /** A nested page fault the guest kernel's arch code ran into: zap if asked, then KVM's fault path. */
  private npf(a: GuestNpf): StepResult {
    const mmu = this.vm.mmu;
    this.vm.stats.npfs++;
    if (a.zap !== undefined) mmu.zapGfnRange(a.zap.start, a.zap.end, 'both', 'npf');
    for (let i = 0; i < MAX_RETRIES; i++) {
      const out = mmu.fault(a.fault.encrypted === undefined ? { gpa: a.fault.gpa, access: a.fault.access } : a.fault);
      const r = this.outcome(out, a.fault.access === 'write', 8, undefined);
      if (r === 'retry') continue;
      if (r === 'mapped') return { value: undefined };
      return r;
    }
    return { again: true };
  }

  /** Turns a fault outcome into "mapped", "retry", or the step's end. */
  private outcome(out: FaultOutcome, isWrite: boolean, len: number, data: Uint8Array | undefined): 'mapped' | 'retry' | { readonly exit: VcpuExit } {
    switch (out.kind) {
      case 'mapped':
        return 'mapped';
      case 'retry':
        this.vm.stats.faultRetries++;
        return 'retry';
      case 'exit': {
        const e = out.exit;
        if (e.reason === 'MMIO') {
          const m = e as { phys: number };
          const exit: MmioExit = { reason: 'MMIO', exitReason: uapi.KVM_EXIT_MMIO, phys: m.phys, len, isWrite, data: data ?? new Uint8Array(len) };
          return { exit };
        }
        return { exit: e as VcpuExit };
      }
      case 'error':
        return { exit: { reason: 'RUN_ERROR', errno: out.errno as Errno, message: out.reason } };
    }
  }

  private access(a: ReadAction | WriteAction): StepResult {
    const vm = this.vm;
    vm.stats.accesses++;
    const isWrite = a.kind === 'write';
    const tag = isWrite && typeof a.data === 'bigint' ? a.data : undefined;
    const len = a.kind === 'read' ? a.len : tag !== undefined ? PAGE : (a.data as Uint8Array).length;
    const off = a.gpa % PAGE;
    if (!Number.isSafeInteger(a.gpa) || a.gpa < 0 || len <= 0 || off + len > PAGE || (tag !== undefined && off !== 0)) {
      throw new KvmError('EINVAL', `guest ${a.kind}`, `[0x${a.gpa.toString(16)}, +${len}) must be inside one page (a tag write needs a page-aligned gpa)`);
    }
    const bit = vm.sharedGpaBit;
    const gpa = a.shared && bit !== undefined ? a.gpa + 2 ** bit : a.gpa;
    const access = isWrite ? 'write' : 'read';
    const req = { gpa, access, encrypted: !a.shared } as const;
    const mmu = vm.mmu;
    const arch = vm.arch;
    for (let i = 0; i < MAX_RETRIES; i++) {
      const { gfn, private: priv } = mmu.classify(req);
      const mirror = priv && mmu.mirror !== undefined;
      const leaf = mmu.lookup(gfn, mirror ? 'private' : 'shared');
      const leafPrivate = leaf !== undefined && (mirror || (leaf.flags & SPTE.PRIVATE) !== 0);
      if (leaf === undefined || leafPrivate !== priv || (isWrite && (leaf.flags & SPTE.WRITABLE) === 0)) {
        const r = this.outcome(mmu.fault(req), isWrite, len, isWrite && tag === undefined ? (a.data as Uint8Array).slice() : undefined);
        if (r === 'mapped' || r === 'retry') continue;
        if (r.exit.reason === 'MMIO' && a.insn !== undefined) return this.emulate(a.insn) ?? r;
        return r;
      }
      // lookup() answers the pfn of `gfn` itself (its `gfn` field is the leaf's first): no offset to add.
      const pfn = leaf.pfn;
      if (arch?.guestAccess !== undefined) {
        let c;
        try {
          c = vm.inGuestOp(this.id, () => arch.guestAccess!({ gpa, gfn: gfn as never, access, private: priv, pfn: pfn as never, level: leaf.level, vcpu: this.id }));
        } catch (e) {
          // The arch made KVM_RUN fail (TDX: a pending-page access with SEPT_VE_DISABLE kills the TD).
          if (isKvmError(e)) return { exit: { reason: 'RUN_ERROR', errno: e.errno, message: e.message } };
          throw e;
        }
        if (c !== 'ok') {
          // An NPF the arch cannot resolve marks the VM dead (SNP: an RMP fault KVM would take forever).
          const dead = vm.deadReason();
          if (dead !== undefined) return { exit: { reason: 'RUN_ERROR', errno: 'EIO', message: `the VM is dead: ${dead}` } };
          if (c.kind === 'exception') {
            vm.stats.exceptions++;
            return { value: c satisfies GuestException };
          }
          const r = this.npf(c);
          if (!('value' in r)) return r;
          continue;
        }
      }
      vm.sim.charge('vm.guest_access');
      if (!isWrite) return { value: vm.host.readBytes(pfn, off, len) };
      if (tag !== undefined) vm.host.writeTag(pfn, tag);
      else vm.host.writeBytes(pfn, off, a.data as Uint8Array);
      return { value: undefined };
    }
    // Still racing after many re-entries: end the step; the access runs again on the next one.
    return { again: true };
  }
}
