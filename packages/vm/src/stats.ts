/** The shape of `vm.stats()`: a plain snapshot, safe to serialize. */
import type { ConversionStats } from './conversion.js';
import type { VcpuStatsSink } from './vcpu.js';

export interface VmStats {
  readonly type: string;
  /** The current actor's virtual clock, ns. */
  readonly nowNs: number;
  readonly vcpus: number;
  /** Exits returned to userspace, by reason. */
  readonly exits: Readonly<Record<string, number>>;
  /** What the vCPUs did: steps, guest accesses, exceptions delivered, NPFs handled, retries, arch calls, hypercalls. */
  readonly vcpu: Readonly<VcpuStatsSink>;
  readonly conversions: Readonly<ConversionStats> & { readonly pendingDiscardPages: number };
  readonly mmu: {
    readonly faults: Readonly<Record<string, number>>;
    readonly retries: Readonly<Record<string, number>>;
    readonly zaps: number;
    readonly tlbFlushes: number;
    readonly pageTablePages: number;
    readonly mappedLeaves: number;
  };
  readonly memory: {
    /** Pages allocated in the VM's guest_memfd files. */
    readonly guestMemfdPages: number;
    /** Pages resident in the VMM process (anonymous shared memory and guest_memfd mmaps). */
    readonly sharedAnonPages: number;
    /** Host frames in use, all purposes, and by purpose. */
    readonly hostUsedFrames: number;
    readonly usedByPurpose: Readonly<Record<string, number>>;
    /**
     * The most host frames in use at once since the host was created (the allocator's high-water
     * mark, all purposes): with one VM per host, what the run needed at its worst, e.g. while a
     * conversion left both the shared and the private copy of a page allocated.
     */
    readonly peakHostUsedFrames: number;
  };
}
