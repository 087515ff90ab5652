/**
 * The minimal VMM: a userspace exit loop that does what QEMU's kvm_cpu_exec does for confidential
 * guests (accel/kvm/kvm-all.c: kvm_convert_memory on KVM_EXIT_MEMORY_FAULT and on
 * KVM_HC_MAP_GPA_RANGE hypercalls; MMIO to devices; HLT), plus the conversion requests an arch
 * reads out of its own exits (`ArchVm.memoryRequest`: pKVM's forwarded MEM_SHARE / MEM_UNSHARE /
 * MEM_RELINQUISH), with the conversion path and the
 * discard policy as options, so the seeds' experiments run end to end. Each vCPU runs as an actor
 * of the simulation kernel, one guest action per step, so vCPUs interleave in virtual time and the
 * conversions they trigger contend for mmu_lock and slots_lock.
 */
import { KvmError, isKvmError, uapi } from '@cocokit/sdk';
import type { ConversionPath, DiscardPolicy } from './conversion.js';
import type { HypercallExit, MemoryFaultExit, MmioExit, VcpuExit } from './exits.js';
import type { Vcpu } from './vcpu.js';
import type { Vm } from './vm.js';

/** What a custom exit handler answers. */
export type ExitDisposition = 'continue' | 'stop' | 'unhandled';

/** Options of {@link Vmm}. */
export interface VmmOptions {
  /** How conversions are made: VM attributes (6.18) or guest_memfd in place. Default `'attributes'`. */
  readonly path?: ConversionPath;
  /** What is discarded after an attributes conversion. Default `'both'` (QEMU's behaviour). */
  readonly discard?: DiscardPolicy;
  /** Steps per vCPU before the helper gives up on it (a livelock guard). Default 10 million. */
  readonly maxSteps?: number;
  /** Asked first for every exit; `'unhandled'` falls through to the built-in handling. */
  readonly onExit?: (vcpu: Vcpu, exit: VcpuExit) => ExitDisposition;
  /** An MMIO exit: fill `exit.data` for reads. Default: reads return zeros, writes are dropped. */
  readonly mmio?: (exit: MmioExit) => void;
}

/** Why a vCPU stopped. */
export interface VcpuOutcome {
  readonly vcpu: number;
  /** `'shutdown'`: the guest program returned; `'error'`: an exit the helper could not handle. */
  readonly state: 'shutdown' | 'error' | 'max-steps';
  readonly steps: number;
  /** Virtual time of the vCPU's actor when it stopped, ns. */
  readonly nowNs: number;
  /** The exit or error that stopped it, for `'error'`. */
  readonly error?: string;
}

/** What {@link Vmm.run} returns. */
export interface VmmRunResult {
  readonly vcpus: readonly VcpuOutcome[];
  /** The latest vCPU clock: the guest's virtual run time, ns. */
  readonly nowNs: number;
  /** Exits handled, by reason. */
  readonly exits: Readonly<Record<string, number>>;
  /** Conversions the helper made, and pages they covered. */
  readonly conversions: number;
  readonly convertedPages: number;
  /**
   * Conversion requests for a range already in the target state: the ioctl returned 0 with nothing
   * to do (no arch hook, no zap). Not counted in `conversions`.
   */
  readonly noopConversions: number;
  /**
   * Discard requests from the arch (`ArchVm.memoryRequest`: pKVM MEM_RELINQUISH) the helper
   * carried out, and the pages they freed (0 for a page never allocated).
   */
  readonly discards: number;
  readonly discardedPages: number;
  readonly ok: boolean;
}

/** The exit loop helper for one VM. */
export class Vmm {
  readonly vm: Vm;
  readonly path: ConversionPath;
  readonly discard: DiscardPolicy;
  private readonly options: VmmOptions;
  private readonly handled = new Map<string, number>();
  private conversions = 0;
  private convertedPages = 0;
  private noopConversions = 0;
  private discards = 0;
  private discardedPages = 0;

  constructor(vm: Vm, options: VmmOptions = {}) {
    this.vm = vm;
    this.options = options;
    this.path = options.path ?? 'attributes';
    this.discard = this.path === 'in-place' ? 'none' : (options.discard ?? 'both');
    if (this.path === 'in-place' && options.discard !== undefined && options.discard !== 'none') {
      throw new KvmError('EINVAL', 'Vmm', 'in-place conversion keeps one copy of each page: there is nothing to discard');
    }
    // KVM_CAP_EXIT_HYPERCALL for KVM_HC_MAP_GPA_RANGE, as QEMU enables it for SNP and TDX guests.
    if (vm.capabilities.privateMem) vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [1 << uapi.KVM_HC_MAP_GPA_RANGE] });
  }

  /**
   * Handles one exit; returns whether the vCPU goes on. A refused conversion (e.g. EAGAIN while the
   * host holds a reference) stops the vCPU on a MEMORY_FAULT, as QEMU aborts the run; on a
   * KVM_HC_MAP_GPA_RANGE hypercall, or a request the arch reads out of its exit
   * (`vm.archMemoryRequest`), it is reported to the guest in `ret` and the vCPU goes on.
   */
  handle(vcpu: Vcpu, exit: VcpuExit): { readonly go: boolean; readonly error?: string } {
    this.handled.set(exit.reason, (this.handled.get(exit.reason) ?? 0) + 1);
    const custom = this.options.onExit?.(vcpu, exit);
    if (custom === 'continue') return { go: true };
    if (custom === 'stop') return { go: false };
    switch (exit.reason) {
      case 'MEMORY_FAULT': {
        const e = exit as MemoryFaultExit;
        if (e.errno !== 'EFAULT') return { go: false, error: `KVM_RUN failed with ${e.errno} at gpa 0x${e.memoryFault.gpa.toString(16)}` };
        const toPrivate = (e.memoryFault.flags & uapi.KVM_MEMORY_EXIT_FLAG_PRIVATE) !== 0;
        return this.convert(vcpu, e.memoryFault.gpa, e.memoryFault.size, toPrivate);
      }
      case 'HYPERCALL': {
        const e = exit as HypercallExit;
        if (e.nr !== uapi.KVM_HC_MAP_GPA_RANGE) return this.archRequest(vcpu, exit) ?? { go: false, error: `hypercall ${e.nr} is not handled` };
        const [gpa = 0, npages = 0, attrs = 0] = e.args;
        const r = this.convert(vcpu, gpa, npages * 4096, (attrs & uapi.KVM_MAP_GPA_RANGE_ENCRYPTED) !== 0);
        // QEMU hands the guest kvm_convert_memory's result (0, or -1 on failure); the model writes 1
        // for a failure: KVM and the arch code only test ret != 0.
        e.ret = r.error === undefined ? 0 : 1;
        return { go: true };
      }
      case 'MMIO': {
        const e = exit as MmioExit;
        if (this.options.mmio !== undefined) this.options.mmio(e);
        else if (!e.isWrite) e.data.fill(0);
        return { go: true };
      }
      case 'HLT':
        // No interrupt controller in the model: the next "interrupt" arrives at once.
        return { go: true };
      case 'SYSTEM_EVENT':
        return { go: false };
      case 'RUN_ERROR':
        return { go: false, error: `KVM_RUN failed: ${(exit as { errno: string }).errno}: ${(exit as { message: string }).message}` };
      default:
        return this.archRequest(vcpu, exit) ?? { go: false, error: `exit ${JSON.stringify(exit.reason)} is not handled (give VmmOptions.onExit)` };
    }
  }

  /**
   * An exit the arch reads as a memory request (`vm.archMemoryRequest`), or `undefined`. A
   * conversion goes through the same path and discard policy as KVM_HC_MAP_GPA_RANGE; a discard
   * frees what backs the range (guest_memfd hole punch, shared copy dropped), what a VMM does when
   * the guest gives a page back (pKVM MEM_RELINQUISH, after EL2 returned the page to the host:
   * guest_memfd must not keep the page or map it to the guest again). The answer goes where
   * KVM_EXIT_HYPERCALL takes it, `ret` (0 done, 1 refused; the arch's completeExit turns it into
   * the guest's return value), and the vCPU goes on either way.
   */
  private archRequest(vcpu: Vcpu, exit: VcpuExit): { readonly go: boolean; readonly error?: string } | undefined {
    const req = this.vm.archMemoryRequest(exit);
    if (req === undefined) return undefined;
    let error: string | undefined;
    if (req.op === 'convert') {
      error = this.convert(vcpu, req.gpa, req.size, req.toPrivate).error;
    } else {
      const sim = this.vm.sim;
      if (sim.trace.enabled) sim.trace.emit('vmm.handle', { vcpu: vcpu.id, reason: 'discard', gpa: req.gpa, npages: req.size / 4096 });
      try {
        this.discardedPages += this.vm.discardRange(req.gpa, req.size);
        this.discards++;
      } catch (e) {
        if (!isKvmError(e)) throw e;
        error = `discarding [0x${req.gpa.toString(16)}, +0x${req.size.toString(16)}) failed: ${e.errno} ${e.reason}`;
      }
    }
    const answer = exit as { ret?: unknown };
    if (typeof answer.ret === 'number') answer.ret = error === undefined ? 0 : 1;
    return { go: true };
  }

  private convert(vcpu: Vcpu, gpa: number, size: number, toPrivate: boolean): { readonly go: boolean; readonly error?: string } {
    const sim = this.vm.sim;
    if (sim.trace.enabled) sim.trace.emit('vmm.handle', { vcpu: vcpu.id, reason: 'convert', gpa, npages: size / 4096, private: toPrivate });
    let outcome;
    try {
      outcome = this.vm.convert({ gpa, size, toPrivate, path: this.path, discard: this.discard });
    } catch (e) {
      if (isKvmError(e)) return { go: false, error: `converting [0x${gpa.toString(16)}, +0x${size.toString(16)}) failed: ${e.errno} ${e.reason}` };
      throw e;
    }
    if (outcome === 'noop') {
      this.noopConversions++;
    } else {
      this.conversions++;
      this.convertedPages += size / 4096;
    }
    return { go: true };
  }

  /**
   * Runs `vcpus` (default: every vCPU of the VM) to the end, each as an actor of the VM's
   * simulation, handling exits as they come; returns when every vCPU has stopped.
   */
  run(vcpus: readonly Vcpu[] = this.vm.vcpuList()): VmmRunResult {
    const maxSteps = this.options.maxSteps ?? 10_000_000;
    const outcomes: VcpuOutcome[] = [];
    const sim = this.vm.sim;
    for (const v of vcpus) {
      sim.spawn(`vm${this.vm.id}/vcpu${v.id}`, () =>
        function* (this: Vmm) {
          let steps = 0;
          for (;;) {
            if (steps >= maxSteps) {
              outcomes.push({ vcpu: v.id, state: 'max-steps', steps, nowNs: sim.now, error: `${maxSteps} steps without the guest finishing` });
              return;
            }
            steps++;
            const exit = v.step();
            if (exit !== undefined) {
              const r = this.handle(v, exit);
              if (!r.go) {
                const shutdown = exit.reason === 'SYSTEM_EVENT' && r.error === undefined;
                outcomes.push({ vcpu: v.id, state: shutdown ? 'shutdown' : 'error', steps, nowNs: sim.now, ...(shutdown ? {} : { error: r.error ?? `stopped on ${exit.reason}` }) });
                return;
              }
            }
            yield;
          }
        }.call(this),
      );
    }
    sim.runUntilIdle();
    outcomes.sort((a, b) => a.vcpu - b.vcpu);
    return {
      vcpus: outcomes,
      nowNs: outcomes.reduce((m, o) => Math.max(m, o.nowNs), 0),
      exits: Object.fromEntries(this.handled),
      conversions: this.conversions,
      convertedPages: this.convertedPages,
      noopConversions: this.noopConversions,
      discards: this.discards,
      discardedPages: this.discardedPages,
      ok: outcomes.every((o) => o.state === 'shutdown'),
    };
  }

  /** Issues the discards the lazy policy still holds; returns the pages discarded. */
  flushDiscards(): number {
    return this.vm.conversions.flushDiscards();
  }
}

/** Creates a {@link Vmm} for `vm` and runs every vCPU to the end. */
export function runVmm(vm: Vm, options: VmmOptions = {}): VmmRunResult {
  return new Vmm(vm, options).run();
}
